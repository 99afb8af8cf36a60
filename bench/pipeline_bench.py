"""The main job from clean: every stage's wall time, the total against 10 minutes, and where it goes (target 6).

The project's files (tracked, plus untracked ones git does not ignore: what `git status` would
commit; never the ignored outputs, caches, mlruns or .prefect) are copied into a temporary
directory, which gets its own `git init`, and there `python -m flows.pipeline --force` runs every
DVC stage from clean, with that copy's own PREFECT_HOME, mlruns/ and .cache/ (its `rare` and
`flows` come from the copy too, through PYTHONPATH). quick: `data.preset: tiny` in the copy.

Rows (name, value, reference, ratio, verdict):
- each stage's wall time, as the pipeline reports it, against the total (ratio = its share);
- the total wall time of the command against 600 s: target <= 1.0;
- where the time goes: the fixed cost of a stage, measured afterwards with three no-op stages run
  the same way (`dvc repro` of a stage whose command starts Python, loads the CLI, Prefect and
  MLflow, runs an empty flow with an MLflow child run), times the number of stages; the
  pipeline's own cost outside its stages (Prefect server start, parent flow and run, DVC graph);
  what is left, the stages' work; and, for scale, importing torch + transformers + Lightning in a
  fresh process (paid again by each train and evaluate stage, counted in its work).

If a Prefect server answers on 127.0.0.1:4200 (`make ui`), the pipeline reports to it instead of
starting its own, and the pipeline's own cost is lower by the server's start.

Run: `python -m bench pipeline [--quick]`, or `python bench/pipeline_bench.py [--quick]`.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/pipeline_bench.py` from anywhere

from bench.common import print_rows, row  # noqa: E402
from rare import servers  # noqa: E402
from rare.repro import stage_env  # noqa: E402

BUDGET_S = 600.0
NOOPS = ("noop_1", "noop_2", "noop_3")
NOOP_STAGE = '''"""A stage that does no work: what every `rare <stage>` pays besides its own."""
from rare import runtime

runtime.configure()
runtime.setup_logging()

from prefect import flow  # noqa: E402

from rare import cli  # noqa: E402,F401 - the typer app each stage command loads
from rare.config import load_section  # noqa: E402
from rare.mlflow_runs import child_run  # noqa: E402


@flow(name="noop")
def noop() -> None:
    with child_run(load_section("tracking"), "noop", "noop"):
        pass


noop()
'''
STAGE_LINE = re.compile(r"^(\S+)\s+(\d+\.\d) s$")  # flows.pipeline's closing table: "<stage>   12.3 s"


def project_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (root / f).is_file()]  # tracked but deleted: skipped


def make_copy(dst: Path, quick: bool) -> None:
    for rel in project_files(ROOT):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    if quick:
        params = yaml.safe_load((dst / "params.yaml").read_text())
        params["data"]["preset"] = "tiny"
        (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)


def copy_env(copy: Path) -> dict[str, str]:
    env = stage_env()
    env.pop("PREFECT_API_URL", None)  # set by this process's runtime.configure when `make ui` is up
    env.update(PREFECT_HOME=str(copy / ".prefect"), RARE_PROJECT_DIR=str(copy),
               PYTHONPATH=os.pathsep.join([str(copy / "src"), str(copy)]))
    return env


def run_pipeline(copy: Path, log: Path, only: tuple[str, ...] = ()) -> tuple[float, dict[str, float]]:
    """Wall time of `python -m flows.pipeline --force [--stage S ...]` in the copy, and its per-stage table."""
    stages = set(only or yaml.safe_load((copy / "dvc.yaml").read_text())["stages"])
    cmd = [sys.executable, "-m", "flows.pipeline", "--force", *(a for name in only for a in ("--stage", name))]
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=copy, env=copy_env(copy), stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    lines = log.read_text(errors="replace").splitlines()
    if proc.returncode != 0:
        tail = "\n".join(collections.deque(lines, maxlen=40))
        raise RuntimeError(f"pipeline failed (exit {proc.returncode}) in {copy}; last lines of {log}:\n{tail}")
    seconds = {m[1]: float(m[2]) for m in map(STAGE_LINE.match, lines) if m and m[1] in stages}
    missing = stages - seconds.keys()
    if missing:
        raise RuntimeError(f"{log}: no wall time reported for stage(s) {sorted(missing)}")
    return wall, seconds


def add_noop_stages(copy: Path) -> None:
    (copy / "noop_stage.py").write_text(NOOP_STAGE)
    dvc = yaml.safe_load((copy / "dvc.yaml").read_text())
    for name in NOOPS:
        dvc["stages"][name] = {"cmd": "python noop_stage.py", "deps": ["noop_stage.py"]}
    (copy / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))


def import_seconds(env: dict[str, str], repeats: int = 2) -> float:
    """Best wall time of a fresh interpreter importing the ML libraries, minus a bare interpreter's."""
    def best(code: str) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - start)
        return min(times)

    return best("import torch, transformers, pytorch_lightning") - best("pass")


def run(quick: bool = False) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        copy = Path(tmp) / "project"
        make_copy(copy, quick)
        try:
            wall, stages = run_pipeline(copy, Path(tmp) / "pipeline.log")
            if not (copy / "report" / "summary.json").is_file():
                raise RuntimeError(f"{copy}: the pipeline finished without report/summary.json")
            add_noop_stages(copy)
            _, noops = run_pipeline(copy, Path(tmp) / "noop.log", NOOPS)
            imports = import_seconds(copy_env(copy))
        finally:  # a killed pipeline leaves its Prefect server (its own process group) behind
            for svc in servers.recorded("prefect", copy / ".prefect", "pipeline-server"):
                servers.stop(svc)

    noop = statistics.median(noops[name] for name in NOOPS)
    fixed = noop * len(stages)
    outside = wall - sum(stages.values())
    preset = "tiny" if quick else "default"
    rows = [row(f"pipeline: stage {name} (s)", s, wall, "s", None) for name, s in stages.items()]
    rows += [
        row(f"pipeline: `python -m flows.pipeline --force` from clean, embedded {preset}, {len(stages)} stages, "
            f"vs {BUDGET_S:.0f} s (s)", wall, BUDGET_S, "s", 1.0),
        row(f"  fixed cost of a stage (no-op stage: start, imports, Prefect flow, MLflow run) x {len(stages)} (s)",
            fixed, wall, "s", None),
        row("  outside the stages (Prefect server start, parent flow and MLflow run, DVC graph) (s)", outside, wall,
            "s", None),
        row("  the stages' work: total minus both fixed costs (s)", wall - fixed - outside, wall, "s", None),
        row("  importing torch + transformers + Lightning, fresh process, vs the no-op stage (s)", imports, noop,
            "s", None),
    ]
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="data.preset: tiny in the copy")
    print_rows(run(parser.parse_args().quick))
