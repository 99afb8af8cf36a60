"""Prefect flows: thin wrappers that chain rare's stages (all logic lives in src/rare)."""

from typing import Any


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
