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
from collections.abc import Callable
from pathlib import Path


def dvc_command(*args: str) -> list[str]:
    """DVC from this interpreter, so a virtualenv that was never activated still runs its own DVC."""
    return [sys.executable, "-m", "dvc", *args]


def stage_env() -> dict[str, str]:
    """Stage commands call `rare`: put this interpreter's scripts first on PATH so they run this install."""
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}


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
    def __init__(self, stage: str, returncode: int, tail: str):
        self.stage, self.returncode = stage, returncode
        found = _CMD_EXIT.findall(tail)
        self.command_exit = int(found[-1]) if found else None  # the stage command's own code, as DVC reports it
        # The stage's own `error:` lines head the message, so the cause is what the Prefect UI shows first.
        headline = [line for line in tail.splitlines() if line.startswith("error: ")]
        first = "; ".join(line.removeprefix("error: ") for line in headline) or f"exit {returncode}"
        super().__init__(f"stage {stage!r} failed: {first}\n--- last lines of its output ---\n{tail}")

    @property
    def retryable(self) -> bool:
        """A stage command exiting 1 is rare's own clear error (bad input or settings) or an uncaught
        exception: a rerun fails the same way. Anything else (killed by the OOM killer, DVC's own lock
        or I/O errors) may pass on a retry."""
        return self.command_exit != 1


def run_stage(stage: str, force: bool = False, echo: Callable[[str], None] = print,
              repo_dir: str | Path = ".") -> float:
    """`dvc repro --single-item STAGE`; DVC itself skips it when nothing it depends on changed.

    Output is streamed live; on failure the error carries the last lines, so the cause is in
    the Prefect UI and not only in a terminal that may be gone.
    """
    cmd = dvc_command("repro", "--single-item", stage, *(["--force"] if force else []))
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(cmd, cwd=repo_dir, env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            echo(line)
    if proc.returncode != 0:
        raise StageFailed(stage, proc.returncode, "\n".join(tail))
    return time.monotonic() - start
