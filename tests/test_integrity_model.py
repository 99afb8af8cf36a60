"""A damaged model export is one `error:` line naming the file and the damage, and exit 1: never a silent
fallback that evaluates a different model (issue 25: meta.json or tokenizer.json removed scored 76.6 and
39.1 instead of 89.1 with exit 0)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rare.manifest import ManifestError, verify
from rare.model import load_retriever
from tests.fixtures.models import make_tiny_retriever
from tests.test_cli_errors import one_error, rare


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage_head(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


# damage -> (file it is done to, what is done, what the error line must say)
DAMAGES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "meta removed": ("meta.json", Path.unlink, "meta.json: missing"),
    "tokenizer.json removed": ("tokenizer/tokenizer.json", Path.unlink, "tokenizer.json: missing"),
    "safetensors truncated": ("model.safetensors", _truncate, "model.safetensors:"),
    "safetensors garbage header": ("model.safetensors", _garbage_head, "model.safetensors: content differs"),
    "weights bit flip": ("model.safetensors", _flip_last_byte, "model.safetensors: content differs"),
    "retriever.json corrupt": ("retriever.json", lambda p: p.write_text("{not json"), "retriever.json:"),
    "tower config removed": ("towers/text/config.json", Path.unlink, "config.json: missing"),
    "manifest removed": ("manifest.json", Path.unlink, "manifest.json: missing"),
    "manifest garbage": ("manifest.json", lambda p: p.write_text("]]"), "manifest.json: not a valid manifest"),
}


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_retriever(tmp_path_factory.mktemp("intact") / "model")


def damaged(intact: Path, tmp_path: Path, name: str) -> tuple[Path, str]:
    model = tmp_path / "model"
    shutil.copytree(intact, model)
    rel, damage, needle = DAMAGES[name]
    damage(model / rel)
    return model, needle


def test_intact_export_verifies_and_loads(intact: Path) -> None:
    manifest = verify(intact / "manifest.json", full=True)
    assert {"meta.json", "retriever.json", "model.safetensors", "tokenizer/tokenizer.json"} <= set(manifest.files)
    assert manifest.files["model.safetensors"].size == (intact / "model.safetensors").stat().st_size
    assert load_retriever(intact).meta.variant == "none"


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_damaged_export_is_refused_naming_the_file(intact: Path, tmp_path: Path, name: str) -> None:
    model, needle = damaged(intact, tmp_path, name)
    with pytest.raises(ManifestError, match=needle.replace(".", r"\.")):
        load_retriever(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["meta removed", "tokenizer.json removed", "safetensors garbage header",
                                  "retriever.json corrupt"])
def test_rare_evaluate_on_a_damaged_model_exits_1_with_one_line(intact: Path, tiny_root: Path, tmp_path: Path,
                                                                 name: str) -> None:
    model, needle = damaged(intact, tmp_path, name)
    params = tmp_path / "params.yaml"
    params.write_text(f"evaluate:\n  cache_dir: {tmp_path / 'cache'}\n  top_k: 10\ntracking:\n  enabled: false\n")
    result = rare("evaluate", "none", "--model", str(model), "--inputs", "none", "--data", str(tiny_root),
                  "--out", str(tmp_path / "eval"), "--params", str(params))
    one_error(result, str(model), needle)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_a_model_export_without_its_manifest_never_loads(intact: Path, tmp_path: Path) -> None:
    """An export from before manifests (or a half-copied one) is refused rather than trusted."""
    model, _ = damaged(intact, tmp_path, "manifest removed")
    with pytest.raises(ManifestError, match="re.*build|rebuild"):
        load_retriever(model)
    assert json.loads((intact / "manifest.json").read_text())["format"] == 1
