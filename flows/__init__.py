"""Prefect flows: thin wrappers that chain rare's stages (all logic lives in src/rare)."""

import logging
from typing import Any

from rare import errors

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


class OneLineFailures(logging.Filter):
    """An expected failure (bad data, bad params, a missing file) is logged by Prefect as its one
    ``error:`` line, without the traceback; a bug keeps it, as does ``--debug`` / ``RARE_DEBUG=1``."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        line = errors.expected(exc) if exc is not None else None
        if line is not None and not errors.debug():
            record.msg, record.args = f"error: {line}", ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_expected_failures() -> None:
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineFailures) for f in logger.filters):
            logger.addFilter(OneLineFailures())


quiet_expected_failures()
