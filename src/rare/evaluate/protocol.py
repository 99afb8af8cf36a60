"""One evaluation: embed (cached), search every dataset-task's local pool and the global pool, score, track.

The steps (plan, embed_all, search_pool, write_eval_outputs, track) are separate functions so each can be
tested and timed alone; ``evaluate`` runs them in order. Query and candidate text is built exactly as
training builds it (``rare.data.views``), with the text mode the model was trained with, so the
variants differ only in their inputs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rare.atomic import atomic_write_text
from rare.config.evaluate import EvaluateParams
from rare.contracts import EvalInfo, EvalMetrics, ModelMeta, Regime
from rare.data.input_error import DataError
from rare.data.instructions import InstructionTable
from rare.data.layout import MBEIRRoot
from rare.data.qrels import read_qrels
from rare.data.records import iter_jsonl
from rare.data.views import TextMode, side_file
from rare.evaluate import embed
from rare.evaluate.metrics import mbeir_score, task_metrics
from rare.evaluate.runfile import write_run
from rare.evaluate.search import did_order, search
from rare.hashing import file_digest
from rare.mbeir import DatasetTask

log = logging.getLogger(__name__)
POOLS = ("local", "global")


@dataclass(frozen=True)
class EvalTask:
    dt: DatasetTask
    queries: Path  # the query file read: raw, or its enhanced mirror
    qrels: Path
    pool: Path     # the local pool read: raw, or its enhanced mirror
    positives: dict[str, set[str]] = field(default_factory=dict, compare=False)  # qid -> dids, from the qrels


@dataclass(frozen=True)
class Plan:
    name: str
    inputs: str          # the input variant: which sides are enhanced
    model_variant: str   # the variant the model was trained on
    regime: Regime
    root: MBEIRRoot
    split: str
    tasks: list[EvalTask]
    global_pool: Path
    corpus_view: embed.TextView
    query_view: embed.TextView


@dataclass
class PlanEmbeddings:
    """Every vector one evaluation searches: per dataset-task its queries and local pool, and the global pool."""

    queries: dict[str, embed.Embeddings]
    pools: dict[str, embed.Embeddings]
    global_sources: list[Path] = field(default_factory=list)
    global_ids: np.ndarray | None = None
    stats: embed.EmbedStats = field(default_factory=embed.EmbedStats)


def _positives(qrels_file: Path, queries: Path) -> dict[str, set[str]]:
    """The qrels are the ground truth; they must cover exactly the query file's queries."""
    qrels = read_qrels(qrels_file)
    qids = {str(obj.get("qid")) for _, obj in iter_jsonl(queries)}
    missing, extra = qids - qrels.keys(), qrels.keys() - qids
    if missing or extra:
        what = f"query {sorted(missing)[0]} of {queries} has no positive" if missing else \
            f"qid {sorted(extra)[0]} is not in {queries}"
        raise DataError(qrels_file, None,
                        f"qrels and queries disagree ({len(missing)} missing, {len(extra)} extra): {what}")
    return qrels


def regime_of(model_variant: str, inputs: str) -> Regime:
    """Inputs the model was trained on are "trained"; enhanced inputs it never saw are "inference-only";
    the pretrained model before any fine-tuning (``rare zero-shot``) is "zero-shot"."""
    if model_variant == "zero-shot":
        return "zero-shot"
    return "trained" if model_variant == inputs else "inference-only"


def plan(name: str, meta: ModelMeta, inputs: str, data: Path, params: EvaluateParams,
         corpus_enhanced: Path | None = None, queries_enhanced: Path | None = None,
         corpus_mode: TextMode | None = None) -> Plan:
    """Resolve every file one evaluation reads; fails before any work if one is missing. Texts are built as
    the model was trained on them: its text modes and instruction seed come from its ``meta``, unless the input
    variant joins a candidate's enhancement its own way (``corpus_mode``, an inference-only row). A side reads
    its enhanced mirror exactly when its enhanced folder is given; ``inputs`` names the input variant."""
    use_corpus, use_query = corpus_enhanced is not None, queries_enhanced is not None
    root = MBEIRRoot.open(data)
    dts = root.eval_tasks(params.split)
    if not dts:
        raise DataError(root.path / "query" / params.split, None, "no query files for this split")
    need = max(max(dt.ks) for dt in dts)
    if params.top_k < need:
        raise ValueError(f"evaluate.top_k is {params.top_k} but R@{need} is reported: set it to >= {need}")
    tasks = []
    for dt in dts:
        files = (root.query_file(params.split, dt.dataset, dt.task_id), root.qrels_file(params.split, dt),
                 root.local_pool(dt, params.split))
        for f in files:
            if not f.exists():
                raise DataError(f, None, f"missing input of {dt.name}")
        queries = side_file(root, queries_enhanced, files[0], use_query)
        tasks.append(EvalTask(dt, queries, files[1], side_file(root, corpus_enhanced, files[2], use_corpus),
                              _positives(files[1], queries)))
    global_pool = side_file(root, corpus_enhanced, root.global_pool(params.split), use_corpus)
    if "global" in params.pools and not global_pool.exists():
        raise DataError(global_pool, None, "missing global pool (drop 'global' from evaluate.pools to skip it)")
    instructions = root.instructions_file
    model_variant = meta.variant
    return Plan(
        name=name, inputs=inputs, model_variant=model_variant, regime=regime_of(model_variant, inputs), root=root,
        split=params.split, tasks=tasks, global_pool=global_pool,
        corpus_view=embed.TextView(use_corpus, corpus_mode or meta.text_mode.corpus),
        query_view=embed.TextView(use_query, meta.text_mode.query, InstructionTable.load(instructions),
                                  file_digest(instructions), meta.instruction_seed),
    )


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def candidate_key(p: Plan, pool: Path, fingerprint: str, precision: str,
                  taken: list[embed.Embeddings] | None = None) -> str:
    """Cache key of one pool's candidate embeddings; ``taken``: the local entries the global pool reuses.
    Serving (``rare.serve``) reads the entries back by this key, so the two can never disagree."""
    extra = ",".join(sorted(e.dir.name for e in taken)) if taken else ""
    return embed.cache_key(fingerprint, file_digest(pool), "candidate", p.corpus_view, precision, extra)


