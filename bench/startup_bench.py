"""Start-up of the light commands: seconds from process start to the first line of their work.

`rare validate`, `rare score` and `rare report` each run in a fresh interpreter whose work function
(``validate_root``, ``score_run``, ``build_report``) is replaced, as its module finishes importing, by
a stub that prints a marker and exits; the parent times spawn -> marker. The reference is
``python -c pass`` spawned the same way in the same run; ratio = command / reference. Also printed:
which heavy libraries each command had imported by then. Target (issue 14): at most 2 s on 2 cores.
`report` makes its MLflow run after ``build_report`` (stamped with the time its work began), so MLflow's
1.6 s import comes after the work starts; the "stage function" row is the time to ``rare.stages.report.run_report``,
where the stage's own code begins. A
command still short of its work after LIMIT_S counts as LIMIT_S ("timed out"), e.g. a Prefect
temporary server that never came up. Run it against another checkout with
``cd OTHER && PYTHONPATH=OTHER/src:OTHER python THIS/bench/startup_bench.py`` (the "before" figures).

Run: `python bench/startup_bench.py [--repeats N]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_rows, row  # noqa: E402

MARKER = "FIRST-WORK"
TARGET_S = 2.0
LIMIT_S = 120.0  # a command that has not reached its work by then counts as this
HEAVY = ("torch", "pytorch_lightning", "lightning", "mlflow", "prefect", "transformers", "matplotlib")
# Runs in the child: patch ``module.function`` the moment ``module`` has been executed, then run `rare`.
LAUNCHER = """
import importlib.abc, importlib.util, os, sys
MODULE, FUNC, HEAVY = sys.argv[1], sys.argv[2], sys.argv[3].split(",")

def stub(*args, **kwargs):
    loaded = [m for m in HEAVY if m in sys.modules]
    print("{marker}", ",".join(loaded) or "-", flush=True)
    os._exit(0)

class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            setattr(module, FUNC, stub)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Hook())
sys.argv = ["rare", *sys.argv[4:]]
from rare.cli import run_cli
run_cli()
""".replace("{marker}", MARKER)


def time_to_marker(args: list[str], env: dict[str, str], cwd: Path, limit_s: float = LIMIT_S) -> tuple[float, str]:
    """Seconds to the marker (``limit_s`` and "timed out" past it) and what the child had imported."""
    start = time.perf_counter()
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=cwd,
                          start_new_session=True) as proc:
        # the whole group: the child and any server it started (Prefect's temporary one)
        watchdog = threading.Timer(limit_s, os.killpg, (proc.pid, signal.SIGKILL))
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(MARKER):
                    return time.perf_counter() - start, line.split(maxsplit=1)[1].strip()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    if time.perf_counter() - start >= limit_s:
        return limit_s, "timed out"
    raise RuntimeError(f"{args[4:]} exited before its work")


def commands(tmp: Path) -> dict[str, tuple[str, str, list[str]]]:
    """The commands, run in ``tmp`` with a copy of this checkout's params.yaml (MLflow writes under tmp)."""
    shutil.copy("params.yaml", tmp / "params.yaml")
    (tmp / "root").mkdir()
    (tmp / "run").write_text("9:1 Q0 9:5 1 0.9 r\n")
    (tmp / "qrels").write_text("9:1 0 9:5 1 0\n")
    report = ["report", "--evals", str(tmp / "root"), "--out", str(tmp / "out"), "--data", str(tmp / "root")]
    found = {
        "validate": ("rare.validate", "validate_root", ["validate", str(tmp / "root")]),
        "score": ("rare.evaluate.metrics", "score_run", ["score", "--run", str(tmp / "run"), "--qrels",
                                                         str(tmp / "qrels")]),
        "report": ("rare.report.compose", "build_report", report),
        "report (stage function)": ("rare.stages.report", "run_report", report),
    }
    return {name: c for name, c in found.items() if importlib.util.find_spec(c[0])}  # an older checkout lacks some


def run(quick: bool = False, repeats: int = 3) -> list[dict[str, Any]]:
    env = {**os.environ, "RARE_DETECT_PREFECT_SERVER": "0"}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        reference = min(time_to_marker([sys.executable, "-c", f"print('{MARKER} -')"], env, tmp)[0]
                        for _ in range(repeats))
        for name, (module, func, argv) in commands(tmp).items():
            args = [sys.executable, "-c", LAUNCHER, module, func, ",".join(HEAVY), *argv]
            times = [time_to_marker(args, env, tmp) for _ in range(1 if quick else repeats)]
            best, loaded = min(times)
            verdict = "within" if best <= TARGET_S else "over"
            rows.append(row(f"startup: rare {name} -> {func}, {verdict} {TARGET_S:g} s (had imported: {loaded})",
                            best, reference, "s", None))
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    print_rows(run(repeats=ap.parse_args().repeats))
