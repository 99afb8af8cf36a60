"""The ``dual`` family's modality gate: identity at init, per-entry weights once trained, part of the export."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from rare.config.train import OptimParams
from rare.model import EncodeInput, build_retriever, load_retriever, save_retriever
from rare.model.retriever import Retriever
from rare.train.loss import contrastive_loss
from rare.train.module import param_groups
from tests.fixtures.models import tiny_model_params

ITEMS = [
    EncodeInput("a red circle", None),
    EncodeInput("a blue square", Image.new("RGB", (32, 32), "blue")),
    EncodeInput("", Image.new("RGB", (32, 32), "green")),
    EncodeInput("what is shown here? find the large yellow triangle", Image.new("RGB", (32, 32), "yellow")),
]


def _ungated(r: Retriever, items: list[EncodeInput]) -> torch.Tensor:
    gate, r.gate = r.gate, None
    try:
        with torch.no_grad():
            return r(r.collator()(items))
    finally:
        r.gate = gate


def _trained_gate(r: Retriever, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        r.gate.weight.copy_(torch.randn(r.gate.weight.shape, generator=g))
        r.gate.bias.copy_(torch.tensor([0.5, -1.0]))


def test_an_untrained_gate_gives_exactly_the_plain_normalised_sum(tiny_retriever_dir: Path) -> None:
    r = load_retriever(tiny_retriever_dir)
    assert r.gate is not None and not r.gate.weight.any() and not r.gate.bias.any()
    with torch.no_grad():
        gated = r(r.collator()(ITEMS))
    assert torch.equal(gated, _ungated(r, ITEMS))  # bit for bit: the zero-shot export's numbers stay


def test_a_trained_gate_weights_each_entry_by_its_own_text(tiny_retriever_dir: Path) -> None:
    r = load_retriever(tiny_retriever_dir)
    _trained_gate(r)
    with torch.no_grad():
        emb = r(r.collator()(ITEMS))
        for i in (1, 3):  # the entries with both terms: normalise(a_t * t + a_v * v), a from the entry's text
            one = r.collator()([ITEMS[i]])
            t = F.normalize(r.towers.encode_text(one["input_ids"], one["attention_mask"]), dim=-1)
            v = F.normalize(r.towers.encode_image(one["pixel_values"]), dim=-1)
            a = r.gate(t)[0]
            assert torch.allclose(a.sum(), torch.tensor(2.0)) and not torch.allclose(a, torch.ones(2), atol=0.05)
            assert torch.allclose(emb[i], F.normalize(a[0] * t + a[1] * v, dim=-1)[0], atol=1e-5)
        weights = [r.gate(F.normalize(r.towers.encode_text(b["input_ids"], b["attention_mask"]), dim=-1))[0]
                   for b in (r.collator()([ITEMS[1]]), r.collator()([ITEMS[3]]))]
    assert not torch.allclose(weights[0], weights[1], atol=1e-3)  # input-conditioned, not one global ratio
    plain = _ungated(r, ITEMS)
    for i in (0, 2):  # one term: its weight normalises away
        assert torch.allclose(emb[i], plain[i], atol=1e-6)
    assert not torch.allclose(emb[1], plain[1], atol=1e-3)


def test_the_gate_travels_with_the_export(tmp_path: Path, tiny_retriever_dir: Path) -> None:
    r = load_retriever(tiny_retriever_dir)
    _trained_gate(r)
    out = save_retriever(r, tmp_path / "gated")
    weights = load_file(str(out / "model.safetensors"))
    assert torch.equal(weights["gate.weight"], r.gate.weight) and torch.equal(weights["gate.bias"], r.gate.bias)
    r2 = load_retriever(out)
    batch = r.collator()(ITEMS)
    with torch.no_grad():
        assert torch.equal(r(batch), r2(batch))
    assert r2.fingerprint != load_retriever(tiny_retriever_dir).fingerprint


def test_the_gate_is_a_fresh_parameter_trained_at_lr_new(tiny_tokenizer_dir: Path) -> None:
    r = build_retriever(tiny_model_params(tiny_tokenizer_dir))
    assert {"gate.weight", "gate.bias"} <= r.new_parameters
    groups = param_groups(r, OptimParams(lr=1e-4, lr_new=1e-3))
    for p in (r.gate.weight, r.gate.bias):
        assert [g["lr"] for g in groups if any(p is q for q in g["params"])] == [1e-3]


def test_one_optimiser_step_moves_the_gate_away_from_the_identity(tiny_tokenizer_dir: Path) -> None:
    """The contrastive loss reaches the gate through the ratio of the two terms it weights."""
    torch.manual_seed(0)
    r = build_retriever(tiny_model_params(tiny_tokenizer_dir))
    opt = torch.optim.AdamW(param_groups(r, OptimParams(lr=1e-4, lr_new=1e-3)))
    queries = r.collator()([ITEMS[1], ITEMS[3]])
    cands = r.collator()([ITEMS[2], ITEMS[0]])
    loss = contrastive_loss(r(queries), r(cands), r.scale())
    loss.backward()
    assert r.gate.weight.grad.abs().sum() > 0
    opt.step()
    assert r.gate.weight.any() and r.gate.bias.any()
