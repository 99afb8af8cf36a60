"""`rare serve`'s exact speed-ups (rare.serve.index.fast_paths): the same query vectors, bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from rare.config.train import TowerSource
from rare.model import EncodeInput, build_retriever
from rare.serve.index import MaxPool2x2, Variant, fast_paths
from tests.fixtures.models import tiny_model_params

TINY_CNN = {"model_type": "rare-cnn", "channels": [8, 16], "hidden_size": 32, "image_size": 32}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 4, 7, 9), (3, 5, 6)])
def test_max_pool_2x2_is_max_pool2d(shape: tuple[int, ...], dtype: torch.dtype):
    x = torch.randn(shape).to(dtype)
    x.view(-1)[3] = float("nan")
    x.view(-1)[10] = float("-inf")
    assert torch.equal(MaxPool2x2()(x).isnan(), nn.MaxPool2d(2)(x).isnan())
    assert torch.equal(MaxPool2x2()(x).nan_to_num(), nn.MaxPool2d(2)(x).nan_to_num())


def test_only_plain_2x2_pools_are_replaced():
    kept = [nn.MaxPool2d(3), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
            nn.MaxPool2d(2, return_indices=True)]
    model = nn.Sequential(nn.MaxPool2d(2), nn.Sequential(nn.MaxPool2d((2, 2))), *kept)
    fast_paths(model, "fp32")
    assert isinstance(model[0], MaxPool2x2) and isinstance(model[1][0], MaxPool2x2)
    assert list(model)[2:] == kept


def _image(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (40, 52, 3), generator=g, dtype=torch.uint8).numpy())


@pytest.mark.parametrize("vision", ["rare-cnn", "vit"])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_served_vectors_are_bit_identical(tiny_tokenizer_dir: Path, vision: str, precision: str):
    params = tiny_model_params(tiny_tokenizer_dir)
    if vision == "rare-cnn":
        params = params.model_copy(update={"vision": TowerSource(config=TINY_CNN), "image_pooling": "pooler"})
    torch.manual_seed(0)
    plain = build_retriever(params).eval()
    fast = copy.deepcopy(plain)
    fast_paths(fast, precision)
    assert any(isinstance(m, MaxPool2x2) for m in fast.modules()) == (vision == "rare-cnn")
    items = [EncodeInput("a red circle left of a blue square", None), EncodeInput("", _image(1)),
             EncodeInput("which shape is this", _image(2)), EncodeInput("green", None), EncodeInput("", _image(3))]
    for batch in (items[:1], items[1:2], items):
        want = Variant("plain", plain, None, precision, {}, None).embed(batch)  # type: ignore[arg-type]
        got = Variant("fast", fast, None, precision, {}, None).embed(batch)  # type: ignore[arg-type]
        assert got.tobytes() == want.tobytes()
