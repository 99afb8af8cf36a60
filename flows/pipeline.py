"""The main job: every DVC stage in order, under one Prefect parent flow and one MLflow parent run.

    python -m flows.pipeline                 # what `make run` does
    python -m flows.pipeline --force         # rerun every stage
    python -m flows.pipeline --serve         # serve a deployment for scheduled/triggered reruns

Without a Prefect server (e.g. `make ui`) a temporary one is started for the length of the run so
every stage process reports to it; its database is the project's `.prefect/`, so the runs stay
visible in `make ui` afterwards.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from datetime import datetime
from pathlib import Path

from rare import runtime

runtime.configure()

from rare import failures, servers  # noqa: E402


def _ensure_prefect_server() -> servers.Server | None:
    """On `make ui`'s port when it is free: the server shares that one's database, so the "View at"
    links the run prints keep working in `make ui` after the run. A server that a killed run left
    behind is reused (and stopped at the end of this run), never left to pile up."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    ui = servers.prefect_service()
    state = ui.pidfile.parent
    svc = servers.adopt_leftover("prefect", state, PIPELINE_SERVER)
    if svc is None:
        port = ui.port if servers.port_free(ui.port) else servers.free_port()
        svc = servers.Server("prefect", port, state / f"{PIPELINE_SERVER}-{port}.pid", state / f"{PIPELINE_SERVER}.log")
        servers.start(svc)
        servers.claim(svc)
    os.environ["PREFECT_API_URL"] = f"{svc.url}/api"
    return svc


PIPELINE_SERVER = "pipeline-server"  # .prefect/pipeline-server-<port>.pid (+ .owner): the run's own server
REPORT_DIR = Path("report")  # the report stage's output (dvc.yaml)
FLOW_RUN_TAG = "rare.prefect_flow_run"  # on the MLflow parent: the Prefect flow run it belongs to
ENTRYPOINT = "flows.pipeline.pipeline"  # the deployment's flow, resolved by __getattr__ below


def mark_cancelled(flow: object, flow_run: object, state: object) -> None:
    """Prefect's cancellation hook. Cancelling a deployment run kills the flow's process from outside, so
    the flow's own ``finally`` never ends its MLflow runs: the parent and any child still RUNNING end
    KILLED here, found by the flow run's id."""
    import mlflow

    from rare import mlflow_runs
    from rare.config import load_section

    params = load_section("tracking")
    if not params.enabled:
        return
    exp_id = mlflow_runs.setup(params)
    client = mlflow.MlflowClient()
    for parent in client.search_runs([exp_id], f"tags.`{FLOW_RUN_TAG}` = '{flow_run.id}'"):
        children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        for run in (parent, *children):
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, "KILLED")


