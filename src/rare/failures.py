"""How a failure reaches the user: one ``error: <what>: <cause>`` line, or a traceback for a real bug.

Bad data, bad params and missing files are *expected* failures: ``ValueError`` (DataError,
ConfigError, ImageLoadError, ...) and ``OSError``. They print one line and exit 1, from the CLI
and, through the stage's own output, from ``dvc repro`` and the Prefect flows. Anything else is a
bug and keeps its traceback; ``--debug`` or ``RARE_DEBUG=1`` shows it for expected failures too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

DEBUG_ENV = "RARE_DEBUG"
EXPECTED = (ValueError, OSError)
# torch re-raises a DataLoader worker's exception with the worker's whole traceback as its message
# (or as a RuntimeError when the type cannot be rebuilt from one string): the cause is its last line.
_WORKER = re.compile(r"^Caught (?P<type>\w+) in DataLoader worker process \d+\.")
_LAST = re.compile(r"^(?P<qualname>[\w.]+): (?P<message>.*)$")


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def worker_cause(exc: BaseException) -> tuple[type[BaseException], str] | None:
    """The type and message of the exception raised inside a DataLoader worker, if ``exc`` wraps one."""
    text = str(exc)
    if not _WORKER.match(text):
        return None
    for line in reversed(text.rstrip().splitlines()):
        m = _LAST.match(line)
        if m:
            module, _, name = m["qualname"].rpartition(".")
            found = getattr(sys.modules.get(module or "builtins"), name, None)
            kind = found if isinstance(found, type) and issubclass(found, BaseException) else RuntimeError
            return kind, m["message"]
    return None


class WorkerFailure(ValueError):
    """An expected failure inside a DataLoader worker, re-raised with the worker's own message."""


@contextmanager
def worker_errors_unwrapped() -> Iterator[None]:
    """Around a loop that pulls from DataLoader workers: a missing image names its file, not a worker."""
    try:
        yield
    except Exception as exc:
        cause = worker_cause(exc)
        if cause is None or not issubclass(cause[0], EXPECTED):
            raise
        raise WorkerFailure(cause[1]) from None


def describe(exc: BaseException) -> str:
    """The one-line message of an exception: file and cause for OSErrors, the worker's own cause."""
    cause = worker_cause(exc)
    if cause is not None:
        return cause[1]
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def expected(exc: BaseException) -> str | None:
    """The error line for an expected failure, None for a bug (which keeps its traceback). An exception
    may carry its own (``user_line``: a failed stage whose process already said why)."""
    if getattr(exc, "user_line", None):
        return exc.user_line  # type: ignore[attr-defined]
    cause = worker_cause(exc)
    kind = cause[0] if cause is not None else type(exc)
    if not issubclass(kind, EXPECTED):
        return None
    return describe(exc)


def reported(exc: BaseException) -> bool:
    """The user already saw this failure's ``error:`` line (a stage process printed it): say it no more."""
    return bool(getattr(exc, "reported", False))


def print_error(message: str) -> None:
    """``error: ...`` on stderr, one line per line of the message (a params file can hold several)."""
    for line in message.splitlines() or [""]:
        print(f"error: {line}", file=sys.stderr, flush=True)


def print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def print_traceback(exc: BaseException) -> None:
    import traceback

    traceback.print_exception(exc, file=sys.stderr)
