"""One evaluation end to end on the tiny root: run files, metrics, caching, the global pool, text views, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rare.config.evaluate import EvaluateParams
from rare.contracts import TextModes
from rare.data.input_error import DataError
from rare.data.layout import MBEIRRoot
from rare.data.records import iter_candidates, iter_queries
from rare.data.views import APPEND_PREFIX
from rare.evaluate import embed
from rare.evaluate.metrics import score_run
from rare.evaluate.protocol import evaluate, plan
from rare.model import load_retriever
from tests.fixtures.evaluate import make_enhanced_mirrors


@pytest.fixture(scope="module")
def retriever(tiny_retriever_dir: Path):  # noqa: F811
    return load_retriever(tiny_retriever_dir)


def _params(tmp_path: Path, **kw) -> EvaluateParams:
    return EvaluateParams(cache_dir=str(tmp_path / "cache"), **kw)


def test_metrics_agree_with_rare_score_on_the_run_files(tiny_evals: Path, tiny_root_session: Path):  # noqa: F811
    root = MBEIRRoot(tiny_root_session)
    for name in ("none", "both", "infer-both"):
        metrics = json.loads((tiny_evals / name / "metrics.json").read_text())
        assert set(metrics) == {"score", "local", "global"}
        for pool in ("local", "global"):
            assert set(metrics[pool]) == {dt.name for dt in root.eval_tasks("test")}
            for dt in root.eval_tasks("test"):
                m = metrics[pool][dt.name]
                scored = score_run(tiny_evals / name / "runs" / pool / f"{dt.name}.trec",
                                   root.qrels_file("test", dt), dt.ks)
                rates = scored.rates
                assert scored.queries == m["queries"] == 3
                assert [round(rates[k], 4) for k in dt.ks] == [m[f"R@{k}"] for k in dt.ks]
                assert m["headline"] == m["R@5"]
            headlines = [metrics[pool][dt]["headline"] for dt in metrics[pool]]
            assert metrics["score"][pool] == pytest.approx(np.mean(headlines), abs=1e-4)


def test_run_files_rank_whole_pools_and_reach_cross_dataset_positives(tiny_root_session: Path, retriever,
                                                                      tmp_path: Path):
    evaluate("none", retriever, "none", tiny_root_session, tmp_path / "out", _params(tmp_path, top_k=100))
    lines = (tmp_path / "out/runs/local/oven_task6.trec").read_text().splitlines()
    assert len(lines) == 3 * 6  # 3 queries x the whole 6-candidate pool (top_k > pool size)
    assert lines[0].split()[1::4] == ["Q0", "none-local"]
    assert [ln.split()[3] for ln in lines[:6]] == ["1", "2", "3", "4", "5", "6"]
    global_lines = (tmp_path / "out/runs/global/oven_task6.trec").read_text().splitlines()
    assert len(global_lines) == 3 * 55
    assert "6:999001" in {ln.split()[2] for ln in global_lines}  # OVEN's InfoSeek positive: only in the global pool
    assert "6:999001" not in {ln.split()[2] for ln in lines}


def test_global_run_equals_brute_force_over_the_local_embeddings(tiny_evals: Path, tiny_root_session: Path,
                                                                 retriever, tmp_path: Path):  # noqa: F811
    params = _params(tmp_path)
    evaluate("none", retriever, "none", tiny_root_session, tmp_path / "out", params)
    p = plan("none", retriever.meta, "none", tiny_root_session, params)
    entries = [embed.Embeddings(d) for d in (tmp_path / "cache").iterdir() if (d / "done").exists()]
    pools = [e for e in entries if json.loads((e.dir / "done").read_text())["label"].endswith(" pool")]
    ids = np.concatenate([e.ids() for e in pools])
    vecs = np.concatenate([np.asarray(e.vectors(), dtype=np.float64) for e in pools])
    assert sorted(ids.tolist()) == sorted(c.did for c in iter_candidates(p.global_pool))
    t = next(t for t in p.tasks if t.dt.name == "cirr_task7")
    q = next(e for e in entries if set(e.ids()) == {x.qid for x in iter_queries(t.queries)})
    scores = np.asarray(q.vectors(), dtype=np.float64) @ vecs.T
    run = (tmp_path / "out/runs/global/cirr_task7.trec").read_text().splitlines()
    for i, qid in enumerate(q.ids()):
        got = [ln.split()[2] for ln in run if ln.split()[0] == qid][:10]
        key = [(-scores[i, j], tuple(map(int, ids[j].split(":")))) for j in range(len(ids))]
        assert got == [ids[j] for j in sorted(range(len(ids)), key=key.__getitem__)[:10]]


def test_cache_reuse_and_inference_only_reuses_query_embeddings(tiny_root_session: Path, retriever,
                                                                tmp_path: Path):  # noqa: F811
    corpus, queries = make_enhanced_mirrors(tiny_root_session, tmp_path / "enh")
    params = _params(tmp_path)
    first = evaluate("none", retriever, "none", tiny_root_session, tmp_path / "a", params)
    info = json.loads((tmp_path / "a/info.json").read_text())
    runtime = json.loads((tmp_path / "a/runtime.json").read_text())
    # 9 query sets + 9 local pools, no separate embedding of the global pool (it is the union of the locals)
    assert runtime["embeddings"] == {"computed": 18, "reused": 0, "rows": 27 + 55} and runtime["timings"]["total_s"] > 0
    assert "timings" not in info and json.loads((tmp_path / "a/scores.json").read_text()) == first["score"]
    headline = json.loads((tmp_path / "a/headline.json").read_text())
    assert [row["task"] for row in headline] == list(first["local"])
    assert all(row["local"] == first["local"][row["task"]]["headline"] for row in headline)
    assert info["regime"] == "trained" and info["inputs"] == "none"
    again = evaluate("none", retriever, "none", tiny_root_session, tmp_path / "b", params)
    assert again == first
    assert json.loads((tmp_path / "b/runtime.json").read_text())["embeddings"]["computed"] == 0
    assert (tmp_path / "a/info.json").read_bytes() == (tmp_path / "b/info.json").read_bytes()
    run = "runs/global/webqa_task1.trec"
    assert (tmp_path / "a" / run).read_bytes() == (tmp_path / "b" / run).read_bytes()
    evaluate("infer-corpus", retriever, "corpus", tiny_root_session, tmp_path / "c", params, corpus, None)
    info = json.loads((tmp_path / "c/info.json").read_text())
    assert info["regime"] == "inference-only"
    runtime = json.loads((tmp_path / "c/runtime.json").read_text())
    assert runtime["embeddings"] == {"computed": 9, "reused": 9, "rows": 55}  # only the enhanced pools


def test_global_candidates_missing_from_local_pools_are_embedded_alone(tiny_root: Path, retriever, tmp_path: Path):
    extra = {"did": "2:777", "txt": "a lone passage", "img_path": None, "modality": "text", "src_content": None}
    with (tiny_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl").open("a") as fh:
        fh.write(json.dumps(extra) + "\n")
    evaluate("none", retriever, "none", tiny_root, tmp_path / "out", _params(tmp_path))
    runtime = json.loads((tmp_path / "out/runtime.json").read_text())
    assert runtime["embeddings"] == {"computed": 19, "reused": 0, "rows": 27 + 55 + 1}


def test_views_follow_the_variant_and_the_models_text_modes(tiny_root_session: Path, retriever, tmp_path: Path):
    corpus, queries = make_enhanced_mirrors(tiny_root_session, tmp_path / "enh")
    p = plan("both", retriever.meta, "both", tiny_root_session, _params(tmp_path), corpus, queries)
    assert (p.corpus_view.mode, p.query_view.mode) == ("append", "replace")  # the tiny model's per-side modes
    t = next(t for t in p.tasks if t.dt.name == "cirr_task7")
    assert t.queries.is_relative_to(queries) and t.pool.is_relative_to(corpus)
    items = {it.id: it for it in embed.query_items(t.queries, p.query_view)}
    for q in iter_queries(t.queries):
        instruction = p.query_view.instructions.choose(q.qid, 8, "image,text", "image", 0)
        body = q.enhanced.txt if q.enhanced.ok else q.txt  # failed enhancement falls back to the original
        assert items[q.qid].text == f"{instruction} {body}"
        assert items[q.qid].image == q.img_path
    mixed = next(t for t in p.tasks if t.dt.name == "webqa_task2")  # image+text candidates: append mode
    for it, c in zip(embed.pool_items(mixed.pool, p.corpus_view), iter_candidates(mixed.pool)):
        assert it.text == (f"{c.txt} {APPEND_PREFIX} {c.enhanced.txt}" if c.enhanced.ok else c.txt)
    raw = plan("none", retriever.meta, "none", tiny_root_session, _params(tmp_path))  # no enhanced folder given
    assert not raw.tasks[0].pool.is_relative_to(corpus) and not raw.tasks[0].queries.is_relative_to(queries)
    half = plan("corpus", retriever.meta, "corpus", tiny_root_session, _params(tmp_path), corpus, None)
    assert half.tasks[0].pool.is_relative_to(corpus) and not half.tasks[0].queries.is_relative_to(queries)


def test_embedding_resumes_after_a_crash_without_redoing_shards(tiny_root_session: Path, retriever, tmp_path: Path):
    pool = MBEIRRoot(tiny_root_session).local_pool(MBEIRRoot(tiny_root_session).eval_tasks()[0])
    view = embed.TextView(False, "replace")
    items = embed.pool_items(pool, view)
    calls = []

    class Flaky:
        embed_dim, fingerprint, meta = retriever.embed_dim, retriever.fingerprint, retriever.meta

        def collator(self):
            return retriever.collator()

        def __call__(self, batch):
            calls.append(int(batch["size"]))
            if fail and len(calls) == 2:
                raise RuntimeError("killed")
            return retriever(batch)

    opts = dict(batch_size=2, shard_rows=2)
    fail = True
    with pytest.raises(RuntimeError):
        embed.embed(Flaky(), lambda: items, "k", tmp_path / "c", tiny_root_session, **opts)
    assert calls == [2, 2]
    fail = False
    stats = embed.EmbedStats()
    resumed = embed.embed(Flaky(), lambda: items, "k", tmp_path / "c", tiny_root_session, stats=stats, **opts)
    assert calls == [2, 2, 2, 2] and stats.rows == 4  # shard 1 of 3 was kept
    straight = embed.embed(retriever, lambda: items, "k2", tmp_path / "c", tiny_root_session, batch_size=6)
    np.testing.assert_allclose(resumed.vectors(), straight.vectors(), atol=2e-3)
    assert resumed.ids().tolist() == [it.id for it in items]
    assert not (tmp_path / "c/k.parts").exists()


def test_qrels_that_disagree_with_the_queries_fail_loudly(tiny_root: Path, retriever, tmp_path: Path):
    qrels = tiny_root / "qrels/test/mbeir_cirr_task7_test_qrels.txt"
    qrels.write_text("".join(qrels.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(DataError, match="qrels and queries disagree") as err:
        plan("none", retriever.meta, "none", tiny_root, _params(tmp_path))
    assert str(qrels) in str(err.value)


def test_evaluation_feeds_the_model_as_its_meta_says(tiny_root_session: Path, retriever, tmp_path: Path):
    """Text modes and the instruction seed have one source: the model's meta.json, which training wrote."""
    meta = retriever.meta.model_copy(update={"instruction_seed": 3,
                                             "text_mode": TextModes(corpus="prepend", query="append")})
    p = plan("none", meta, "none", tiny_root_session, _params(tmp_path))
    assert p.query_view.instruction_seed == 3 and p.query_view.mode == "append" and p.corpus_view.mode == "prepend"
    assert "instruction_seed" not in EvaluateParams.model_fields


