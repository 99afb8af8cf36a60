"""`make ui`: the Prefect UI and the MLflow UI on 127.0.0.1, detached; `make ui-stop` ends them."""

from __future__ import annotations

import sys

from rare import runtime

runtime.configure()

from rare import servers  # noqa: E402
from rare.config import load_section  # noqa: E402


def main(action: str) -> None:
    tracking = load_section("tracking")
    prefect, mlflow = servers.prefect_service(), servers.mlflow_service()
    if action == "start":
        started = servers.start_all((prefect, mlflow), tracking.tracking_uri, tracking.artifact_root)
        for svc, new in zip((prefect, mlflow), started):
            print(f"{svc.name:8s} {'started' if new else 'already up'} at {svc.url}")
        from rare.mlflow_runs import setup

        # MLflow's UI opens on its GenAI views unless the URL asks for the model-training ones.
        print(f"MLflow runs: {mlflow.url}/#/experiments/{setup(tracking)}?workflowType=machine_learning")
        print("Runs of `make run` / `dvc repro` now report to this Prefect server; `make ui-stop` ends both.")
    elif action == "stop":
        for svc in (prefect, mlflow):
            print(f"{svc.name:8s} {'stopped' if servers.stop(svc) else 'was not started by make ui'}")
    else:
        raise SystemExit(f"usage: python -m flows.ui start|stop (got {action!r})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "start")
