"""Serving's exact shortcuts (rare.serve.lean): prepacked Linear layers and the lean BERT pass give the bits
of the modules they replace, keep their state dicts, and are not swapped in where a probe disagrees."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

import rare.serve.lean as lean_module
from rare.serve.lean import LeanBert, PackedLinear, lean_text_towers, pack_linears

CONFIG = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
          "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0,
          "attention_probs_dropout_prob": 0.0}


def _bert(**overrides: object) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(**CONFIG)
    for key, value in overrides.items():
        setattr(config, key, value)
    return BertModel(config, add_pooling_layer=False).eval()


def _batch(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CONFIG["vocab_size"], (rows, length), generator=g)
    mask = torch.ones_like(ids)
    for r in range(1, rows):  # every row but the first padded, by a different amount
        mask[r, max(1, length - 2 * r):] = 0
    return ids, mask


def _served(bert: BertModel, precision: str) -> tuple[BertModel, nn.Module]:
    """(plain, lean) as fast_paths leaves them: bf16 weights cast once, then packed, then the lean tower."""
    plain = copy.deepcopy(bert)
    holder = nn.Module()
    holder.text = copy.deepcopy(bert)
    for m in (*plain.modules(), *holder.modules()):
        if precision == "bf16" and isinstance(m, nn.Linear):
            m.to(torch.bfloat16)
    pack_linears(holder, precision)
    assert lean_text_towers(holder, precision) == 1
    return plain, holder.text


def _hidden(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, precision: str) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_lean_pass_gives_transformers_bits(precision: str):
    plain, lean = _served(_bert(), precision)
    assert isinstance(lean, LeanBert)
    assert any(isinstance(m, PackedLinear) for m in lean.modules()) == (precision == "bf16")
    for seed, (rows, length) in enumerate([(1, 5), (1, 31), (2, 17), (5, 23), (8, 9)]):
        ids, mask = _batch(rows, length, seed)
        want, got = _hidden(plain, ids, mask, precision), _hidden(lean, ids, mask, precision)
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_the_lean_tower_keeps_the_models_weights_and_names():
    bert = _bert()
    plain, lean = _served(bert, "bf16")
    want, got = plain.state_dict(), lean.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    query = lean.encoder.layer[0].attention.self.query
    assert isinstance(query, PackedLinear) and query.weight.dtype == torch.bfloat16


def test_keep_and_resume_split_one_pass_in_two():
    """rare.serve.shared's seams: the states kept after block n, resumed at block n, end where one pass ends."""
    _, lean = _served(_bert(), "bf16")
    ids, mask = _batch(3, 19, 7)
    whole = _hidden(lean, ids, mask, "bf16")
    lean.keep_after = 2
    assert torch.equal(_hidden(lean, ids, mask, "bf16"), whole)
    kept, lean.keep_after = lean.kept, None
    assert kept is not None and not torch.equal(kept, whole)
    lean.resume = (2, kept)
    try:
        assert torch.equal(_hidden(lean, torch.zeros_like(ids), mask, "bf16"), whole)  # ids unused when resuming
    finally:
        lean.resume = None


@pytest.mark.parametrize("shape", [(1, 48), (37, 48), (2, 13, 48), (4, 1, 48)])
def test_packed_linear_is_autocasts_linear(shape: tuple[int, ...]):
    torch.manual_seed(1)
    lin = nn.Linear(48, 80).to(torch.bfloat16)
    packed = PackedLinear(lin)
    x = torch.randn(shape)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = F.linear(x, lin.weight, lin.bias), packed(x)
    assert got.dtype == want.dtype == torch.bfloat16 and torch.equal(got, want)
    assert packed.state_dict().keys() == lin.state_dict().keys()  # the packed copy is not saved or compared


def test_only_bf16_cpu_linears_are_packed():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8).to(torch.bfloat16), nn.Sequential(nn.Linear(8, 4)))
    assert pack_linears(copy.deepcopy(model), "fp32") == 0
    model[2][0].to(torch.bfloat16)
    assert pack_linears(model, "bf16") == 2
    assert [type(m).__name__ for m in (model[0], model[1], model[2][0])] == ["Linear", "PackedLinear", "PackedLinear"]


@pytest.mark.parametrize("overrides", [{"is_decoder": True}, {"_attn_implementation": "eager"}])
def test_towers_it_does_not_cover_keep_transformers_pass(overrides: dict[str, object]):
    holder = nn.Module()
    holder.text = _bert(**overrides)
    assert lean_text_towers(holder, "fp32") == 0 and isinstance(holder.text, BertModel)


def test_a_probe_that_disagrees_keeps_transformers_pass(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture):
    real = lean_module._layer_norm
    monkeypatch.setattr(lean_module, "_layer_norm", lambda x, ln: real(x, ln) * (1 + 2 ** -10))
    holder = nn.Module()
    holder.text = _bert()
    with caplog.at_level(logging.WARNING, logger="rare.serve.lean"):
        assert lean_text_towers(holder, "fp32") == 0
    assert isinstance(holder.text, BertModel)
    assert "differs from transformers'" in caplog.text
