"""The report: table with deltas, findings verdicts, bar data, gallery, and logging to the parent MLflow run."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rare.config.report import ReportParams
from rare.data.input_error import DataError
from rare.data.layout import MBEIRRoot
from rare.report import compose
from rare.report.evidence import load_samples, split_seeds
from rare.report.findings import CONTRADICTED, INCONCLUSIVE, NOT_ASSESSABLE, SUPPORTED, assess
from rare.report.gallery import pick_examples
from rare.report.stats import Bootstrap
from rare.report.table import load_evaluations, markdown_table, summary
from rare.stages import EVALUATIONS, VARIANTS  # the row order and the sides the pipeline hands the report

DTS = {"emblemkb_task6": 5, "emblemkb_task8": 5, "tweakset_task7": 10, "glyphcaps_task0": 5}
ROWS = {  # name: (inputs, regime, [emblemkb6, emblemkb8, tweakset7, glyphcaps0]) -- paper-like numbers
    "none": ("none", "trained", [20, 30, 10, 50]),
    "corpus": ("corpus", "trained", [30, 40, 11, 52]),
    "query": ("query", "trained", [21, 31, 25, 50]),
    "both": ("both", "trained", [32, 42, 26, 53]),
    "infer-corpus": ("corpus", "inference-only", [24, 33, 9, 49]),
    "infer-query": ("query", "inference-only", [20, 30, 14, 50]),
    "infer-both": ("both", "inference-only", [25, 34, 15, 49]),
}
QUERIES = 200  # per dataset-task: a value v% is the first 2v queries hit at rank 1

build_report = partial(compose.build_report, sides={v: spec.sides for v, spec in VARIANTS.items()})


def write_qrels(data: Path) -> Path:
    """Qrels and text-only query files (the audit reads their texts) for every dataset-task of DTS."""
    for dt in DTS:
        path = data / "qrels/test" / f"mbeir_{dt}_test_qrels.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"9:{i} 0 p{i} 1 6\n" for i in range(QUERIES)))
        dataset, task = dt.rsplit("_task", 1)
        queries = data / "query/test" / f"mbeir_{dataset}_task{task}_test.jsonl"
        queries.parent.mkdir(parents=True, exist_ok=True)
        queries.write_text("".join(json.dumps({
            "qid": f"9:{i}", "query_txt": f"query {i}", "query_img_path": None, "query_modality": "text",
            "query_src_content": None, "pos_cand_list": [f"9:{i}"], "neg_cand_list": [], "task_id": int(task)})
            + "\n" for i in range(QUERIES)))
    return data


def write_eval(evals: Path, name: str, inputs: str, regime: str, values: list[float], pools=("local",),
               model_variant: str | None = None) -> None:
    """metrics.json, info.json and run files that agree: in each dataset-task the first ``2 * v`` queries
    rank their positive first (a hit), the rest retrieve only non-positives."""
    d = evals / name
    d.mkdir(parents=True)
    metrics: dict = {"score": {}}
    for pool in pools:
        metrics[pool] = {dt: {f"R@{k}": v, "headline": v, "queries": float(QUERIES)}
                         for (dt, k), v in zip(DTS.items(), values)}
        metrics["score"][pool] = float(np.mean(values))
        for dt, v in zip(DTS, values):
            run = d / "runs" / pool / f"{dt}.trec"
            run.parent.mkdir(parents=True, exist_ok=True)
            hits = round(v * QUERIES / 100)
            run.write_text("".join(f"9:{i} Q0 {'p' if i < hits else 'n'}{i} 1 1.0 x\n9:{i} Q0 m{i} 2 0.5 x\n"
                                   for i in range(QUERIES)))
    variant = model_variant or ("none" if regime != "trained" else inputs)
    info = {"name": name, "inputs": inputs, "regime": regime, "model_variant": variant, "split": "test",
            "data": "data/raw", "dataset_tasks": list(DTS), "headline": {dt: f"R@{k}" for dt, k in DTS.items()}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "info.json").write_text(json.dumps(info))


def judged(evals: Path, data: Path, permutations: int = 0) -> list:
    rows, replicas = split_seeds(load_evaluations(evals, EVALUATIONS))
    boot = Bootstrap(load_samples(replicas, data, "local"), resamples=1000, seed=0)
    return assess(rows, boot, permutations)


@pytest.fixture
def paper_like(tmp_path: Path) -> Path:
    write_qrels(tmp_path / "data")
    for name, (inputs, regime, values) in ROWS.items():
        write_eval(tmp_path / "evals", name, inputs, regime, values)
    return tmp_path / "evals"


def test_a_damaged_info_file_is_one_clear_error(paper_like: Path):
    info = paper_like / "none/info.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "regime": "retrained"}))
    with pytest.raises(DataError, match=r"none/info.json: regime: Input should be 'zero-shot', 'trained'"):
        load_evaluations(paper_like, EVALUATIONS)


def test_table_rows_columns_and_deltas(paper_like: Path):
    evals = load_evaluations(paper_like, EVALUATIONS)
    assert [e.name for e in evals] == list(ROWS)
    lines = markdown_table(evals, "local").splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["evaluation", "regime", "emblemkb_task6", "emblemkb_task8", "**knowledge-intensive mean**",
                      "tweakset_task7", "**compositional mean**", "glyphcaps_task0", "**plain mean**",
                      "**M-BEIR score**"]
    base = [c.strip() for c in lines[2].strip("|").split("|")]
    assert base == ["**none**", "trained", "20.0", "30.0", "25.0", "10.0", "10.0", "50.0", "50.0", "27.5"]
    corpus = [c.strip() for c in lines[3].strip("|").split("|")]
    assert corpus[2:5] == ["30.0 (+10.0)", "40.0 (+10.0)", "35.0 (+10.0)"]
    assert corpus[-1] == "33.2 (+5.8)"
    infer_q = [c.strip() for c in lines[7].strip("|").split("|")]
    assert infer_q[:2] == ["infer-query", "inference-only"] and infer_q[5] == "14.0 (+4.0)"
    rows = summary(evals, "local")
    assert rows["both"] == {"knowledge-intensive": 37.0, "compositional": 26.0, "plain": 53.0, "M-BEIR score": 38.25}


def test_zero_shot_row_comes_first_is_no_baseline_and_leaves_the_findings_alone(paper_like: Path, tmp_path: Path):
    data = paper_like.parent / "data"
    findings = judged(paper_like, data)
    write_eval(paper_like, "zero-shot", "none", "zero-shot", [5, 6, 40, 30], model_variant="zero-shot")
    evals = load_evaluations(paper_like, EVALUATIONS)
    assert [e.name for e in evals] == ["zero-shot", *ROWS]
    lines = markdown_table(evals, "local").splitlines()
    zero = [c.strip() for c in lines[2].strip("|").split("|")]
    assert zero[:3] == ["zero-shot", "zero-shot", "5.0 (-15.0)"]  # deltas still against the trained none
    assert judged(paper_like, data) == findings
    out = build_report(paper_like, tmp_path / "report", data, ReportParams(gallery_compare="absent"), order=EVALUATIONS)
    assert "zero-shot (zero-shot)" in out.read_text() and (tmp_path / "report/scores.png").stat().st_size > 0


def test_findings_supported_on_paper_like_numbers(paper_like: Path):
    findings = judged(paper_like, paper_like.parent / "data", permutations=2000)
    assert [f.verdict for f in findings] == [SUPPORTED, SUPPORTED, SUPPORTED]
    assert findings[0].evidence.startswith("corpus vs none: knowledge-intensive +10.0 [")
    labels = [label for label, _ in findings[0].needs]
    assert labels == ["corpus vs none: knowledge-intensive", "knowledge-intensive gain minus compositional gain",
                      "knowledge-intensive gain minus plain gain"]
    chiefly = dict(findings[0].needs)["knowledge-intensive gain minus plain gain"]
    assert chiefly.estimate == pytest.approx(10.0 - 2.0) and chiefly.lo > 0 and chiefly.p < 0.01
    assert dict(findings[1].needs)["query gain minus corpus gain on compositional"].estimate == pytest.approx(14.0)
    assert findings[2].needs[2][0] == "both vs infer-both: M-BEIR score"
    assert findings[2].needs[2][1].estimate == pytest.approx(7.5)
    net = dict(findings[0].net)["corpus vs none: M-BEIR score"]
    assert net.estimate == pytest.approx(np.mean([10, 10, 1, 2])) and net.sign() == 1


# name -> (values changed from ROWS, expected verdicts of the three findings)
CASES = {
    # corpus gains as much on plain as on knowledge: the "chiefly" difference contains zero
    "chiefly not shown": ({"corpus": [30, 40, 11, 60]}, [INCONCLUSIVE, SUPPORTED, SUPPORTED]),
    # corpus hurts knowledge-intensive queries significantly
    "opposite sign": ({"corpus": [5, 12, 11, 52]}, [CONTRADICTED, SUPPORTED, CONTRADICTED]),
    # query's compositional gain is a query or two: inside the noise (and then query vs infer-query too)
    "small gain": ({"query": [21, 31, 11, 50]}, [SUPPORTED, INCONCLUSIVE, INCONCLUSIVE]),
    # inference-only beats training for 'both': one needed difference significantly negative
    "inference wins": ({"infer-both": [40, 50, 35, 60]}, [SUPPORTED, SUPPORTED, CONTRADICTED]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_verdicts_follow_the_intervals(tmp_path: Path, case: str):
    changed, expected = CASES[case]
    data = write_qrels(tmp_path / "data")
    for name, (inputs, regime, values) in ROWS.items():
        write_eval(tmp_path / "evals", name, inputs, regime, changed.get(name, values))
    assert [f.verdict for f in judged(tmp_path / "evals", data)] == expected


def test_verdict_rules_table():
    from rare.report.findings import verdict
    from rare.report.stats import Interval

    up, zero, down = Interval(2, 1, 3), Interval(1, -1, 3), Interval(-2, -3, -1)
    assert [verdict(ivs) for ivs in ([up, up], [up, zero], [up, down], [zero, down], [])] == [
        SUPPORTED, INCONCLUSIVE, CONTRADICTED, CONTRADICTED, INCONCLUSIVE]


def test_findings_not_assessable(tmp_path: Path):
    data = write_qrels(tmp_path / "data")
    write_eval(tmp_path / "b", "none", "none", "trained", ROWS["none"][2])
    findings = judged(tmp_path / "b", data)
    assert [f.verdict for f in findings] == [NOT_ASSESSABLE] * 3
    assert "needs the trained 'none' and 'corpus'" in findings[0].evidence


def test_seed_replicas_join_their_row(paper_like: Path, tmp_path: Path):
    """corpus@s1 and corpus@s2 join 'corpus': every cell of its row is the mean across seeds, consistent with
    its deltas, the seed table gives mean ± sd (both checked by hand), and the intervals resample seeds as well
    as queries."""
    from rare.report.stats import Contrast, mean_of

    data = paper_like.parent / "data"
    seeds = np.array([ROWS["corpus"][2], [24, 33, 12, 51], [33, 44, 13, 50]], dtype=float)  # seed 0 first
    write_eval(paper_like, "corpus@s1", "corpus", "trained", list(seeds[1]))
    write_eval(paper_like, "corpus@s2", "corpus", "trained", list(seeds[2]))
    rows, replicas = split_seeds(load_evaluations(paper_like, EVALUATIONS))
    assert [e.name for e in rows] == list(ROWS)
    assert [e.name for e in replicas["corpus"]] == ["corpus", "corpus@s1", "corpus@s2"]
    report = build_report(paper_like, tmp_path / "r", data, ReportParams(gallery_compare="absent", permutations=0), order=EVALUATIONS)
    text = report.read_text()
    base = np.array(ROWS["none"][2], dtype=float)
    cells = seeds.mean(axis=0)                    # per dataset-task: [29, 39, 12, 51], not seed 0's [30, 40, 11, 52]
    knowledge, compositional, plain = cells[:2].mean(), cells[2], cells[3]
    score = cells.mean()
    intervals = json.loads((tmp_path / "r/intervals.json").read_text())
    assert intervals["method"]["seeds"]["corpus"] == 3
    deltas = intervals["deltas"]["local"]["corpus"]
    row = next(line for line in text.splitlines() if line.startswith("| corpus | trained |"))
    for cell, value, col in zip(row.strip("| ").split(" | ")[2:], [*cells[:2], knowledge, cells[2], compositional,
                                                                    cells[3], plain, score],
                                ["emblemkb_task6", "emblemkb_task8", "knowledge-intensive", "tweakset_task7",
                                 "compositional", "glyphcaps_task0", "plain", "M-BEIR score"]):
        assert cell.startswith(f"{value:.1f} ("), (col, cell)          # the cell is the seed mean ...
        iv = deltas[col]
        assert cell == f"{value:.1f} ({iv['estimate']:+.1f} [{iv['lo']:+.1f}, {iv['hi']:+.1f}])"
    assert deltas["knowledge-intensive"]["estimate"] == pytest.approx(knowledge - base[:2].mean())  # ... as the delta is
    assert deltas["M-BEIR score"]["estimate"] == pytest.approx(score - base.mean())
    per_seed = {"knowledge-intensive": seeds[:, :2].mean(axis=1), "compositional": seeds[:, 2], "plain": seeds[:, 3],
                "M-BEIR score": seeds.mean(axis=1)}
    hand = " | ".join(f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" for v in per_seed.values())
    assert f"| corpus | 3 | {hand} |" in text
    summary_json = json.loads((tmp_path / "r/summary.json").read_text())
    assert summary_json["scores"]["local"]["corpus"]["M-BEIR score"] == pytest.approx(score)
    k = deltas["knowledge-intensive"]
    single = Bootstrap(load_samples({"none": replicas["none"], "corpus": replicas["corpus"][:1]}, data, "local"),
                       2000, 0)
    alone = single.interval(Contrast("corpus", "none", mean_of(["emblemkb_task6", "emblemkb_task8"])))
    assert k["hi"] - k["lo"] > alone.hi - alone.lo  # seed variance widens the interval


def test_bad_evaluation_dirs_are_named(tmp_path: Path):
    with pytest.raises(DataError, match="no evaluations found"):
        load_evaluations(tmp_path, EVALUATIONS)
    (tmp_path / "x").mkdir()
    (tmp_path / "x/metrics.json").write_text("{}")
    with pytest.raises(DataError, match="info.json is missing") as err:
        load_evaluations(tmp_path, EVALUATIONS)
    assert str(tmp_path / "x") in str(err.value)


def test_report_from_real_evaluations(tiny_evals: Path, tiny_root_session: Path, tmp_path: Path):  # noqa: F811
    corpus, queries = tiny_evals.parent / "enhanced/corpus", tiny_evals.parent / "enhanced/queries"
    out = tmp_path / "report"
    report = build_report(tiny_evals, out, tiny_root_session, ReportParams(gallery_queries=4), corpus, queries,
                          order=EVALUATIONS)
    text = report.read_text()
    assert "## Local pool" in text and "## Global pool" in text and "![gallery](gallery.png)" in text
    assert text.count("| infer-both | inference-only |") == 2
    assert "**NOT ASSESSABLE**: Corpus enhancement" in text  # no trained 'corpus' row in this matrix
    for png in ("scores.png", "gallery.png"):
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.width > 600 and img.height > 300
    with (out / "scores_local.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["evaluation"] for r in rows] == ["none", "both", "infer-both"]
    metrics = json.loads((tiny_evals / "both/metrics.json").read_text())
    assert list(rows[0]) == ["evaluation", "regime", "knowledge_intensive", "compositional", "plain", "score"]
    assert float(rows[1]["score"]) == pytest.approx(metrics["score"]["local"], abs=1e-3)
    summary_json = json.loads((out / "summary.json").read_text())
    assert summary_json["evaluations"]["infer-both"] == {"regime": "inference-only", "inputs": "both",
                                                         "model_variant": "none"}


def test_gallery_prefers_queries_the_enhanced_model_wins(tiny_evals: Path, tiny_root_session: Path):  # noqa: F811
    evals = {e.name: e for e in load_evaluations(tiny_evals, EVALUATIONS)}
    examples = pick_examples(evals["none"], evals["both"], MBEIRRoot(tiny_root_session), 27, 5, seed=0)
    assert len(examples) == 27  # every test query, each once
    assert len({(e.dt, e.qid) for e in examples}) == 27
    tiers = [0 if (e.positives & set(e.other_top)) and not (e.positives & set(e.base_top)) else
             1 if e.positives & set(e.other_top) else 2 for e in examples]
    assert tiers == sorted(tiers)
    first = pick_examples(evals["none"], evals["both"], MBEIRRoot(tiny_root_session), 3, 5, seed=0)
    assert first == examples[:3]  # deterministic for a seed


def test_report_logged_on_the_parent_run(paper_like: Path, tiny_root_session: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch):
    from mlflow.tracking import MlflowClient

    from rare.config.tracking import TrackingParams
    from rare.stages.report import log_report

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RARE_PARENT_RUN_ID", raising=False)
    out = tmp_path / "report"
    build_report(paper_like, out, paper_like.parent / "data", ReportParams(permutations=0, gallery_compare="absent"),
                 order=EVALUATIONS)
    tracking = TrackingParams(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                              artifact_root=str(tmp_path / "mlruns/artifacts"))
    run_id = log_report(out, tracking, tmp_path / "params.yaml")
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags["rare.role"] == "pipeline"
    assert run.data.metrics["report/both/local/M-BEIR_score"] == pytest.approx(38.25)
    assert run.data.metrics["report_ci/both/local/M-BEIR_score/estimate"] == pytest.approx(38.25 - 27.5)
    assert run.data.metrics["report_ci/both/local/M-BEIR_score/lo"] > 0
    names = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/scores.png", "report/scores_local.csv", "report/summary.json",
            "report/intervals.json"} <= names


def test_every_audit_row_agrees_with_the_run_files(tiny_evals: Path, tiny_root_session: Path,  # noqa: F811
                                                   tmp_path: Path):
    import pyarrow.parquet as pq

    from rare.data.qrels import read_qrels
    from rare.data.records import iter_candidates, iter_queries
    from rare.evaluate.runfile import read_run
    from rare.mbeir import DatasetTask

    corpus, queries = tiny_evals.parent / "enhanced/corpus", tiny_evals.parent / "enhanced/queries"
    out = tmp_path / "report"
    text = build_report(tiny_evals, out, tiny_root_session, ReportParams(gallery_queries=2, audit_top=2,
                                                                          permutations=0), corpus, queries,
                        order=EVALUATIONS).read_text()
    audit = pq.read_table(out / "audit.parquet").to_pylist()
    root = MBEIRRoot(tiny_root_session)
    dts = root.eval_tasks("test")
    assert len(audit) == 2 * 3 * len(dts)  # both and infer-both, 3 queries per dataset-task
    enhanced_q = {q.qid: q for dt in dts for q in iter_queries(queries / root.query_file(
        "test", dt.dataset, dt.task_id).relative_to(root.path))}
    for row in audit:
        dt = DatasetTask.parse(row["dataset_task"])
        positives = read_qrels(root.qrels_file("test", dt))[row["qid"]]
        for col, name in (("rank_baseline", "none"), ("rank", row["evaluation"])):
            ranking = read_run(tiny_evals / name / "runs/local" / f"{dt.name}.trec").get(row["qid"], [])
            first = next((i for i, d in enumerate(ranking, 1) if d in positives), None)
            assert row[col] == first
        depth = 50
        assert row["rank_change"] == (row["rank_baseline"] or depth + 1) - (row["rank"] or depth + 1)
        q = enhanced_q[row["qid"]]
        assert row["query_text"] == q.txt
        assert row["enhanced_query_text"] == (q.enhanced.txt if q.enhanced.ok else "")
        pool = corpus / root.local_pool(dt).relative_to(root.path)
        ok = {c.did for c in iter_candidates(pool) if c.enhanced is not None and c.enhanced.ok}
        assert row["positive_enhanced"] == bool(positives & ok)
    assert any(r["positive_enhanced"] for r in audit) and any(r["enhanced_query_text"] for r in audit)
    assert "## Per-query audit" in text


def test_enhancement_section_names_each_cause(tmp_path):
    """A backend that enhanced nothing (the stand-in on imported data) is reported with its full cause."""
    import json as _json

    from rare.report.compose import _enhancement_note

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "enhance_summary.json").write_text(_json.dumps({
        "ok": 0, "enhanceable": 3, "failed": 3, "skipped": 2, "backend": "standin", "model": "m",
        "failures_by_cause": {"stand_in": 3}}))
    (corpus / "enhance_failures.jsonl").write_text("".join(
        _json.dumps({"cause": "stand_in: no scene annotation; the stand-in only works on the embedded benchmark"}) + "\n"
        for _ in range(3)))
    lines = _enhancement_note(corpus, tmp_path / "absent")
    assert lines[:3] == ["", "## Enhancement", ""] and len(lines) == 4
    assert lines[3] == ("- corpus: 0 of 3 routed items enhanced by standin/m, 3 not enhanced (3 x stand_in: no scene "
                        "annotation; the stand-in only works on the embedded benchmark); 2 text-only left as is.")
    assert _enhancement_note(None, None) == []