def embed_all(p: Plan, retriever: Any, params: EvaluateParams, device: str = "cpu") -> PlanEmbeddings:
    """Query embeddings per dataset-task, local pool embeddings, and the global pool assembled from them."""
    cache = Path(params.cache_dir)
    fp = retriever.fingerprint
    stats = embed.EmbedStats()
    precision = embed.resolve_precision(params.precision, device)
    opts = dict(batch_size=params.embed_batch, shard_rows=params.shard_rows, num_workers=params.num_workers,
                device=device, precision=precision, stats=stats)
    image_root = p.root.path
    queries, pools = {}, {}
    for t in p.tasks:
        key = embed.cache_key(fp, file_digest(t.queries), "query", p.query_view, precision)
        queries[t.dt.name] = embed.embed(retriever, partial(embed.query_items, t.queries, p.query_view), key, cache,
                                     image_root, label=f"{t.dt.name} queries", **opts)
        key = candidate_key(p, t.pool, fp, precision)
        pools[t.dt.name] = embed.embed(retriever, partial(embed.pool_items, t.pool, p.corpus_view), key, cache,
                                   image_root, label=f"{t.dt.name} pool", **opts)
    out = PlanEmbeddings(queries, pools, stats=stats)
    if "global" in params.pools:
        locals_ = list(pools.values())

        def embed_rest(dids: set[str]) -> embed.Embeddings:
            key = candidate_key(p, p.global_pool, fp, precision, locals_)
            make = partial(embed.pool_items, p.global_pool, p.corpus_view, dids)
            return embed.embed(retriever, make, key, cache, image_root, label="global pool rest", **opts)

        out.global_sources, out.global_ids = embed.pool_sources(p.global_pool, locals_, embed_rest)
    return out


def embed_only(name: str, retriever: Any, inputs: str, data: Path, params: EvaluateParams,
               corpus_enhanced: Path | None = None, queries_enhanced: Path | None = None,
               corpus_mode: TextMode | None = None) -> PlanEmbeddings:
    """A rank other than 0: the same plan and the same sequence of ``embed`` calls as rank 0 (their
    collectives pair up in that order), no search, no outputs, no tracking."""
    p = plan(name, retriever.meta, inputs, data, params, corpus_enhanced, queries_enhanced, corpus_mode)
    return embed_all(p, retriever, params, resolve_device(params.device))


def _score(p: Plan, t: EvalTask, qids: np.ndarray, dids: np.ndarray, scores: np.ndarray,
           pool: str, out: Path) -> dict[str, float]:
    write_run(out / "runs" / pool / f"{t.dt.name}.trec", qids.tolist(), dids, scores, f"{p.name}-{pool}")
    run = {q: row.tolist() for q, row in zip(qids.tolist(), dids)}
    return task_metrics(run, t.positives, t.dt)


