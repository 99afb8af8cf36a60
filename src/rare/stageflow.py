"""A stage's function as one Prefect flow run holding one task: the one place stage retries are set.

    rare train none ...  ->  flow "train" (run "train-none")  ->  task "train-none"  ->  rare.stages.train.run_train

Under the pipeline flow (`make run`) the stage's flow run is a subflow of the pipeline's run.

Only when a Prefect server takes the run: the pipeline's (`make run`), `make ui`'s (found by
``runtime.configure``) or the one PREFECT_API_URL names. Otherwise the function runs bare, so a stage
run by hand or by plain `dvc repro` starts no temporary server (10-40 s on 2 cores) and imports no
Prefect. A DDP worker process (Lightning starts one per extra GPU by re-running the command) runs the
function bare too: rank 0 holds the flow run.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rare import failures
from rare.runtime import is_rank_zero_process

if TYPE_CHECKING:  # the declarations are the mount's: a stage's code deps leave them out
    from rare.stages.declare import Step

RETRIES, RETRY_DELAY_S = 1, 5
# Set by the pipeline flow for the stage processes it starts: the task run each stage's flow run hangs under.
PARENT_TASK_RUN_ENV = "RARE_PREFECT_PARENT_TASK_RUN"
# Where Prefect logs a failed task or flow run, with the whole traceback.
PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine")


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: bad input (DataError) and bad settings (ValueError, ConfigError) fail the same
    way every time, so retrying only delays the error; anything else (a crashed worker, CUDA OOM, a
    locked database) may pass on a retry, unless the error itself says otherwise (a failed DVC stage
    knows its command's exit code)."""
    try:
        state.result()
    except ValueError:
        return False
    except Exception as exc:
        return getattr(exc, "retryable", True)
    return True


def retry_options(retries: int = RETRIES) -> dict[str, Any]:
    """Task options of a retried unit of work: a stage, or (enhance) a shard, whose retry resumes."""
    return {"retries": retries, "retry_delay_seconds": RETRY_DELAY_S, "retry_condition_fn": transient}


class OneLineFailures(logging.Filter):
    """An expected failure (bad data, bad params, a missing file) is logged by Prefect as its one
    ``error:`` line, without the traceback; a bug keeps it, as does ``--debug`` / ``RARE_DEBUG=1``."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        line = failures.expected(exc) if exc is not None else None
        if line is not None and not failures.debug():
            # A failed stage whose own error line is already in the log is named, not repeated.
            record.msg, record.args = (line if failures.reported(exc) else f"error: {line}"), ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_expected_failures() -> None:
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineFailures) for f in logger.filters):
            logger.addFilter(OneLineFailures())


def server_configured() -> bool:
    """A Prefect server to report to: PREFECT_API_URL in the environment, or in the settings of a Prefect
    this process already imported (a test harness sets it there, the project's prefect.toml too)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect" not in sys.modules:
        return False
    from prefect.settings import get_current_settings

    from rare import runtime

    # prefect.toml names `make ui`'s server for Prefect's own commands; a stage counts it only while it is up.
    url = get_current_settings().api.url
    return bool(url) and (url != runtime.PREFECT_UI_URL or runtime.server_up(url))


def in_run() -> bool:
    """Inside a Prefect flow run (the stage's own, when a server takes it)."""
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger inside a stage run (its lines reach the UI), a plain one outside."""
    if not in_run():
        return logging.getLogger("rare")
    from prefect import get_run_logger

    return get_run_logger()


def function(step: Step) -> Any:
    module, _, name = step.run.partition(":")
    return getattr(importlib.import_module(module), name)


def _retries(step: Step, params_file: Path) -> int:
    """Under DDP the other ranks are separate processes: an in-process retry on rank 0 alone would wait
    for peers that are gone, so a failed DDP run fails (and resumes on rerun)."""
    from rare.config import load_section

    return 0 if getattr(load_section(step.params[0], params_file), "strategy", None) == "ddp" else RETRIES


def run_step(step: Step, run_name: str, **kwargs: Any) -> Any:
    """``step``'s function on ``kwargs`` (the command's options, ``params_file`` among them)."""
    fn = function(step)
    if not is_rank_zero_process() or not server_configured():
        return fn(**kwargs)
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    quiet_expected_failures()
    work = task(fn, name=step.command, task_run_name=run_name, cache_policy=NO_CACHE,
                **retry_options(_retries(step, kwargs["params_file"])))
    stage_flow = flow(lambda: work(**kwargs), name=step.command, flow_run_name=run_name, log_prints=False)
    parent = os.environ.get(PARENT_TASK_RUN_ENV)
    if not parent:
        return stage_flow()
    return _as_subflow(stage_flow, run_name, parent)


def _as_subflow(stage_flow: Any, run_name: str, parent_task_run: str) -> Any:
    """The stage's flow run as a subflow of the pipeline's: Prefect links a flow run to its parent through
    ``parent_task_run_id`` (the pipeline's task that runs this stage). The stage runs in its own process
    (under ``dvc repro``), so no context carries it: the flow run is created here with it, then run."""
    from uuid import UUID

    from prefect import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Pending

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(stage_flow, name=run_name, parameters={}, state=Pending(),
                                          parent_task_run_id=UUID(parent_task_run), tags=["rare-stage"])
    return run_flow(stage_flow, flow_run=flow_run)
