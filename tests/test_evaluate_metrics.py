"""M-BEIR hit-rate Recall@k, run files, and `rare score` cross-checked against ranx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rare.cli import app
from rare.data.input_error import DataError
from rare.evaluate.metrics import hit_rates, mbeir_score, score_run, task_metrics
from rare.evaluate.runfile import read_run, write_run
from rare.mbeir import DatasetTask


def test_hit_if_any_positive_in_top_k():
    run = {"1:1": ["5:1", "5:2", "5:3"], "1:2": ["5:9", "5:8", "5:2"], "1:3": ["5:4"]}
    qrels = {"1:1": {"5:3", "5:7"}, "1:2": {"5:7"}, "1:3": {"5:4"}, "1:4": {"5:1"}}  # 1:4 absent from the run
    assert hit_rates(run, qrels, [1, 2, 3]) == {1: 25.0, 2: 25.0, 3: 50.0}


def test_did_equal_to_qid_is_a_hit_not_a_self_match():
    assert hit_rates({"9:5": ["9:5", "9:6"]}, {"9:5": {"9:5"}}, [1]) == {1: 100.0}


def test_headline_is_r10_for_fashion_and_score_is_mean_of_headlines():
    run = {str(i): [f"d{j}" for j in range(50)] for i in range(4)}
    qrels = {"0": {"d0"}, "1": {"d7"}, "2": {"d15"}, "3": {"unreachable"}}
    fashion = task_metrics(run, qrels, DatasetTask("fashioniq", 7))
    assert {k: fashion[k] for k in ("R@10", "R@20", "R@50", "headline", "queries")} == {
        "R@10": 50.0, "R@20": 75.0, "R@50": 75.0, "headline": 50.0, "queries": 4.0}
    # one positive each: recall equals the hit rate; ranks 1 and 8 give MRR (1 + 1/8) / 4
    assert [fashion[f"recall@{k}"] for k in (10, 20, 50)] == [50.0, 75.0, 75.0]
    assert fashion["MRR@10"] == pytest.approx((1 + 1 / 8) / 4 * 100)
    assert fashion["nDCG@10"] == pytest.approx((1 + 1 / np.log2(9)) / 4 * 100)
    cirr = task_metrics(run, qrels, DatasetTask("cirr", 7))
    assert (cirr["R@1"], cirr["R@5"], cirr["R@10"], cirr["headline"]) == (25.0, 25.0, 50.0, 25.0)
    assert mbeir_score({"a": fashion, "b": cirr}) == 37.5


def test_run_file_round_trip_and_errors(tmp_path: Path):
    path = tmp_path / "r.trec"
    dids = np.array([["9:1", "9:2"], ["9:3", "9:1"]])
    write_run(path, ["1:1", "1:2"], dids, np.array([[0.5, 0.25], [0.125, -1.0]], dtype=np.float32), "x")
    assert path.read_text().splitlines()[0] == "1:1 Q0 9:1 1 0.5 x"
    assert read_run(path) == {"1:1": ["9:1", "9:2"], "1:2": ["9:3", "9:1"]}
    # ranks, not line order, define the ranking; a 7th column (UniIR's task id) is accepted
    path.write_text("q Q0 b 2 0.1 r 7\nq Q0 a 1 0.2 r 7\n")
    assert read_run(path) == {"q": ["a", "b"]}
    for bad, cause in [("q Q0 a 1 0.2\n", "got 5 columns"), ("q Q0 a one 0.2 r\n", "must be an integer"),
                       ("q Q0 a 1 0.2 r\nq Q0 b 1 0.1 r\n", "rank 1 twice"),
                       ("q Q0 a 1 0.2 r\nq Q0 a 2 0.1 r\n", "retrieves a twice")]:
        path.write_text(bad)
        with pytest.raises(DataError, match=cause) as err:
            read_run(path)
        assert f"{path}:" in str(err.value)


def _random_case(tmp_path: Path, seed: int) -> tuple[Path, Path, dict]:
    rng = np.random.default_rng(seed)
    nq, pool = 60, [f"7:{i}" for i in range(40)]
    qrels_path, run_path = tmp_path / "q.txt", tmp_path / "r.trec"
    qrels = {}
    with qrels_path.open("w") as fh:
        for q in range(nq):
            pos = rng.choice(pool, size=rng.integers(1, 4), replace=False)
            if q % 9 == 0:
                pos = np.append(pos, "6:999")  # cross-dataset positive, never retrieved
            qrels[f"7:{q}"] = set(pos.tolist())
            fh.writelines(f"7:{q} 0 {d} 1 7\n" for d in pos)
    qids = [f"7:{q}" for q in range(nq) if q % 11 != 5]  # some queries are missing from the run: misses
    dids = np.array([rng.permutation(pool)[:20] for _ in qids])
    scores = np.sort(rng.random((len(qids), 20)).astype(np.float32), axis=1)[:, ::-1]
    write_run(run_path, qids, dids, scores, "test")
    return run_path, qrels_path, qrels


@pytest.mark.filterwarnings("ignore:unsafe cast")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_matches_ranx_hit_rate(tmp_path: Path, seed: int):
    from ranx import Qrels, Run, evaluate

    run_path, qrels_path, qrels = _random_case(tmp_path, seed)
    scored = score_run(run_path, qrels_path, [1, 5, 10, 20])
    ours = scored.rates
    assert scored.queries == 60
    assert [w.split(": ", 1)[1] for w in scored.warnings] == [
        "5 of 60 qrels queries are missing from the run (counted as misses), e.g. '7:16'"]
    ranx_qrels = Qrels.from_dict({q: {d: 1 for d in ds} for q, ds in qrels.items()})
    ranx_run = Run.from_file(str(run_path), kind="trec")
    theirs = evaluate(ranx_qrels, ranx_run, [f"hit_rate@{k}" for k in (1, 5, 10, 20)], make_comparable=True)
    for k in (1, 5, 10, 20):
        assert ours[k] == pytest.approx(theirs[f"hit_rate@{k}"] * 100, abs=1e-9)
    assert 0 < ours[5] < ours[20] < 100


@pytest.mark.filterwarnings("ignore:unsafe cast")
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rank_metrics_match_ranx_per_query(tmp_path: Path, seed: int):
    """MRR@10, nDCG@10 and recall@k, per query and averaged, against ranx on random runs with 1-4 positives
    (some unreachable, some queries missing from the run)."""
    from ranx import Qrels, Run, evaluate

    from rare.data.qrels import read_qrels
    from rare.evaluate.metrics import per_query

    run_path, qrels_path, qrels = _random_case(tmp_path, seed)
    ours = per_query(read_run(run_path), read_qrels(qrels_path), [1, 5, 20])
    ranx_qrels = Qrels.from_dict({q: {d: 1 for d in ds} for q, ds in qrels.items()})
    ranx_run = Run.from_file(str(run_path), kind="trec")
    names = {"MRR@10": "mrr@10", "nDCG@10": "ndcg@10", "recall@1": "recall@1", "recall@5": "recall@5",
             "recall@20": "recall@20"}
    theirs = evaluate(ranx_qrels, ranx_run, list(names.values()), make_comparable=True, return_mean=False)
    order = list(read_qrels(qrels_path))
    ranx_order = list(ranx_qrels.keys())
    for ours_name, ranx_name in names.items():
        by_qid = dict(zip(ranx_order, theirs[ranx_name]))
        np.testing.assert_allclose(ours[ours_name], [by_qid[q] * 100 for q in order], atol=1e-9)
        assert ours[ours_name].mean() > 0
    assert (ours["recall@20"] <= ours["R@20"]).all() and (ours["recall@20"] < ours["R@20"]).any()


def test_score_cli(tmp_path: Path):
    run_path, qrels_path, _ = _random_case(tmp_path, 0)
    expected = score_run(run_path, qrels_path, [3, 7]).rates
    result = CliRunner().invoke(app, ["score", "--run", str(run_path), "--qrels", str(qrels_path),
                                      "--k", "3", "--k", "7", "--json"])
    assert result.exit_code == 0, result.output
    import json

    out = json.loads(result.stdout)
    scored = score_run(run_path, qrels_path, [3, 7])
    assert out == {"queries": 60, "R@3": round(expected[3], 4), "R@7": round(expected[7], 4),
                   **{m: round(v, 4) for m, v in scored.more.items()}}
    assert set(scored.more) == {"recall@3", "recall@7", "MRR@10", "nDCG@10"}
    bad = tmp_path / "bad.trec"
    bad.write_text("q Q0 a\n")
    result = CliRunner().invoke(app, ["score", "--run", str(bad), "--qrels", str(qrels_path)])
    assert result.exit_code == 1
    assert f"{bad}:1" in result.output
