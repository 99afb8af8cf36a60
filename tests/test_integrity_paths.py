"""Configured paths are checked before any work, naming the params key and the path (never a hub message
for a local folder), and numbers must be finite (issue 25: a missing train.model.vision.pretrained folder
said "couldn't connect to the hub"; a missing tokenizer folder gave a repo-id message; lr: .inf passed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rare.config import ConfigError, load_section
from rare.config.paths import PathError, check_paths
from tests.test_cli_errors import ENV, one_error, rare


def _params(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder as `make run` sees it: models/ exists, models/pretrain does not (yet)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


CASES = {  # train.model override -> what the one line must say
    "vision: {pretrained: models/pretrain}": ("train.model.vision.pretrained", "models/pretrain: no such folder"),
    "tokenizer: /nowhere/tokenizer": ("train.model.tokenizer", "/nowhere/tokenizer: no such folder"),
    "tokenizer: ./tok": ("train.model.tokenizer", "./tok: no such folder"),
    "tokenizer: empty": ("train.model.tokenizer", "empty: the folder holds none of"),
    "text: {pretrained: someorg/somemodel}": ("train.model.text.pretrained", "not a model in the local hub cache"),
    "text: {pretrained: 'package:no_such_pkg/model'}": ("train.model.text.pretrained", "'no_such_pkg' is not installed"),
}


@pytest.mark.parametrize("override", sorted(CASES))
def test_a_bad_configured_path_names_the_key_and_the_path(project: Path, override: str) -> None:
    params = _params(project / "params.yaml", f"train:\n  model:\n    {override}\n")
    key, needle = CASES[override]
    with pytest.raises(PathError) as info:
        check_paths("train", load_section("train", params), params)
    line = str(info.value)
    assert line.startswith(f"{params}: {key}: ") and needle in line, line
    assert "huggingface.co" not in line and "repo id" not in line.lower()


def test_good_paths_pass(project: Path, tiny_tokenizer_dir: Path) -> None:
    params = _params(project / "params.yaml", f"train:\n  model:\n    tokenizer: {tiny_tokenizer_dir}\n")
    check_paths("train", load_section("train", params), params)  # package: source and a real folder
    check_paths("enhance", load_section("enhance", params), params)  # the stand-in configures no path


def test_a_pretrained_export_with_a_damaged_manifest_is_refused(project: Path) -> None:
    from rare.manifest import write_folder_manifest

    folder = project / "models" / "pretrain"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "vit"}')
    (folder / "model.safetensors").write_bytes(b"x" * 64)
    write_folder_manifest(folder)
    params = _params(project / "params.yaml", "train:\n  model:\n    vision: {pretrained: models/pretrain}\n")
    check_paths("train", load_section("train", params), params)
    (folder / "model.safetensors").write_bytes(b"x" * 32)
    with pytest.raises(PathError, match=r"train.model.vision.pretrained: .*model.safetensors: 32 bytes"):
        check_paths("train", load_section("train", params), params)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("key", ["train.optim.lr", "train.model.init_temperature", "pretrain.steps",
                                 "enhance.openai.timeout_s"])
def test_numbers_must_be_finite(project: Path, key: str, value: str) -> None:
    section, *path = key.split(".")
    body = f"{section}:\n" + "".join(f"{'  ' * (i + 1)}{p}:\n" for i, p in enumerate(path[:-1]))
    body += f"{'  ' * len(path)}{path[-1]}: {value}\n"
    params = _params(project / "params.yaml", body)
    with pytest.raises(ConfigError, match=rf"params.yaml:\d+: {key}: "):
        load_section(section, params)


@pytest.mark.slow
def test_rare_train_stops_before_any_work_on_a_missing_pretrained_folder(project: Path) -> None:
    params = _params(project / "params.yaml", "train:\n  model:\n    vision: {pretrained: models/pretrain}\n"
                                              "tracking:\n  enabled: false\n")
    result = rare("train", "none", "--data", str(project / "data"), "--out", str(project / "models" / "none"),
                  "--params", str(params), env={**ENV, "HF_HUB_OFFLINE": "1"}, cwd=project)
    one_error(result, "train.model.vision.pretrained", "models/pretrain: no such folder")
    assert "huggingface" not in result.stderr.lower() and not (project / "models" / "none").exists()