def search_pool(p: Plan, emb: PlanEmbeddings, pool: str, params: EvaluateParams, out: Path,
                device: str = "cpu") -> dict[str, dict[str, float]]:
    """Search one pool setting for every dataset-task, write its run files, return metrics per dataset-task."""
    opts = dict(backend=params.search_backend, device=device, query_batch=params.query_batch,
                cand_chunk=params.cand_chunk)
    results = {}
    if pool == "local":
        for t in p.tasks:
            q, c = emb.queries[t.dt.name], emb.pools[t.dt.name]
            ids = c.ids()
            scores, rows = search(np.asarray(q.vectors(), dtype=np.float32), c.vectors_path, params.top_k,
                                  order=did_order(ids), **opts)
            results[t.dt.name] = _score(p, t, q.ids(), ids[rows], scores, pool, out)
        return results
    if pool != "global":
        raise ValueError(f"unknown pool {pool!r}; allowed: {list(POOLS)}")
    assert emb.global_ids is not None
    per_task = [emb.queries[t.dt.name] for t in p.tasks]
    all_q = np.concatenate([np.asarray(e.vectors(), dtype=np.float32) for e in per_task])
    scores, rows = search(all_q, emb.global_sources, params.top_k, order=did_order(emb.global_ids), **opts)
    dids = emb.global_ids[rows]
    start = 0
    for t, e in zip(p.tasks, per_task):
        qids = e.ids()
        end = start + len(qids)
        results[t.dt.name] = _score(p, t, qids, dids[start:end], scores[start:end], pool, out)
        start = end
    return results


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_eval_outputs(p: Plan, results: dict[str, dict[str, dict[str, float]]], out: Path,
                  info: dict[str, str], runtime: dict[str, Any]) -> EvalMetrics:
    """Every output file but the run files, split by what each is for:

    ``scores.json``   the M-BEIR score per pool: the DVC metric (`dvc exp show`, `dvc metrics diff`)
    ``metrics.json``  every R@k per pool and dataset-task (what the report reads)
    ``headline.json`` each dataset-task's headline recall per pool, as rows `dvc plots` draws
    ``info.json``     what was evaluated and how
    ``runtime.json``  timings and cache counts: neither git nor DVC tracks it, so a rerun that
                      changes nothing leaves `git status` clean
    """
    metrics: EvalMetrics = {"score": {pool: round(mbeir_score(r), 4) for pool, r in results.items()}}
    for pool, per_task in results.items():
        metrics[pool] = {dt: {k: round(v, 4) for k, v in m.items()} for dt, m in per_task.items()}  # type: ignore[literal-required]
    _write_json(out / "scores.json", metrics["score"])
    _write_json(out / "metrics.json", metrics)
    _write_json(out / "headline.json", [{"task": t.dt.name, **{pool: metrics[pool][t.dt.name]["headline"]
                                                               for pool in results}} for t in p.tasks])
    _write_json(out / "info.json", EvalInfo(
        name=p.name, inputs=p.inputs, model_variant=p.model_variant, regime=p.regime, split=p.split,
        data=str(p.root.path), dataset_tasks=[t.dt.name for t in p.tasks],
        headline={t.dt.name: f"R@{t.dt.headline_k}" for t in p.tasks}, **info,
    ).model_dump())
    _write_json(out / "runtime.json", runtime)
    return metrics


def track(p: Plan, metrics: EvalMetrics, out: Path, params: EvaluateParams, model: Path,
          fingerprint: str) -> None:
    """Log one evaluation into the active MLflow run, and tag the registered model version it evaluated
    (found by the export's fingerprint) with its scores."""
    import mlflow

    from rare import registry

    mlflow.log_params({"model": str(model), "inputs": p.inputs, "split": p.split, "pools": ",".join(params.pools),
                       "search_backend": params.search_backend, "top_k": params.top_k})
    flat = {f"score/{pool}": v for pool, v in metrics["score"].items()}
    for pool in POOLS:
        for dt, m in metrics.get(pool, {}).items():
            flat.update({f"{pool}/{dt}/{k.replace('@', '_at_')}": v for k, v in m.items() if k != "queries"})
    mlflow.log_metrics(flat)
    for name in ("scores.json", "metrics.json", "info.json", "runtime.json"):
        mlflow.log_artifact(str(out / name))
    version = registry.tag_scores(p.model_variant, fingerprint, p.name, metrics["score"])
    if version is not None:
        mlflow.set_tag("rare.model_version", f"{version.name}/{version.version}")


def evaluate(name: str, retriever: Any, inputs: str, data: Path, out: Path, params: EvaluateParams,
             corpus_enhanced: Path | None = None, queries_enhanced: Path | None = None,
             tracked: bool = False, model: Path | None = None, corpus_mode: TextMode | None = None) -> EvalMetrics:
    """All steps of one evaluation; returns the metrics written to ``out/metrics.json``.

    ``tracked``: log it into the active MLflow run (the stage, ``rare.stages.evaluate``, opens that run).
    """
    device = resolve_device(params.device)
    t0 = time.perf_counter()
    p = plan(name, retriever.meta, inputs, data, params, corpus_enhanced, queries_enhanced, corpus_mode)
    emb = embed_all(p, retriever, params, device)
    timings = {"embed_s": time.perf_counter() - t0}
    results = {}
    for pool in params.pools:
        t1 = time.perf_counter()
        results[pool] = search_pool(p, emb, pool, params, out, device)
        timings[f"search_{pool}_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    info = {"model": str(model or ""), "fingerprint": retriever.fingerprint, "device": device,
            "precision": embed.resolve_precision(params.precision, device)}
    runtime = {"timings": {k: round(v, 3) for k, v in timings.items()}, "embeddings": vars(emb.stats)}
    metrics = write_eval_outputs(p, results, out, info, runtime)
    if tracked:
        track(p, metrics, out, params, model or Path(""), retriever.fingerprint)
    log.info("%s: M-BEIR score %s in %.1f s", name,
             ", ".join(f"{pool} {value:.2f}" for pool, value in metrics["score"].items()), timings["total_s"])
    return metrics
