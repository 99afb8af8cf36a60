"""Process-wide settings for an offline machine, applied before prefect/mlflow/transformers import.

Nothing here can reach a hub, and analytics that would retry against the network are off.
Existing environment values win, so a user can still point at their own Prefect server.
"""

from __future__ import annotations

import functools
import logging
import os
import urllib.request
from pathlib import Path
from typing import Any

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # rare's own log lines (progress summaries, losses, timings, scores) reach the stage's flow run log too.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "rare",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a tqdm bar per model download in stage logs
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar, twice per model load
}
PREFECT_UI_URL = "http://127.0.0.1:4200/api"
# Caches and config folders libraries would otherwise create in the home folder: kept in the project.
CACHE_ENV = {
    "MPLCONFIGDIR": "matplotlib",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
    "NUMBA_CACHE_DIR": "numba",
    "DVC_SITE_CACHE_DIR": "dvc-site",
}
TOOL_TIPS = ("💡 Tip:",)  # Lightning's advertisements for its cloud services, printed on every run


def server_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=0.3) as resp:
            return resp.status == 200
    except OSError:
        return False


def is_rank_zero_process() -> bool:
    """The launching process (not a DDP worker). torchrun sets RANK; Lightning's launcher sets LOCAL_RANK
    and NODE_RANK on the workers it starts: a process is rank zero only when every one that is set is 0."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def configure(project_dir: str | Path | None = None) -> None:
    """Idempotent; call first thing in every entry point.

    Prefect state lives in the project (``.prefect/``), so ephemeral-mode runs and the
    ``make ui`` server share one database. If that server is up, runs report to it live
    instead of starting a second (ephemeral) server on the same SQLite file
    (``RARE_DETECT_PREFECT_SERVER=0`` turns that off, as the tests do).
    """
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    root = Path(project_dir or os.environ.get("RARE_PROJECT_DIR") or Path.cwd())
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    for key, sub in CACHE_ENV.items():
        os.environ.setdefault(key, str(root / ".cache" / sub))
    detect = os.environ.get("RARE_DETECT_PREFECT_SERVER", "1") != "0"
    if detect and "PREFECT_API_URL" not in os.environ and server_up(PREFECT_UI_URL):
        os.environ["PREFECT_API_URL"] = PREFECT_UI_URL


@functools.cache
def console() -> Any:
    """The one rich console on stderr that progress bars and log lines share: a line logged while a bar
    is live is printed above it instead of through it."""
    from rich.console import Console

    return Console(stderr=True)


class ConsoleHandler(logging.Handler):
    """One plain line per record through the shared console, never wrapped (``soft_wrap``): rich's own
    handler wraps at the terminal's width and breaks a "View at" link mid-UUID."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            console().print(self.format(record), soft_wrap=True, markup=False, highlight=False, emoji=False)
        except Exception:  # a logging handler never raises into the code that logged
            self.handleError(record)


def sig4(value: float | None) -> str:
    """A loss or score as people read it: 4 significant digits."""
    return "n/a" if value is None else f"{value:.4g}"


def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   line: str | None = None) -> str:
    """A library's warning named by its package path (``pytorch_lightning/utilities/_pytree.py:21``), not
    by the absolute path of the virtual environment it is installed in."""
    where = filename.rpartition("site-packages/")[2] if "site-packages/" in filename else Path(filename).name
    return f"warning: {where}:{lineno}: {category.__name__}: {message}\n"


def setup_logging(verbose: bool = False) -> None:
    """One plain line per record (see ConsoleHandler), shared with the progress bars' console."""
    import warnings

    warnings.formatwarning = format_warning
    handler = ConsoleHandler()
    name = " %(name)s:" if verbose else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s{name} %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in ("httpx", "httpcore", "urllib3", "alembic", "filelock", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TOOL_TIPS)
