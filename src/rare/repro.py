"""The DVC pipeline as data: stage order, and running one stage in a subprocess.

Stages run one at a time: two `dvc repro` in one workspace deadlock on DVC's lock.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from rare import failures


def dvc_command(*args: str) -> list[str]:
    """DVC from this interpreter, so a virtualenv that was never activated still runs its own DVC."""
    return [sys.executable, "-m", "dvc", *args]


def stage_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Stage commands call `rare`: put this interpreter's scripts first on PATH so they run this install."""
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]), **(extra or {})}


def stage_order(repo_dir: str | Path = ".") -> list[str]:
    """Stage names in dependency order, from DVC's own graph (so foreach/matrix expansions are included)."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(repo_dir)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return [stage.name for stage in reversed(list(nx.topological_sort(graph))) if isinstance(stage, PipelineStage)]


_CMD_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)")


class StageFailed(RuntimeError):
    """A stage command that failed. When it printed rare's own ``error:`` lines (an expected failure:
    bad data, bad params, a missing file) the message is those lines and ``reported`` is set: the user saw
    them in the stage's output, so no entry point repeats them or adds a traceback. Otherwise (a bug, a
    killed process) the message carries the last lines of the output, so the cause reaches the Prefect UI."""

    def __init__(self, stage: str, returncode: int, tail: str):
        self.stage, self.returncode = stage, returncode
        found = _CMD_EXIT.findall(tail)
        self.command_exit = int(found[-1]) if found else None  # the stage command's own code, as DVC reports it
        headline = [line.removeprefix("error: ") for line in tail.splitlines() if line.startswith("error: ")]
        self.reported = bool(headline) and not failures.debug()
        if headline:
            super().__init__(f"stage {stage!r} failed: {'; '.join(headline)}")
        else:
            super().__init__(f"stage {stage!r} failed: exit {returncode}\n--- last lines of its output ---\n{tail}")

    @property
    def user_line(self) -> str | None:
        """The one-line cause for ``rare.failures.expected`` (None: a bug, which keeps its traceback)."""
        return str(self) if self.command_exit == 1 and "\n" not in str(self) else None

    @property
    def retryable(self) -> bool:
        """A stage command exiting 1 is rare's own clear error (bad input or settings) or an uncaught
        exception: a rerun fails the same way. Anything else (killed by the OOM killer, DVC's own lock
        or I/O errors) may pass on a retry."""
        return self.command_exit != 1


def run_stage(stage: str, force: bool = False, echo: Callable[[str], None] = print,
              repo_dir: str | Path = ".", env: Mapping[str, str] | None = None) -> float:
    """`dvc repro --single-item STAGE`; DVC itself skips it when nothing it depends on changed.

    Output is streamed live; on failure the error carries the last lines, so the cause is in
    the Prefect UI and not only in a terminal that may be gone.
    """
    cmd = dvc_command("repro", "--single-item", stage, *(["--force"] if force else []))
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(cmd, cwd=repo_dir, env=stage_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            echo(line)
    if proc.returncode != 0:
        raise StageFailed(stage, proc.returncode, "\n".join(tail))
    return time.monotonic() - start


# Lines a stage process prints that the pipeline log need not repeat: Prefect's per-state lines (they stay in
# the stage's own flow run log) and DVC's per-stage "git add dvc.lock" hint (said once, at the end).
_STATE_LINE = re.compile(r"Finished in state \w+\(")
_GIT_HINT = ("To track the changes with git, run:", "To enable auto staging, run:", "\tdvc config core.autostage true")


class PipelineEcho:
    """Passes a stage's output lines on to ``echo``, less the repeated ones; ``hint()`` is DVC's git hint,
    once, for every file the stages asked to ``git add``."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.to_add: dict[str, None] = {}

    def __call__(self, line: str) -> None:
        if _STATE_LINE.search(line) or line in _GIT_HINT or not line.strip():
            return
        if line.startswith("\tgit add "):
            self.to_add.update(dict.fromkeys(line.removeprefix("\tgit add ").split()))
            return
        self.echo(line)

    def hint(self) -> str | None:
        return f"To track the changes with git, run: git add {' '.join(self.to_add)}" if self.to_add else None
