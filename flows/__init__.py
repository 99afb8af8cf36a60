"""Prefect flows: thin wrappers that chain rare's stages (all logic lives in src/rare)."""

from typing import Any


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: bad input (DataError) and bad settings (ValueError, ConfigError) fail the same
    way every time, so retrying only delays the error; anything else (a crashed worker, CUDA OOM, a
    locked database) may pass on a retry."""
    try:
        state.result()
    except ValueError:
        return False
    except Exception:
        return True
    return True
