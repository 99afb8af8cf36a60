"""What ``rare serve`` loads once at start: per variant its retriever and the evaluation's cached candidate
embeddings (memory-mapped, read-only), plus the candidate records and test queries shared by all variants.

Nothing is embedded or written here: a pool whose embeddings are not in the cache is an error that says
to run the evaluation first. Queries are embedded exactly as the evaluation embeds them (same text view,
same precision, rounded to fp16 like the cached query vectors) and searched with the evaluation's exact
search, so a benchmark query served here ranks its candidates as the evaluation's run file does.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rare.config.evaluate import EvaluateParams
from rare.data.input_error import DataError
from rare.data.layout import MBEIRRoot
from rare.data.records import Candidate, Query, iter_candidates, iter_queries
from rare.data.views import side_file
from rare.evaluate import embed
from rare.evaluate.protocol import Plan, candidate_key, plan, resolve_device
from rare.evaluate.search import did_order, search
from rare.manifest import ManifestError
from rare.mbeir import DatasetTask
from rare.model import EncodeInput, Retriever, load_retriever

POOLS = ("local", "global")


@dataclass(frozen=True)
class Pool:
    """One searchable pool: memory-mapped fp16 candidate matrices, their dids, and the tie-break order."""

    sources: list[np.ndarray]
    ids: np.ndarray
    order: np.ndarray

    @classmethod
    def of(cls, entries: list[Path], ids: np.ndarray) -> Pool:
        # Copy-on-write maps open the files read-only (nothing can reach the disk) and give torch writable arrays.
        sources = [np.load(p, mmap_mode="c", allow_pickle=False) for p in entries]
        return cls(sources, ids, did_order(ids))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k], dids [Q, k]) best first, by the evaluation's exact search."""
        scores, rows = search(queries, self.sources, k, order=self.order)
        return scores, self.ids[rows]


@dataclass
class Variant:
    """One trained model with its own candidate index, as its evaluation (inputs = variant) built it."""

    name: str
    retriever: Retriever
    plan: Plan
    precision: str
    local: dict[str, Pool]  # dataset-task name -> its local pool
    global_pool: Pool | None

    def pool(self, pool: str, task: str) -> Pool:
        if pool == "global":
            assert self.global_pool is not None, "Service.pools offers global only where every variant has it"
            return self.global_pool
        return self.local[task]

    def embed(self, items: list[EncodeInput]) -> np.ndarray:
        """[N, D] float32 query vectors with the evaluation's arithmetic (autocast, fp16 rounding)."""
        batch = self.retriever.collator()(items)
        dev = self.retriever.device
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with torch.inference_mode(), autocast:
            emb = self.retriever(batch)
        return emb.float().cpu().numpy().astype(np.float16).astype(np.float32)


def _cached(cache: Path, key: str, what: str) -> embed.Embeddings:
    entry = embed.Embeddings(cache / key)
    if not entry.dir.exists():
        raise DataError(entry.dir, None, f"no cached embeddings for {what}: run its evaluation "
                        "(`make run` or `rare evaluate`) first; serving never embeds a pool")
    try:
        entry.check()
    except ManifestError as exc:
        raise ManifestError(f"{exc} ({what}: rerun its evaluation, which rebuilds the entry)") from None
    return entry


