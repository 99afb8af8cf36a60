"""The VLM-quality sweep: its noisy params, its steps, and gains with intervals from evaluations per rate."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from rare.sweep import commands, gains, noisy_params, plot
from tests.test_report_stage import ROWS, write_eval, write_qrels


def test_noisy_params_and_steps(tmp_path: Path):
    src = Path(__file__).resolve().parents[1] / "params.yaml"
    params = noisy_params(src, 0.25, tmp_path / "rate-0.25/params.yaml")
    loaded = yaml.safe_load(params.read_text())
    assert loaded["enhance"]["noise"] == {"drop_detail": 0.25, "wrong_attribute": 0.25, "fail_entity": 0.25}
    assert loaded["tracking"]["enabled"] is False and loaded["train"] == yaml.safe_load(src.read_text())["train"]
    steps = commands(tmp_path / "rate-0.25", params)
    assert [c[1:3] for _, c in steps] == [["enhance", "corpus"], ["enhance", "queries"], ["train", "corpus"],
                                          ["evaluate", "corpus"], ["train", "query"], ["evaluate", "query"],
                                          ["train", "both"], ["evaluate", "both"]]
    train_both = steps[6][1]
    assert train_both[train_both.index("--queries-enhanced") + 1] == str(tmp_path / "rate-0.25/enhanced/queries")
    assert "--corpus-enhanced" not in steps[4][1]  # query reads only enhanced queries


def test_gains_fall_with_the_error_rate(tmp_path: Path):
    data = write_qrels(tmp_path / "data")
    for name in ("none", "corpus", "query", "both"):
        write_eval(tmp_path / "eval", name, *ROWS[name][:2], ROWS[name][2])
    noisy = tmp_path / "work/rate-0.5/eval"
    for name in ("corpus", "query", "both"):
        write_eval(noisy, name, *ROWS[name][:2], ROWS["none"][2])  # a VLM this bad adds nothing
    result = gains([0.0, 0.5], tmp_path / "work", tmp_path / "eval", data, 1000, 0)
    k0, k5 = result["0"]["corpus"]["knowledge-intensive"], result["0.5"]["corpus"]["knowledge-intensive"]
    assert k0["estimate"] == 10.0 and k0["lo"] > 0
    assert (k5["estimate"], k5["lo"], k5["hi"]) == (0.0, 0.0, 0.0)
    assert set(result["0"]) == {"corpus", "query", "both"}
    assert plot(result, tmp_path / "sweep.png").stat().st_size > 10_000
    json.dumps(result)  # what sweep.json holds
