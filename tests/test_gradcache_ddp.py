"""GradCache under DDP (2 gloo ranks on CPU): each rank holds half of the global batch, embeds it in chunks,
gathers every rank's embeddings for the loss and syncs the gradients on its last backward only. The result must
be the plain step of one process on the whole global batch: same loss, same gradients, to 1e-5."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from rare.config.train import ModelParams
from rare.model import EncodeInput, build_retriever
from rare.train.gradcache import grad_cache_step
from rare.train.loss import contrastive_loss
from tests.vlm_tiny import save_tiny

WORLD, PER_RANK = 2, 3


def _image(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


QUERIES = [("Find a photo. a red circle", None), ("Find a caption. a square", (56, 84, 1)),
           ("Find a photo. a blue triangle", None), ("Find it.", (56, 56, 2)), ("Find a photo. green", None),
           ("Find the caption of this", (84, 56, 6))]
CANDS = [("", (56, 56, 3)), ("A square.", None), ("A blue triangle.", (84, 56, 4)), ("A thing", (56, 56, 5)),
         ("Green.", None), ("A caption: the red square beside a circle", None)]


def _items(rows: list[tuple[str, tuple[int, int, int] | None]]) -> list[EncodeInput]:
    return [EncodeInput(text, _image(*img) if img else None) for text, img in rows]


def _retriever(base: Path, learn: bool):  # noqa: ANN202
    import transformers

    transformers.utils.logging.set_verbosity_error()
    vlm = {"model": {"pretrained": str(base)}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
           "learn_temperature": learn}
    torch.manual_seed(0)
    r = build_retriever(ModelParams(family="vlm", vlm=vlm))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking LoRA (peft starts B at 0, which would hide half the gradient)
        for name, p in r.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return r


def _grads(r) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {n: p.grad.detach().clone() for n, p in r.named_parameters() if p.requires_grad and p.grad is not None}


def _rank(rank: int, base: Path, port: int, learn: bool, chunk: int, out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        r = _retriever(base, learn)
        ddp = DDP(r)
        col = r.collator()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        q, c = col(_items(QUERIES[rows])), col(_items(CANDS[rows]))
        loss = grad_cache_step(ddp, q, c, lambda a, b: contrastive_loss(a, b, r.scale()), chunk, r.split,
                               no_sync=ddp.no_sync, prepare=r.frozen_features,
                               loss_params=r.scale)
        torch.save({"loss": loss, "grads": _grads(r)}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:  # noqa: ANN001
    return save_tiny(tmp_path_factory.mktemp("q2ddp") / "ckpt", "qwen2_vl")


@pytest.mark.slow
@pytest.mark.parametrize(("learn", "chunk"), [(False, 2), (True, 1)])
def test_grad_cache_under_ddp_is_the_plain_global_batch_step(base: Path, tmp_path: Path, learn: bool,
                                                             chunk: int) -> None:
    r = _retriever(base, learn)
    col = r.collator()
    full = contrastive_loss(r(col(_items(QUERIES))), r(col(_items(CANDS))), r.scale())
    full.backward()
    expected = _grads(r)
    assert len(expected) == 2 * 7 * 2 + int(learn)

    mp.spawn(_rank, args=(base, _port(), learn, chunk, tmp_path), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert abs(float(got["loss"].detach()) - float(full.detach())) < 1e-5, rank
        assert got["grads"].keys() == expected.keys()
        for name, g in expected.items():
            assert torch.allclose(got["grads"][name], g, atol=1e-5, rtol=1e-4), (rank, name)
