"""The seed study (`make study`): every trained variant and evaluation again with more seeds, then the report
with seeds joined per row (mean ± sd, intervals that resample seeds as well as queries).

Runs after the default pipeline (`make run`), whose models are the study's first seed (``train.seed``).
Each replica is a stage declared in ``rare.stages.study_stages`` and run by its own ``rare`` command;
one whose outputs exist is skipped, so a killed study resumes where it stopped. The report goes to
``report/study`` (the pipeline's ``report/`` stays what DVC produced).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer

from rare.config import load_section
from rare.stages import EVALUATIONS, RAW, ROOT, study_stages

app = typer.Typer(add_completion=False)


@app.command()
def main(
    seeds: Annotated[int, typer.Option("--seeds", min=2, help="Seeds per variant in all (the pipeline's is one).")] = 3,
    params_file: Annotated[Path, typer.Option("--params")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option("--out")] = Path("report/study"),
) -> None:
    """Train and evaluate the extra seeds, then write the study report; prints each stage's seconds."""
    first = load_section("train", params_file).seed
    extra = [first + i for i in range(1, seeds)]
    started = time.perf_counter()
    for s in study_stages(extra):
        if all((ROOT / o.path).exists() for o in s.outs):
            typer.echo(f"{s.name}: done, skipped")
            continue
        t0 = time.perf_counter()
        subprocess.run([*shlex.split(s.cmd), "--params", str(params_file)], check=True, cwd=ROOT)
        typer.echo(f"{s.name}: {time.perf_counter() - t0:.0f} s")
    subprocess.run(["rare", "report", "--evals", "eval", "--out", str(out), "--data", RAW, "--corpus-enhanced",
                    "data/enhanced/corpus", "--queries-enhanced", "data/enhanced/queries", "--order", ",".join(EVALUATIONS),
                    "--params", str(params_file)],
                   check=True, cwd=ROOT)
    typer.echo(f"seed study ({seeds} seeds per variant): {time.perf_counter() - started:.0f} s; report in {out}")


if __name__ == "__main__":
    app()
