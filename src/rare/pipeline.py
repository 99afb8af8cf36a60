"""The DVC pipeline as data: stage order, and running one stage in a subprocess.

Stages run one at a time: two `dvc repro` in one workspace deadlock on DVC's lock.
"""

from __future__ import annotations

import collections
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def stage_order(repo_dir: str | Path = ".") -> list[str]:
    """Stage names in dependency order, from DVC's own graph (so foreach/matrix expansions are included)."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(repo_dir)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return [stage.name for stage in reversed(list(nx.topological_sort(graph))) if isinstance(stage, PipelineStage)]


class StageFailed(RuntimeError):
    pass


def run_stage(stage: str, force: bool = False, echo: Callable[[str], None] = print,
              repo_dir: str | Path = ".") -> float:
    """`dvc repro --single-item STAGE`; DVC itself skips it when nothing it depends on changed.

    Output is streamed live; on failure the error carries the last lines, so the cause is in
    the Prefect UI and not only in a terminal that may be gone.
    """
    cmd = ["dvc", "repro", "--single-item", stage, *(["--force"] if force else [])]
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(cmd, cwd=repo_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            echo(line)
    if proc.returncode != 0:
        raise StageFailed(f"stage {stage!r} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return time.monotonic() - start
