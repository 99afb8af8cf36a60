"""Bar chart of the ablation: group means and the M-BEIR score per evaluation, one panel per pool."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rare.report.table import SCORE, Evaluation, columns, summary

TRAINED_COLORS = {"none": "#7f7f7f", "corpus": "#1f77b4", "query": "#2ca02c", "both": "#d62728"}
ZERO_SHOT_COLOR = "#c7c7c7"
HATCH = {"inference-only": "//", "zero-shot": ".."}


def _color(e: Evaluation) -> str:
    if e.regime == "zero-shot":
        return ZERO_SHOT_COLOR
    return TRAINED_COLORS.get(e.inputs, "#9467bd")


def bar_chart(evaluations: Sequence[Evaluation], path: Path) -> Path:
    """Grouped bars; inference-only evaluations share their input variant's colour, hatched; the zero-shot
    (pretrained, not fine-tuned) model is pale and dotted."""
    pools = [p for p in ("local", "global") if any(p in e.metrics for e in evaluations)]
    groups = [k.value for k in columns(evaluations)] + [SCORE]
    fig = Figure(figsize=(2.2 + 1.9 * len(groups), 3.6 * len(pools)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(pools), 1, squeeze=False)[:, 0]
    width = 0.8 / max(len(evaluations), 1)
    x = np.arange(len(groups))
    for ax, pool in zip(axes, pools):
        rows = summary(evaluations, pool)
        for i, e in enumerate(evaluations):
            values = [rows[e.name][g] for g in groups]
            heights = [np.nan if v is None else v for v in values]
            bars = ax.bar(x + (i - (len(evaluations) - 1) / 2) * width, heights, width, label=e.name,
                          color=_color(e), hatch=HATCH.get(e.regime), edgecolor="white" if e.regime in HATCH else None)
            ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
        ax.set_xticks(x, groups)
        ax.set_ylabel("mean headline R@k")
        ax.set_title(f"{pool} pool")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].legend(ncols=min(len(evaluations), 4), fontsize=7, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path
