"""Qualitative gallery in the spirit of the paper's Figure 3.

Each row is one test query (image, original text, enhanced text) followed by the baseline's
top-k and the enhanced model's top-k on the query's local pool, hits framed in green. Queries
where the enhanced model hits and the baseline misses come first; knowledge-intensive and
compositional dataset-tasks come before plain ones.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rare.data.images import load_image
from rare.data.layout import MBEIRRoot
from rare.data.qrels import read_qrels
from rare.data.records import Candidate, Query, iter_candidates, iter_queries
from rare.data.views import side_file
from rare.evaluate.runfile import read_run
from rare.mbeir import DatasetTask
from rare.report.table import Evaluation, columns

HIT, MISS = "#2ca02c", "#c8c8c8"


@dataclass(frozen=True)
class Example:
    dt: DatasetTask
    qid: str
    positives: frozenset[str]
    base_top: list[str]
    other_top: list[str]


def pick_examples(base: Evaluation, other: Evaluation, root: MBEIRRoot, n: int, top_k: int,
                  seed: int) -> list[Example]:
    """Up to ``n`` queries: first those the other model hits and the baseline misses, then both hit, then any."""
    rng = np.random.default_rng(seed)
    split = base.info.split
    tiers: list[list[list[Example]]] = [[], [], []]
    for dts in columns([base, other]).values():
        for name in dts:
            if not (base.run_file("local", name).exists() and other.run_file("local", name).exists()):
                continue
            dt = DatasetTask.parse(name)
            b_run, o_run = read_run(base.run_file("local", name)), read_run(other.run_file("local", name))
            by_tier: list[list[Example]] = [[], [], []]
            for qid, pos in sorted(read_qrels(root.qrels_file(split, dt)).items()):
                ex = Example(dt, qid, frozenset(pos), b_run.get(qid, [])[:top_k], o_run.get(qid, [])[:top_k])
                b_hit, o_hit = bool(pos & set(ex.base_top)), bool(pos & set(ex.other_top))
                by_tier[0 if o_hit and not b_hit else 1 if o_hit and b_hit else 2].append(ex)
            for tier, exs in zip(tiers, by_tier):
                tier.append([exs[i] for i in rng.permutation(len(exs))])
    chosen: list[Example] = []
    for tier in tiers:  # round-robin over dataset-tasks inside each tier, for variety
        for i in range(max((len(t) for t in tier), default=0)):
            chosen += [t[i] for t in tier if i < len(t)][: n - len(chosen)]
    return chosen[:n]


def _records(root: MBEIRRoot, examples: Sequence[Example], split: str, corpus_enhanced: Path | None,
             queries_enhanced: Path | None) -> tuple[dict[str, Query], dict[str, Candidate]]:
    """Query and candidate records of the examples, enhanced mirrors when given (they keep the originals)."""
    queries: dict[str, Query] = {}
    cands: dict[str, Candidate] = {}
    for dt in sorted({ex.dt for ex in examples}):
        exs = [ex for ex in examples if ex.dt == dt]
        qfile = side_file(root, queries_enhanced, root.query_file(split, dt.dataset, dt.task_id),
                          queries_enhanced is not None)
        want = {ex.qid for ex in exs}
        queries.update({q.qid: q for q in iter_queries(qfile) if q.qid in want})
        pfile = side_file(root, corpus_enhanced, root.local_pool(dt, split), corpus_enhanced is not None)
        dids = {d for ex in exs for d in ex.base_top + ex.other_top}
        cands.update({c.did: c for c in iter_candidates(pfile) if c.did in dids})
    return queries, cands


def _wrap(text: str, width: int, limit: int) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return "\n".join(textwrap.wrap(text, width)) if text else ""


def _cell(ax, root: MBEIRRoot, image: str | None, text: str, frame: str | None) -> None:  # noqa: ANN001
    ax.set_xticks([])
    ax.set_yticks([])
    if image:
        ax.imshow(np.asarray(load_image(root.path, image)))
        ax.set_xlabel(text, fontsize=5.5, wrap=False)
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.text(0.04, 0.96, text, fontsize=5.5, va="top", ha="left", transform=ax.transAxes)
    for spine in ax.spines.values():
        spine.set_edgecolor(frame or "black")
        spine.set_linewidth(3 if frame == HIT else 1)


def gallery(base: Evaluation, other: Evaluation, data: Path, path: Path, n: int = 6, top_k: int = 5,
            seed: int = 0, corpus_enhanced: Path | None = None, queries_enhanced: Path | None = None) -> Path | None:
    """Draw the gallery PNG; None when there is nothing to show (no shared local run files)."""
    root = MBEIRRoot.open(data)
    examples = pick_examples(base, other, root, n, top_k, seed)
    if not examples:
        return None
    queries, cands = _records(root, examples, base.info.split, corpus_enhanced, queries_enhanced)
    fig = Figure(figsize=(2.6 + 2.5 * top_k, 2.3 * len(examples)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(examples), 2 * top_k + 1, width_ratios=[2.2] + [1] * (2 * top_k))
    for r, ex in enumerate(examples):
        q = queries[ex.qid]
        enhanced = q.enhanced.txt if q.enhanced is not None and q.enhanced.ok else "(not enhanced)"
        text = (f"{ex.dt.name}  {ex.qid}\nquery: " + _wrap(q.txt or "(image only)", 34, 150)
                + "\nenhanced: " + _wrap(enhanced or "", 34, 150))
        _cell(fig.add_subplot(grid[r, 0]), root, q.img_path if "image" in q.modality else None, text, None)
        for side, top in enumerate((ex.base_top, ex.other_top)):
            for j, did in enumerate(top):
                c = cands.get(did)
                hit = did in ex.positives
                label = ("✓ " if hit else "") + f"{j + 1}. {did}"
                if c is not None:
                    enhanced = c.enhanced.txt if c.enhanced is not None and c.enhanced.ok else ""
                    label += "\n" + _wrap(" | ".join(t for t in (c.txt, enhanced) if t), 22, 90)
                image = c.img_path if c is not None and "image" in c.modality else None
                ax = fig.add_subplot(grid[r, 1 + side * top_k + j])
                _cell(ax, root, image, label, HIT if hit else MISS)
                if r == 0 and j == 0:
                    ax.set_title(f"{(base if side == 0 else other).name}: top-{top_k}", loc="left", fontsize=9)
    fig.suptitle(f"Test queries: baseline '{base.name}' vs '{other.name}' (local pool; green = positive; "
                 f"queries {other.name} hits and {base.name} misses first)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
