"""The VLM-quality sweep (`make sweep`): how good must the VLM be for enhancement to pay off?

The stand-in reads the benchmark's ground truth, so the default pipeline measures an oracle. This sweep
sets every noise knob of the stand-in (``enhance.noise``: dropped details, wrong attributes, failed
entity naming) to each error rate, re-enhances both sides, retrains the enhanced variants, evaluates
them, and plots each probe's gain over ``none`` against the error rate with its 95% interval (the
report's paired stratified bootstrap). Rate 0 is the pipeline's own run (``make run`` first); the
baseline ``none`` never reads enhanced text, so it is shared by every rate. Work goes under ``.sweep/``,
one folder per rate; a finished step is skipped on a rerun, so a killed sweep resumes.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml

from rare.atomic import atomic_write_text
from rare.stages import BASELINE, ENHANCE, EVALUATE, RAW, ROOT, TRAIN
from rare.stages.variants import VARIANTS

app = typer.Typer(add_completion=False)
ENHANCED_VARIANTS = ("corpus", "query", "both")


def noisy_params(params_file: Path, rate: float, out: Path) -> Path:
    """params.yaml with every stand-in noise knob at ``rate`` (MLflow off: the sweep is a side experiment)."""
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    params["enhance"]["noise"] = {k: rate for k in ("drop_detail", "wrong_attribute", "fail_entity")}
    params["tracking"]["enabled"] = False
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, yaml.safe_dump(params, sort_keys=False))
    return out


def _enhanced_opts(variant: str, enhanced: Path) -> list[str]:
    use_corpus, use_query = VARIANTS[variant].sides
    return (["--corpus-enhanced", str(enhanced / "corpus")] if use_corpus else []) + \
        (["--queries-enhanced", str(enhanced / "queries")] if use_query else [])


def commands(rate_dir: Path, params: Path) -> list[tuple[Path, list[str]]]:
    """(output that marks the step done, command) for one error rate: enhance, train, evaluate."""
    enhanced = rate_dir / "enhanced"
    steps: list[tuple[Path, list[str]]] = []
    for side in ("corpus", "queries"):
        steps.append((enhanced / side, ["rare", ENHANCE.command, side, "--data", RAW, "--out", str(enhanced / side),
                                        "--params", str(params)]))
    for v in ENHANCED_VARIANTS:
        model = rate_dir / "models" / v
        steps.append((model, ["rare", TRAIN.command, v, "--data", RAW, *_enhanced_opts(v, enhanced), "--out",
                              str(model), "--params", str(params)]))
        out = rate_dir / "eval" / v
        steps.append((out / "metrics.json", ["rare", EVALUATE.command, v, "--model", str(model), "--inputs", v,
                                             "--data", RAW, *_enhanced_opts(v, enhanced), "--out", str(out),
                                             "--params", str(params)]))
    return steps


def eval_dir(rate: float, work: Path, evals: Path) -> Path:
    return evals if rate == 0 else work / f"rate-{rate:g}" / "eval"


def gains(rates: list[float], work: Path, evals: Path, data: Path, resamples: int, seed: int) -> dict:
    """rate -> variant -> probe -> interval of (variant - none) on the local pool."""
    from rare.report.evidence import load_samples
    from rare.report.stats import Bootstrap, Contrast, mean_of
    from rare.report.table import columns, load_evaluations

    base = {e.name: e for e in load_evaluations(evals)}[BASELINE]
    out: dict = {}
    for rate in rates:
        found = {e.name: e for e in load_evaluations(eval_dir(rate, work, evals)) if e.name in ENHANCED_VARIANTS}
        replicas = {BASELINE: [base], **{n: [e] for n, e in found.items()}}
        boot = Bootstrap(load_samples(replicas, data, "local"), resamples, seed)
        groups = {p.value: dts for p, dts in columns([base, *found.values()]).items()}
        groups["M-BEIR score"] = [dt for dts in groups.values() for dt in dts]
        out[f"{rate:g}"] = {v: {g: boot.interval(Contrast(v, BASELINE, mean_of(dts))).as_dict() for g, dts in groups.items()}
                            for v in found}
    return out


def plot(result: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rates = sorted(result, key=float)
    variants = list(result[rates[0]])
    fig = Figure(figsize=(4.2 * len(variants), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(variants), squeeze=False)[0]
    for ax, v in zip(axes, variants):
        for g in result[rates[0]][v]:
            x = [float(r) for r in rates]
            est = [result[r][v][g]["estimate"] for r in rates]
            lo = [result[r][v][g]["estimate"] - result[r][v][g]["lo"] for r in rates]
            hi = [result[r][v][g]["hi"] - result[r][v][g]["estimate"] for r in rates]
            ax.errorbar(x, est, yerr=[lo, hi], marker="o", capsize=3, label=g)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(f"{v} vs none")
        ax.set_xlabel("stand-in error rate (every noise knob)")
        ax.set_ylabel("gain, points (95% interval)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


@app.command()
def main(
    rates: Annotated[list[float], typer.Option("--rate", help="Error rates (repeat).")] = [0.0, 0.1, 0.25, 0.5],  # noqa: B006
    params_file: Annotated[Path, typer.Option("--params")] = Path("params.yaml"),
    work: Annotated[Path, typer.Option("--work")] = Path(".sweep"),
    out: Annotated[Path, typer.Option("--out")] = Path("report/sweep"),
    resamples: Annotated[int, typer.Option("--resamples", min=1000)] = 2000,
) -> None:
    """Re-enhance, retrain and evaluate at each error rate; write sweep.json, sweep.png and sweep.md."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    for rate in rates:
        if rate == 0:
            continue  # the pipeline's own run
        rate_dir = ROOT / work / f"rate-{rate:g}"
        params = noisy_params(ROOT / params_file, rate, rate_dir / "params.yaml")
        for done, cmd in commands(rate_dir, params):
            if done.exists():
                continue
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT)
            timings[f"{rate:g} {cmd[1]} {cmd[2]}"] = round(time.perf_counter() - t0, 1)
    result = gains(rates, ROOT / work, ROOT / "eval", ROOT / RAW, resamples, 0)
    plot(result, ROOT / out / "sweep.png")
    atomic_write_text(ROOT / out / "sweep.json", json.dumps({"gains": result, "seconds": timings}, indent=2) + "\n")
    lines = ["# VLM-quality sweep", "", "Gain over `none` (local pool, points, 95% interval) at each stand-in error rate.",
             "", "| rate | variant | " + " | ".join(next(iter(next(iter(result.values())).values()))) + " |"]
    lines.append("|---|---|" + "---:|" * (lines[-1].count("|") - 3))
    for rate, per_v in result.items():
        for v, per_g in per_v.items():
            lines.append(f"| {rate} | {v} | " + " | ".join(
                f"{iv['estimate']:+.1f} [{iv['lo']:+.1f}, {iv['hi']:+.1f}]" for iv in per_g.values()) + " |")
    total = time.perf_counter() - started
    lines += ["", f"Sweep time this run: {total:.0f} s (steps already done are skipped).", "", "![sweep](sweep.png)"]
    atomic_write_text(ROOT / out / "sweep.md", "\n".join(lines) + "\n")
    typer.echo(f"sweep: {total:.0f} s; {out}/sweep.md")


if __name__ == "__main__":
    app()
