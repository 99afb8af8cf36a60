"""`make plots`: DVC's plots as SVG files that render offline, each series named by its variant."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from rare import plots
from rare.repro import dvc_command, stage_env


def test_series_are_named_by_variant_or_evaluation():
    names = ["metrics/loss/none_train.json", "both_val.json", "infer-corpus/headline.json", "pretrain.json"]
    assert [plots.series_name(n) for n in names] == ["none", "both", "infer-corpus", "pretrain"]


def test_plots_render_offline_labelled_by_variant(tmp_path: Path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(dvc_command("init", "-q"), cwd=tmp_path, env=stage_env(), check=True)
    (tmp_path / "metrics/loss").mkdir(parents=True)
    for variant, scale in (("none", 1.0), ("both", 0.5)):
        rows = [{"step": step, "loss": scale * 4 / (step + 1)} for step in range(10)]
        (tmp_path / f"metrics/loss/{variant}_train.json").write_text(json.dumps(rows))
    (tmp_path / "dvc.yaml").write_text(
        "plots:\n- training_loss:\n    template: linear\n    x: step\n    y:\n"
        "      metrics/loss/none_train.json: loss\n      metrics/loss/both_train.json: loss\n")
    written = plots.render(tmp_path / "dvc_plots", repo_dir=tmp_path)
    assert [p.name for p in written] == ["training_loss.svg"]
    svg = written[0].read_text()
    assert svg.startswith("<svg") and ">none<" in svg and ">both<" in svg and "none_train" not in svg
    index = (tmp_path / "dvc_plots/index.html").read_text()
    assert 'src="training_loss.svg"' in index and "http" not in index
