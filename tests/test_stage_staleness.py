"""Per-file code deps, as DVC itself sees them: in a copy of the project whose every stage DVC holds as done
(`dvc commit` over stand-in outputs, so no stage runs), an edit stales exactly the stages that run the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rare import stages

ROOT = stages.ROOT
DVC = [sys.executable, "-m", "dvc"]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}


def _dvc(copy: Path, *args: str) -> str:
    done = subprocess.run([*DVC, *args], cwd=copy, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _stand_in_outputs(copy: Path) -> None:
    for name, stage in yaml.safe_load((copy / "dvc.yaml").read_text(encoding="utf-8"))["stages"].items():
        for out in (o for kind in ("outs", "metrics", "plots") for o in stage.get(kind, [])):
            p = copy / (out if isinstance(out, str) else next(iter(out)))
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.suffix:
                p.write_text("{}" if p.suffix == ".json" else name, encoding="utf-8")
            else:
                p.mkdir(exist_ok=True)
                (p / "stand-in").write_text(name, encoding="utf-8")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's code, dvc.yaml and params.yaml, every stage committed as done."""
    copy = tmp_path_factory.mktemp("finished")
    for item in ("src", "dvc.yaml", "params.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, copy / item)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    _dvc(copy, "init", "-q")
    _stand_in_outputs(copy)
    _dvc(copy, "commit", "-f", "-q")
    assert _stale(copy) == set()
    return copy


def _stale(copy: Path) -> set[str]:
    return set(json.loads(_dvc(copy, "status", "--json") or "{}"))


@pytest.fixture
def edit(finished: Path) -> Iterator[callable]:
    """``edit(rel, old, new)`` changes a file of the copy; every edited file is put back afterwards."""
    saved: dict[Path, str] = {}

    def change(rel: str, old: str, new: str) -> None:
        path = finished / rel
        text = saved.setdefault(path, path.read_text(encoding="utf-8"))
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    yield change
    for path, text in saved.items():
        path.write_text(text, encoding="utf-8")


@pytest.mark.slow
def test_a_comment_in_the_openai_client_stales_only_the_enhance_stages(finished: Path, edit) -> None:
    edit("src/rare/enhance/backends/openai.py", "from __future__", "# a comment\nfrom __future__")
    assert _stale(finished) == {"enhance_corpus", "enhance_queries"}


@pytest.mark.slow
def test_a_comment_in_the_cli_mount_stales_no_stage(finished: Path, edit) -> None:
    for mount in ("cli.py", "stages/__init__.py", "stages/declare.py", "stages/command.py"):
        edit(f"src/rare/{mount}", "from __future__", "# a comment\nfrom __future__")
    assert _stale(finished) == set()


@pytest.mark.slow
def test_adding_a_variant_stales_only_its_stages_and_the_report(finished: Path, edit) -> None:
    edit("src/rare/stages/variants.py", '    "both": VariantSpec(corpus=True, queries=True),\n',
         '    "both": VariantSpec(corpus=True, queries=True),\n'
         '    "corpus-append": VariantSpec(corpus=True, queries=False, corpus_mode="append"),\n')
    (finished / "dvc.yaml").write_text(subprocess.run(
        [sys.executable, "-c", "from rare import stages; print(stages.dvc_yaml(), end='')"], cwd=finished,
        env={**ENV, "PYTHONPATH": str(finished / "src")}, capture_output=True, text=True, check=True).stdout)
    try:
        assert _stale(finished) == {"train_corpus_append", "eval_corpus_append", "eval_infer_corpus_append", "report"}
    finally:
        shutil.copy(ROOT / "dvc.yaml", finished / "dvc.yaml")
