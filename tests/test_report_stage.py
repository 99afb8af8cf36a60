"""The report: table with deltas, findings verdicts, bar data, gallery, and logging to the parent MLflow run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rare.config.report import ReportParams
from rare.data.errors import DataError
from rare.data.layout import MBEIRRoot
from rare.report.findings import NOT_ASSESSABLE, NOT_REPRODUCED, PARTLY, REPRODUCED, assess
from rare.report.gallery import pick_examples
from rare.report.stage import build_report
from rare.report.table import load_evaluations, markdown_table, summary

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


def write_eval(evals: Path, name: str, inputs: str, regime: str, values: list[float], pools=("local",)) -> None:
    d = evals / name
    d.mkdir(parents=True)
    metrics: dict = {"score": {}}
    for pool in pools:
        metrics[pool] = {dt: {f"R@{k}": v, "headline": v, "queries": 100.0} for (dt, k), v in zip(DTS.items(), values)}
        metrics["score"][pool] = float(np.mean(values))
    info = {"name": name, "inputs": inputs, "regime": regime, "model_variant": "none" if regime != "trained" else inputs,
            "split": "test", "data": "data/raw", "dataset_tasks": list(DTS), "headline": {dt: f"R@{k}" for dt, k in DTS.items()}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "info.json").write_text(json.dumps(info))


@pytest.fixture
def paper_like(tmp_path: Path) -> Path:
    for name, (inputs, regime, values) in ROWS.items():
        write_eval(tmp_path / "evals", name, inputs, regime, values)
    return tmp_path / "evals"


def test_a_damaged_info_file_is_one_clear_error(paper_like: Path):
    info = paper_like / "none/info.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "regime": "retrained"}))
    with pytest.raises(DataError, match=r"none/info.json: regime: Input should be 'zero-shot', 'trained'"):
        load_evaluations(paper_like)


def test_table_rows_columns_and_deltas(paper_like: Path):
    evals = load_evaluations(paper_like)
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
    findings = assess(load_evaluations(paper_like), "local", 1.0)
    write_eval(paper_like, "zero-shot", "none", "zero-shot", [5, 6, 40, 30])
    evals = load_evaluations(paper_like)
    assert [e.name for e in evals] == ["zero-shot", *ROWS]
    lines = markdown_table(evals, "local").splitlines()
    zero = [c.strip() for c in lines[2].strip("|").split("|")]
    assert zero[:3] == ["zero-shot", "zero-shot", "5.0 (-15.0)"]  # deltas still against the trained none
    assert assess(evals, "local", 1.0) == findings
    out = build_report(paper_like, tmp_path / "report", tmp_path, ReportParams(gallery_compare="absent"))
    assert "zero-shot (zero-shot)" in out.read_text() and (tmp_path / "report/scores.png").stat().st_size > 0


def test_findings_reproduced_on_paper_like_numbers(paper_like: Path):
    findings = assess(load_evaluations(paper_like), "local", min_gain=1.0)
    assert [f.verdict for f in findings] == [REPRODUCED, REPRODUCED, REPRODUCED]
    assert "knowledge-intensive +10.0" in findings[0].evidence
    assert "query vs none on compositional +15.0" in findings[1].evidence
    assert "both vs infer-both: M-BEIR score +7.5" in findings[2].evidence


def test_findings_not_reproduced_partly_and_not_assessable(tmp_path: Path):
    rows = dict(ROWS)
    rows["corpus"] = ("corpus", "trained", [21, 31, 11, 60])  # corpus helps plain most
    rows["query"] = ("query", "trained", [21, 31, 11.5, 50])  # query barely beats corpus on compositional
    rows["infer-both"] = ("both", "inference-only", [33, 43, 27, 54])  # inference-only beats training here
    for name, (inputs, regime, values) in rows.items():
        write_eval(tmp_path / "a", name, inputs, regime, values)
    verdicts = [f.verdict for f in assess(load_evaluations(tmp_path / "a"), "local", 1.0)]
    assert verdicts == [NOT_REPRODUCED, NOT_REPRODUCED, PARTLY]
    write_eval(tmp_path / "b", "none", "none", "trained", ROWS["none"][2])
    findings = assess(load_evaluations(tmp_path / "b"), "local", 1.0)
    assert [f.verdict for f in findings] == [NOT_ASSESSABLE] * 3
    assert "needs the trained 'none' and 'corpus'" in findings[0].evidence


def test_min_gain_filters_noise(paper_like: Path):
    findings = assess(load_evaluations(paper_like), "local", min_gain=20.0)
    assert [f.verdict for f in findings] == [NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED]


def test_bad_evaluation_dirs_are_named(tmp_path: Path):
    with pytest.raises(DataError, match="no evaluations found"):
        load_evaluations(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x/metrics.json").write_text("{}")
    with pytest.raises(DataError, match="info.json is missing") as err:
        load_evaluations(tmp_path)
    assert str(tmp_path / "x") in str(err.value)


def test_report_from_real_evaluations(tiny_evals: Path, tiny_root_session: Path, tmp_path: Path):  # noqa: F811
    corpus, queries = tiny_evals.parent / "enhanced/corpus", tiny_evals.parent / "enhanced/queries"
    out = tmp_path / "report"
    report = build_report(tiny_evals, out, tiny_root_session, ReportParams(gallery_queries=4), corpus, queries)
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
    evals = {e.name: e for e in load_evaluations(tiny_evals)}
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
    from rare.report.stage import log_report

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RARE_PARENT_RUN_ID", raising=False)
    out = tmp_path / "report"
    build_report(paper_like, out, tiny_root_session, ReportParams())
    tracking = TrackingParams(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                              artifact_root=str(tmp_path / "mlruns/artifacts"))
    run_id = log_report(out, tracking, tmp_path / "params.yaml")
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags["rare.role"] == "pipeline"
    assert run.data.metrics["report/both/local/M-BEIR_score"] == pytest.approx(38.25)
    names = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/scores.png", "report/scores_local.csv", "report/summary.json"} <= names


def test_enhancement_section_names_each_cause(tmp_path):
    """A backend that enhanced nothing (the stand-in on imported data) is reported with its full cause."""
    import json as _json

    from rare.report.stage import _enhancement_note

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