def test_missing_inputs_are_named(tiny_root: Path, retriever, tmp_path: Path):
    import typer

    from rare.stages.command import enhanced_for

    with pytest.raises(typer.BadParameter, match="needs enhanced data: pass --corpus-enhanced"):
        enhanced_for("corpus", None, None)  # `rare evaluate` checks what the input variant reads
    shutil.rmtree(tiny_root / "cand_pool/global")
    with pytest.raises(DataError, match="missing global pool"):
        plan("none", retriever.meta, "none", tiny_root, _params(tmp_path))
    plan("none", retriever.meta, "none", tiny_root, _params(tmp_path, pools=["local"]))  # fine without it


def test_cache_key_covers_model_data_view_precision_and_code(monkeypatch: pytest.MonkeyPatch):
    view = embed.TextView(False, "replace")
    base = ("fp", "data", "candidate", view, "fp32")
    variants = [base, ("fp2", *base[1:]), ("fp", "data2", *base[2:]), ("fp", "data", "query", view, "fp32"),
                (*base[:3], embed.TextView(True, "replace"), "fp32"), (*base[:3], embed.TextView(True, "append"), "fp32"),
                (*base[:4], "bf16")]
    keys = {embed.cache_key(*v) for v in variants}
    assert len(keys) == len(variants)
    # the original text ignores the mode, so both modes share one entry when enhancement is off
    assert embed.cache_key(*base[:3], embed.TextView(False, "append"), "fp32") == embed.cache_key(*base)
    embed.code_version.cache_clear()
    monkeypatch.setattr(embed, "EMBEDDING_CODE", ("rare.data.views",))
    try:
        assert embed.cache_key(*base) not in keys  # other code, other entry
    finally:
        embed.code_version.cache_clear()
