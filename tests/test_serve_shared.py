"""Two served variants with the same frozen lower text layers compute them once (rare.serve.shared): the
same query vectors as each variant's own forward pass, bit for bit, and no sharing where weights differ."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rare.model import EncodeInput, build_retriever
from rare.serve.index import Variant, fast_paths
from rare.serve.service import Group, Job, _groups
from rare.serve.shared import SharedLower, shared_blocks
from tests.fixtures.models import tiny_model_params


def _image(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (40, 52, 3), generator=g, dtype=torch.uint8).numpy())


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 0.1)


def _pair(tokenizer_dir: Path, precision: str) -> tuple[Variant, Variant]:
    """A retriever and a copy fine-tuned above its lower text block, as train_text_layers: 1 leaves them."""
    torch.manual_seed(0)
    leader = build_retriever(tiny_model_params(tokenizer_dir)).eval()
    follower = copy.deepcopy(leader)
    _perturb(follower.towers.text.encoder.layer[1], 1)
    _perturb(follower.towers.text_proj, 2)
    _perturb(follower.towers.vision, 3)
    for r in (leader, follower):
        fast_paths(r, precision)
    return (Variant("none", leader, None, precision, {}, None),  # type: ignore[arg-type]
            Variant("both", follower, None, precision, {}, None))  # type: ignore[arg-type]


ITEMS = [EncodeInput("a red circle left of a blue square", None), EncodeInput("", _image(1)),
         EncodeInput("which shape is this", _image(2)), EncodeInput("green", None), EncodeInput("", _image(3))]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_shared_lower_blocks_give_each_variants_own_vectors(tiny_tokenizer_dir: Path, precision: str):
    leader, follower = _pair(tiny_tokenizer_dir, precision)
    assert shared_blocks(leader, follower) == 1  # of 2: the follower keeps its top block
    shared = SharedLower(leader, follower, 1)
    for batch in (ITEMS[:1], ITEMS[1:2], ITEMS[3:4] + ITEMS[:1], ITEMS):
        got = shared.embed(batch)
        want = leader.embed(batch), follower.embed(batch)  # after: the follower's own tower is whole again
        assert [g.tobytes() for g in got] == [w.tobytes() for w in want]
        assert not np.array_equal(want[0], want[1])


def test_different_lower_weights_or_inputs_are_not_shared(tiny_tokenizer_dir: Path):
    leader, follower = _pair(tiny_tokenizer_dir, "fp32")
    tower = follower.retriever.towers.text
    _perturb(tower.encoder.layer[0], 4)
    assert shared_blocks(leader, follower) == 0
    assert [list(g) for g in (g.variants for g in _groups({"none": leader, "both": follower}))] == [["none"], ["both"]]
    leader, follower = _pair(tiny_tokenizer_dir, "fp32")
    _perturb(follower.retriever.towers.text.embeddings, 5)
    assert shared_blocks(leader, follower) == 0
    leader, follower = _pair(tiny_tokenizer_dir, "fp32")
    follower.retriever.spec = {**follower.retriever.spec, "max_text_len": 8}  # tokenised differently
    assert shared_blocks(leader, follower) == 0
    leader, follower = _pair(tiny_tokenizer_dir, "fp32")
    assert shared_blocks(leader, Variant("both", follower.retriever, None, "bf16", {}, None)) == 0  # type: ignore[arg-type]
    [group] = _groups({"none": leader, "both": follower})
    assert group.shared is not None and group.shared.blocks == 1


def test_a_group_embeds_differing_texts_with_each_variants_whole_pass(tiny_tokenizer_dir: Path):
    """An enhanced query reads differently for the two variants: both run their own forward pass."""
    leader, follower = _pair(tiny_tokenizer_dir, "bf16")
    group = Group({"none": leader, "both": follower}, SharedLower(leader, follower, 1))
    jobs = [Job({"none": ITEMS[0], "both": ITEMS[0]}, "local", "t", 1),
            Job({"none": ITEMS[3], "both": EncodeInput("green, enhanced", None)}, "local", "t", 1),
            Job({"both": ITEMS[2]}, "local", "t", 1)]
    out = group.embed(jobs)
    assert out["none"][0] == [0, 1] and out["both"][0] == [0, 1, 2]
    assert out["none"][1].tobytes() == leader.embed([ITEMS[0], ITEMS[3]]).tobytes()
    want = follower.embed([ITEMS[0], EncodeInput("green, enhanced", None), ITEMS[2]])
    assert out["both"][1].tobytes() == want.tobytes()
