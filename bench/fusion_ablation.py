"""Which side of the score-level fusion a trained retriever's rankings come from (a diagnostic).

An entry's embedding is normalise(text + image) (the ``dual`` family weights the two terms by its gate).
For one dataset-task's local pool this ranks the test queries' positives four ways: as evaluation does
(fused query against fused candidates), with the query's or the candidates' image term dropped, and
with only the query's image. Texts are built exactly as evaluation builds them (``rare.evaluate.embed``:
instruction, text view). It explained emblemkb t6 and factwiki t2 (README, "What is not yet right"):
the image term that the other side's text cannot match adds per-candidate noise that the fused ranking
pays for.

    python -m bench.fusion_ablation models/both both emblemkb_task6 [--data data/raw] [--enhanced data/enhanced]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rare import runtime
from rare.data.images import load_image
from rare.data.instructions import InstructionTable
from rare.data.layout import MBEIRRoot
from rare.data.records import iter_queries
from rare.data.views import side_file
from rare.evaluate.embed import EmbedInput, TextView, pool_items, query_items
from rare.model import EncodeInput
from rare.model.io import load_retriever
from rare.model.retriever import Retriever
from rare.stages.variants import variant_sides

# (query keeps text, query keeps image, candidates keep text, candidates keep image)
VIEWS = {
    "fused (evaluation)": (True, True, True, True),
    "query image dropped": (True, False, True, True),
    "candidate image dropped": (True, True, True, False),
    "query image only": (False, True, True, True),
}


def encode(retriever: Retriever, items: Sequence[EmbedInput], image_root: Path, text: bool, image: bool,
           batch: int = 128) -> np.ndarray:
    """Embeddings of ``items`` with their text and/or image left out (an entry left with neither is all zeros)."""
    collate, out = retriever.collator(), []
    with torch.inference_mode():
        for i in range(0, len(items), batch):
            inputs = [EncodeInput(it.text if text else "",
                                  load_image(image_root, it.image) if image and it.image else None)
                      for it in items[i:i + batch]]
            out.append(retriever(collate(inputs)).numpy())
    return np.concatenate(out)


def positive_ranks(scores: np.ndarray, positives: Sequence[Sequence[int]]) -> np.ndarray:
    """1-based rank of each query's best-scored positive; a tie with a negative counts against it, so a query
    left with no term at all (all scores equal) ranks last instead of first."""
    ranks = []
    for s, p in zip(scores, positives):
        negative = np.ones(len(s), dtype=bool)
        negative[p] = False
        ranks.append(int((s[negative] >= s[p].max()).sum()) + 1)
    return np.array(ranks)


def ablate(model: Path, variant: str, task: str, data: Path, enhanced: Path | None, k: int = 5) -> dict[str, float]:
    """R@k of the test queries of ``task`` (e.g. ``emblemkb_task6``) under each of VIEWS."""
    raw = MBEIRRoot(data)
    dt = next((d for d in raw.eval_tasks("test") if f"{d.dataset}_task{d.task_id}" == task), None)
    if dt is None:
        raise SystemExit(f"{data}: no test queries for {task!r}")
    cand_enh, query_enh = variant_sides(variant)
    retriever = load_retriever(model)
    meta = retriever.meta
    table = InstructionTable.load(raw.path / "instructions/query_instructions.tsv")
    qview = TextView(query_enh, meta.text_mode.query, table, instruction_seed=meta.instruction_seed)
    qfile = side_file(raw, enhanced / "queries" if enhanced else None, raw.query_file("test", dt.dataset, dt.task_id),
                      query_enh)
    pfile = side_file(raw, enhanced / "corpus" if enhanced else None, raw.local_pool(dt, "test"), cand_enh)
    queries, cands = query_items(qfile, qview), pool_items(pfile, replace(qview, use_enhanced=cand_enh,
                                                                          mode=meta.text_mode.corpus))
    index = {c.id: i for i, c in enumerate(cands)}
    positives = [[index[d] for d in q.pos if d in index] for q in iter_queries(qfile)]
    recalls = {}
    for name, (qt, qi, ct, ci) in VIEWS.items():
        scores = encode(retriever, queries, raw.path, qt, qi) @ encode(retriever, cands, raw.path, ct, ci).T
        recalls[name] = round(100.0 * float((positive_ranks(scores, positives) <= k).mean()), 1)
    return recalls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("variant", help="which sides read enhanced text: none, corpus, query or both")
    ap.add_argument("task", help="dataset-task, e.g. emblemkb_task6")
    ap.add_argument("--data", type=Path, default=Path("data/raw"))
    ap.add_argument("--enhanced", type=Path, default=Path("data/enhanced"))
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args(argv)
    runtime.configure()
    recalls = ablate(args.model, args.variant, args.task, args.data, args.enhanced, args.k)
    print(json.dumps({"model": str(args.model), "variant": args.variant, "task": args.task,
                      f"R@{args.k}": recalls}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