def load_variant(name: str, model_dir: Path, data: Path, params: EvaluateParams, corpus_enhanced: Path | None,
                 queries_enhanced: Path | None) -> Variant:
    """The model and its evaluation's cached pools (``evaluate.cache_dir``), opened read-only. A model is served
    on the sides it was trained on (its ``meta.inputs``), as its variant's evaluation ran it: each side reads
    its enhanced mirror only if the model trained on one."""
    device = resolve_device(params.device)
    retriever = load_retriever(model_dir, device=device)
    trained = retriever.meta.inputs
    if trained is None:
        raise DataError(Path(model_dir) / "meta.json", None, "records no training inputs: serve a model "
                        "`rare train` exported")
    corpus_enhanced = corpus_enhanced if trained.corpus_enhanced else None
    queries_enhanced = queries_enhanced if trained.queries_enhanced else None
    p = plan(name, retriever.meta, name, data, params, corpus_enhanced, queries_enhanced)
    precision = embed.resolve_precision(params.precision, device)
    cache, fp = Path(params.cache_dir), retriever.fingerprint
    entries = {t.dt.name: _cached(cache, candidate_key(p, t.pool, fp, precision), f"{name}: {t.dt.name} pool")
               for t in p.tasks}
    local = {dt: Pool.of([e.vectors_path], e.ids()) for dt, e in entries.items()}
    global_pool = None
    if "global" in params.pools:  # the pools its evaluation searched, so the ones it cached
        taken = list(entries.values())

        def rest(_: set[str]) -> embed.Embeddings:
            return _cached(cache, candidate_key(p, p.global_pool, fp, precision, taken), f"{name}: global pool rest")

        global_pool = Pool.of(*embed.pool_sources(p.global_pool, taken, rest))
    fast_paths(retriever, precision)
    return Variant(name, retriever, p, precision, local, global_pool)


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` as the maximum of the four strided corners of each 2x2 window: the same values
    (a maximum is exact; NaN propagates in both), about 8x faster on this torch's CPU kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]  # floor mode drops an odd last row/column
        top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
        return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def _two(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return v if isinstance(v, tuple) else (v, v)


def _is_plain_2x2(m: nn.Module) -> bool:
    return (isinstance(m, nn.MaxPool2d) and not m.ceil_mode and not m.return_indices
            and [_two(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation)] == [(2, 2), (2, 2), (0, 0), (1, 1)])


def swap_modules(model: nn.Module, replace: Callable[[str, nn.Module], nn.Module | None]) -> int:
    """Put ``replace(name, child)`` in place of every submodule it gives a module for; how many it replaced."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (new := replace(name, child)) is not None:
                setattr(parent, name, new)
                swapped += 1
    return swapped


def fast_paths(model: nn.Module, precision: str) -> None:
    """Serving-only speed-ups on public torch modules that leave every query vector bit-identical
    (tests/test_serve_fast_paths.py).

    They live here, not in the model code, because that code is hashed into the embedding cache keys. On
    2 cores a CPU forward pass is most of a request's time:
    - the CNN's NCHW max-pool kernel took half of an image query's forward pass (``MaxPool2x2``);
    - under bf16 autocast every Linear and Conv2d cast its fp32 weights to bf16 on every call: cast once
      (autocast then finds them in bf16 already, so the kernels and the bits are the same).
    Call it after ``retriever.fingerprint`` is taken (the cast changes the state dict's dtypes).
    """
    swap_modules(model, lambda _, child: MaxPool2x2() if _is_plain_2x2(child) else None)
    if precision == "bf16":
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                m.to(torch.bfloat16)


@dataclass
class Catalog:
    """Candidate records by did, and the benchmark's test queries with their positives (from the qrels)."""

    root: MBEIRRoot
    candidates: dict[str, Candidate]
    queries: dict[str, Query]
    positives: dict[str, set[str]]
    task_of: dict[str, str]  # qid -> dataset-task name
    tasks: list[DatasetTask]

    def random_query(self, dataset: str | None, rng: random.Random) -> Query:
        qids = [q for q, dt in self.task_of.items() if dataset is None or dt.startswith(f"{dataset}_task")]
        if not qids:
            raise KeyError(dataset)
        return self.queries[rng.choice(qids)]


def load_catalog(p: Plan, corpus_enhanced: Path | None) -> Catalog:
    """Records as the enhanced mirror holds them (original text plus the ``enhanced`` block) where there is one.

    Every record is kept in memory: fine for the embedded benchmark; M-BEIR's 5.6M-candidate global pool
    would want the columnar pool cache (``rare.data.columnar``) instead.
    """
    root = p.root
    use_mirror = corpus_enhanced is not None
    raw_global = root.global_pool(p.split)  # p.global_pool may already be the enhanced mirror
    files = [raw_global] if raw_global.exists() else []
    files += [root.local_pool(t.dt, p.split) for t in p.tasks]
    candidates: dict[str, Candidate] = {}
    for f in files:
        for c in iter_candidates(side_file(root, corpus_enhanced, f, use_mirror)):
            candidates.setdefault(c.did, c)
    queries, positives, task_of = {}, {}, {}
    for t in p.tasks:
        for q in iter_queries(root.query_file(p.split, t.dt.dataset, t.dt.task_id)):
            queries[q.qid], task_of[q.qid] = q, t.dt.name
        positives.update(t.positives)
    return Catalog(root, candidates, queries, positives, task_of, [t.dt for t in p.tasks])