def build_flow():  # noqa: ANN201 - returns a prefect Flow
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE

    from rare import mlflow_runs, stageflow
    from rare import repro as dvc_pipeline
    from rare.config import load_section

    stage_output = dvc_pipeline.PipelineEcho(print)  # one per flow run (reset at its start)

    # No retries here: the stage's own flow run retries its work (rare.stageflow, the one place).
    # Each stage's flow run is a subflow of this task run (rare.stageflow reads the id from its environment).
    @task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
    def run_stage(stage: str, force: bool) -> float:
        from prefect.runtime import task_run

        stage_output.echo = get_run_logger().info
        env = {stageflow.PARENT_TASK_RUN_ENV: str(task_run.id)}
        return dvc_pipeline.run_stage(stage, force=force, echo=stage_output, env=env)

    def run_name() -> str:
        return f"pipeline-{datetime.now():%Y%m%d-%H%M%S}"

    @flow(name="rare-pipeline", flow_run_name=run_name, log_prints=True, on_cancellation=[mark_cancelled])
    def pipeline(force: bool = False, stages: list[str] | None = None) -> dict[str, float]:
        """Reproduce the DVC pipeline stage by stage; each stage runs its own Prefect flow. The report's
        tables and findings become a markdown artifact of this flow run."""
        import mlflow
        from prefect.artifacts import create_markdown_artifact
        from prefect.runtime import flow_run

        from rare.report.compose import markdown_summary

        stageflow.quiet_expected_failures()
        stage_output.to_add.clear()
        params = load_section("tracking")
        order = dvc_pipeline.stage_order()
        selected = [s for s in order if not stages or s in stages]
        seconds: dict[str, float] = {}
        run_id = None
        if params.enabled:
            exp_id = mlflow_runs.setup(params)
            parent = mlflow.MlflowClient().create_run(  # named as the flow run, so the two UIs agree
                exp_id, run_name=flow_run.name or run_name(),
                tags={"rare.role": "pipeline", FLOW_RUN_TAG: str(flow_run.id), **mlflow_runs.run_tags()})
            run_id = parent.info.run_id
            os.environ[mlflow_runs.PARENT_ENV] = run_id
        status = "FAILED"
        try:
            for stage in selected:
                seconds[stage] = run_stage(stage, force)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if run_id:
                client = mlflow.MlflowClient()
                for stage, s in seconds.items():
                    client.log_metric(run_id, f"stage_seconds.{stage.replace('@', '.')}", s)
                client.set_terminated(run_id, status)
                os.environ.pop(mlflow_runs.PARENT_ENV, None)
        if hint := stage_output.hint():
            get_run_logger().info(hint)
        if (REPORT_DIR / "report.md").exists():
            create_markdown_artifact(key="rare-pipeline-report", markdown=markdown_summary(REPORT_DIR),
                                     description="Scores and the paper's findings of this run")
        return seconds

    return pipeline


def deployment(cron: str | None = None):  # noqa: ANN201 - returns a prefect RunnerDeployment
    """What ``--serve`` registers, built from the entrypoint it records so that the process running a
    flow run can load the flow. The flow is made inside ``build_flow`` (and under ``python -m`` its
    module is ``__main__``), so Prefect's own entrypoint for it would never load."""
    from prefect.deployments.runner import RunnerDeployment

    return RunnerDeployment.from_entrypoint(ENTRYPOINT, name="rare-pipeline", cron=cron, parameters={"force": False})


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: the flow is built on first use, after runtime.configure()
    if name == "pipeline":
        globals()["pipeline"] = build_flow()
        return globals()["pipeline"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rerun stages even if DVC finds them up to date")
    ap.add_argument("--stage", action="append", help="only these stages (repeatable)")
    ap.add_argument("--serve", action="store_true", help="serve a deployment (needs `make ui` running)")
    ap.add_argument("--cron", default=None, help="with --serve: schedule, e.g. '0 3 * * *'")
    ap.add_argument("--debug", action="store_true", help="print the traceback behind an error (stages too)")
    args = ap.parse_args(argv)
    if args.debug:
        os.environ[failures.DEBUG_ENV] = "1"
    if args.serve:
        if not os.environ.get("PREFECT_API_URL"):
            raise SystemExit("--serve needs a running Prefect server: run `make ui` first")
        from prefect import serve

        serve(deployment(args.cron))
        return 0
    server = _ensure_prefect_server()
    if server:
        # Registered before Prefect registers its own exit hooks, so it runs after them: the log and
        # event workers drain into a live server instead of retrying against a stopped one.
        atexit.register(servers.stop, server)
    try:
        seconds = build_flow()(force=args.force, stages=args.stage)
    except Exception as exc:  # one `error:` line (none if the stage's own is already above), as the CLI does
        line = failures.expected(exc)
        if line is None or failures.debug():
            failures.print_traceback(exc)
        if line is not None and not failures.reported(exc):
            failures.print_error(line)
        return 1
    total = sum(seconds.values())
    for stage, s in seconds.items():
        print(f"{stage:28s} {s:7.1f} s")
    print(f"{'total':28s} {total:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
