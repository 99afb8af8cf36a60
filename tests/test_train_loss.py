"""The contrastive loss, its temperature clamp, and the cross-rank gather (2 gloo processes)."""

from __future__ import annotations

import faulthandler
import math
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from rare.model import EncodeInput, build_retriever
from rare.model.retriever import MAX_LOGIT_SCALE
from rare.train.loss import contrastive_loss
from tests.fixtures.models import tiny_model_params


def test_loss_is_cross_entropy_of_scaled_cosines() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    scale = torch.tensor(20.0)
    logits = (scale * q @ c.T).tolist()
    by_hand = sum(-logits[i][i] + math.log(sum(math.exp(x) for x in logits[i])) for i in range(5)) / 5
    assert contrastive_loss(q, c, scale).item() == pytest.approx(by_hand, rel=1e-5)
    cols = [[logits[r][i] for r in range(5)] for i in range(5)]
    back = sum(-cols[i][i] + math.log(sum(math.exp(x) for x in cols[i])) for i in range(5)) / 5
    assert contrastive_loss(q, c, scale, symmetric=True).item() == pytest.approx((by_hand + back) / 2, rel=1e-5)
    assert contrastive_loss(q, q, torch.tensor(100.0)).item() < 1e-3  # perfect pairs


def test_temperature_is_clamped_like_clip(tiny_tokenizer_dir: Path) -> None:
    r = build_retriever(tiny_model_params(tiny_tokenizer_dir))
    assert r.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        r.logit_scale.fill_(MAX_LOGIT_SCALE + 1.0)
    assert r.scale().item() == pytest.approx(100.0)
    r.scale().backward()
    assert r.logit_scale.grad.item() == 0.0  # clamped: no gradient pushes it further


# -- gather across ranks -------------------------------------------------------------------------
def _batch(n: int) -> list[tuple[EncodeInput, EncodeInput]]:
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "white"]
    out = []
    for i in range(n):
        q = EncodeInput(f"find a {colors[i]} circle number {i}", Image.new("RGB", (32, 32), colors[i]) if i % 2 else None)
        c = EncodeInput(f"a {colors[i]} circle" if i % 3 else "", Image.new("RGB", (32, 32), colors[(i + 1) % 8]))
        out.append((q, c))
    return out


class _Step(torch.nn.Module):
    """What Lightning's DDP wrapper runs: both sides through the retriever, then the loss."""

    def __init__(self, retriever: torch.nn.Module):
        super().__init__()
        self.retriever = retriever

    def forward(self, qb: dict, cb: dict) -> torch.Tensor:
        return contrastive_loss(self.retriever(qb), self.retriever(cb), self.retriever.scale())


def _model_and_batches(tokenizer_dir: str, items: list[tuple[EncodeInput, EncodeInput]]):  # noqa: ANN202
    torch.manual_seed(0)
    r = build_retriever(tiny_model_params(tokenizer_dir))
    collate = r.collator()
    return r, collate([q for q, _ in items]), collate([c for _, c in items])


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _rank_main(rank: int, world: int, store: str, tokenizer_dir: str, out: str) -> None:
    # A stuck rank fails the test with its stack (read by the test), instead of hanging the suite.
    stack = open(f"{out}.rank{rank}.stack", "w")  # noqa: SIM115 - must outlive this frame
    faulthandler.dump_traceback_later(120, exit=True, file=stack)
    torch.set_num_threads(1)
    # Rendezvous through a file, not a TCP port picked in advance: on a busy machine another process
    # can take that port before rank 0 binds it, leaving rank 1 waiting for a store that never comes.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    items = _batch(8)
    per = len(items) // world
    r, qb, cb = _model_and_batches(tokenizer_dir, items[rank * per:(rank + 1) * per])
    step = torch.nn.parallel.DistributedDataParallel(_Step(r))
    loss = step(qb, cb)
    loss.backward()
    if rank == 0:
        torch.save({"loss": loss.detach(), "grads": _grads(r)}, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_gather_equals_one_process_on_the_concatenated_batch(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    out = tmp_path / "rank0.pt"
    try:
        mp.start_processes(_rank_main, args=(2, str(tmp_path / "store"), str(tiny_tokenizer_dir), str(out)), nprocs=2,
                           start_method="spawn")
    except mp.ProcessExitedException:
        stacks = "\n".join(f"{p.name}:\n{p.read_text()}" for p in sorted(tmp_path.glob("*.stack")))
        pytest.fail(f"a rank died or got stuck; stacks:\n{stacks}")
    ddp = torch.load(out, weights_only=True)

    r, qb, cb = _model_and_batches(str(tiny_tokenizer_dir), _batch(8))
    loss = _Step(r)(qb, cb)
    loss.backward()
    single = _grads(r)

    assert ddp["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert set(ddp["grads"]) == set(single) and "logit_scale" in single
    for name, g in single.items():  # equal up to float summation order (key biases' true gradient is 0)
        assert (ddp["grads"][name] - g).norm() <= 1e-5 * g.norm() + 1e-7, name
    # The gather matters: each rank alone (4 in-batch negatives instead of 8) would give another loss.
    r4, qb4, cb4 = _model_and_batches(str(tiny_tokenizer_dir), _batch(8)[:4])
    assert abs(_Step(r4)(qb4, cb4).item() - loss.item()) > 1e-3


# -- optimiser ----------------------------------------------------------------------------------
def test_param_groups_split_learning_rate_and_weight_decay(tiny_tokenizer_dir: Path) -> None:
    from rare.config.train import OptimParams
    from rare.train.module import param_groups

    r = build_retriever(tiny_model_params(tiny_tokenizer_dir))
    r.new_parameters = {"towers.image_proj.weight"}  # pretend everything else is pretrained
    groups = param_groups(r, OptimParams(lr=1e-5, lr_new=1e-3, weight_decay=0.1))
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(r.towers.image_proj.weight)]["lr"] == 1e-3
    assert by_param[id(r.towers.text_proj.weight)]["lr"] == 1e-5
    assert by_param[id(r.towers.text_proj.weight)]["weight_decay"] == 0.1
    assert by_param[id(r.logit_scale)]["weight_decay"] == 0.0  # no decay on the temperature, biases, norms
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in r.parameters() if p.requires_grad)


def test_cosine_schedule_with_warmup() -> None:
    from rare.train.module import lr_factor

    assert [lr_factor(s, 2, 10, "cosine") for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 2, 10, "cosine") == 1.0
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(7, 0, 10, "constant") == 1.0
