"""The debian_clipart profile end to end on a slice: Debian's real emoji (and the stamps and drawings where
installed) -> `rare debian-sources` -> `rare import` -> data, enhancement, a few training steps, evaluation,
with metrics written. Outside CI it skips when the packages are missing; in CI (.ci/run installs the emoji
packages) it fails instead.

Kept cheap for CI: 24 items per source, two training steps of 8 pairs, an 8-query validation, and the
stages run in this process through the CLI (a fresh `rare train` / `rare evaluate` process spends most of its
time importing torch, Lightning and transformers: 15-25 s each on a loaded 2-core runner)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from typer.testing import CliRunner

from flows.realworld import profile_params
from rare import stages
from rare.cli import app
from rare.ingest import debian
from rare.validate import validate_root

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
RARE = str(Path(sys.executable).with_name("rare"))


def _installed() -> list[str]:
    found = [n for n, s in debian.SOURCES.items() if s.marker.exists() and not debian.missing_packages([n])]
    if "notoemoji" not in found:
        if os.environ.get("CI") == "true":
            pytest.fail("fonts-noto-color-emoji, unicode-data and unicode-cldr-core must be installed in CI (.ci/run)")
        pytest.skip("Debian's emoji packages are not installed")
    return [n for n in found if n != "openclipart"]  # SVG rasterising: a few seconds per dozen drawings


def _rare(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([RARE, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"rare {shlex.join(args)}\n{r.stdout}\n{r.stderr}"
    return r


def _stage(name: str, params: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dvc.yaml stage's own command line, run by the CLI in this process (in ``work``, as dvc would)."""
    args = [*shlex.split(stages.stage(name).cmd)[1:], "--params", str(params)]
    monkeypatch.chdir(work)
    with mock.patch.dict(os.environ):  # the CLI sets cache and Prefect variables for its process: not for later tests
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"rare {shlex.join(args)}\n{res.output}\n{res.exception!r}"


def test_debian_slice_imports_trains_and_evaluates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = _installed()
    listing = _rare(["debian-sources", str(tmp_path / "sources"), "--max-per-source", "24", "--no-install",
                     *(f"--source={s}" for s in sources)], tmp_path).stdout.split()
    assert [s.split("=")[0] for s in listing] == sources
    root = tmp_path / "root"
    out = _rare(["import", *listing, "--out", str(root), "--val", "0.1", "--test", "0.3"], tmp_path)
    assert "0 rejected" in out.stdout
    assert not validate_root(root).errors
    manifest = json.loads((root / "import.json").read_text())
    assert manifest["items"] == {s: 24 for s in sources}
    emoji = [json.loads(ln) for ln in (tmp_path / "sources/notoemoji/captions.jsonl").read_text().splitlines()]
    assert all(r["text"] and Path(tmp_path / "sources/notoemoji" / r["image"]).stat().st_size > 500 for r in emoji)

    work = tmp_path / "work"
    work.mkdir()
    params = profile_params(work, root)
    doc = yaml.safe_load(params.read_text())
    doc["profiles"]["debian_clipart"]["train"].update(max_steps=2, batch_size=8, val_every_n_steps=2,
                                                      val_max_queries=8, checkpoint_every_n_steps=2,
                                                      num_workers=0)
    doc["train"]["cache_dir"] = str(tmp_path / "cache/train")
    doc["enhance"]["cache_dir"] = str(tmp_path / "cache/enhance")
    doc["evaluate"]["cache_dir"] = str(tmp_path / "cache/embeddings")
    doc["tracking"]["enabled"] = False
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    (work / "models").mkdir()
    (work / stages.PRETRAINED).symlink_to(REPO / stages.PRETRAINED)
    for name in ("data", "enhance_corpus", "train_none", "eval_none"):
        _stage(name, params, work, monkeypatch)

    # the stand-in enhances nothing here, and every image item says why
    corpus = json.loads((work / "data/enhanced/corpus/enhance_summary.json").read_text())
    assert corpus["ok"] == 0 and corpus["failed"] == corpus["enhanceable"] > 0
    failures = (work / "data/enhanced/corpus/enhance_failures.jsonl").read_text().splitlines()
    assert len(failures) == corpus["failed"]
    assert all("the stand-in only works on the embedded benchmark" in json.loads(f)["cause"] for f in failures)
    loss = json.loads((work / "metrics/loss/none_train.json").read_text())
    assert [r["step"] for r in loss][-1] >= 1 and all(r["loss"] > 0 for r in loss)
    metrics = json.loads((work / "eval/none/metrics.json").read_text())
    expected = {f"{s}_task{t}" for s in sources for t in (0, 3)}
    assert expected <= set(metrics["local"])
    for row in metrics["local"].values():
        assert row["queries"] > 0 and 0.0 <= row["R@1"] <= row["R@5"] <= row["R@10"] <= 100.0
    assert set(metrics["score"]) == {"local", "global"}
