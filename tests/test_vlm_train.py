"""Training the ``vlm`` family: GradCache gives the full-batch step, Lightning's GradCache step equals its plain
step, and an export (LoRA merged, or an adapter beside its base) reloads to the same embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from rare.config.train import ModelParams, OptimParams, TrainParams
from rare.model import EncodeInput, build_retriever, load_retriever, save_retriever
from rare.train.gradcache import grad_cache_step
from rare.train.loss import contrastive_loss
from rare.train.module import RetrieverModule
from tests.vlm_tiny import save_tiny


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:  # noqa: ANN001
    import transformers

    transformers.utils.logging.set_verbosity_error()
    return save_tiny(tmp_path_factory.mktemp("q2") / "ckpt", "qwen2_vl")


def _image(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def _retriever(base: Path, seed: int = 0, **vlm):  # noqa: ANN202
    vlm = {"model": {"pretrained": str(base)}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, **vlm}
    torch.manual_seed(seed)  # peft draws A at random
    r = build_retriever(ModelParams(family="vlm", vlm=vlm))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained-looking LoRA (peft starts B at 0, which would hide half the gradient)
        for name, p in r.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return r


def _pairs(r, n: int = 5) -> tuple[dict, dict]:  # noqa: ANN001
    col = r.collator()
    queries = [EncodeInput("Find a photo. a red circle", None), EncodeInput("Find a caption. a square", _image(56, 84, 1)),
               EncodeInput("Find a photo. a blue triangle", None), EncodeInput("Find it.", _image(56, 56, 2)),
               EncodeInput("Find a photo. green", None)]
    cands = [EncodeInput("", _image(56, 56, 3)), EncodeInput("A square.", None),
             EncodeInput("A blue triangle.", _image(84, 56, 4)), EncodeInput("A thing", _image(56, 56, 5)),
             EncodeInput("Green.", None)]
    return col(queries[:n]), col(cands[:n])


def _grads(r) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {n: p.grad.clone() for n, p in r.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("learn", [False, True])
def test_grad_cache_equals_the_full_batch_step(base: Path, learn: bool) -> None:
    r = _retriever(base, learn_temperature=learn)
    q, c = _pairs(r)
    loss_fn = lambda a, b: contrastive_loss(a, b, r.scale())  # noqa: E731
    full = loss_fn(r(q), r(c))
    full.backward()
    expected = _grads(r)
    assert len(expected) == 2 * 7 * 2 + int(learn)  # A and B of 14 LoRA layers (+ the temperature)
    calls = []
    r.towers.model.visual.register_forward_hook(lambda *_: calls.append(1))
    for chunk, prepare in [(1, None), (2, None), (3, None), (1, r.frozen_features), (3, r.frozen_features)]:
        r.zero_grad()
        calls.clear()
        loss = grad_cache_step(r, q, c, loss_fn, chunk, r.split, prepare=prepare)
        assert abs(float(loss) - float(full.detach())) < 1e-5
        got = _grads(r)
        assert got.keys() == expected.keys()
        for name, g in expected.items():
            assert torch.allclose(got[name], g, atol=1e-5, rtol=1e-4), (chunk, prepare, name)
        # the frozen vision tower runs once per chunk that has images with prepare; without, twice, except for
        # the last candidate chunk, whose first pass keeps its graph and is not run again
        with_images = [bool(p["image_grid_thw"].numel()) for b in (q, c) for p in r.split(b, chunk)]
        assert len(calls) == (sum(with_images) if prepare else 2 * sum(with_images) - with_images[-1]), (chunk, prepare)


def test_split_batch_keeps_each_entrys_patches(base: Path) -> None:
    r = _retriever(base)
    q, _ = _pairs(r)
    parts = r.split(q, 2)
    assert [int(p["size"]) for p in parts] == [2, 2, 1]
    assert sum(p["pixel_values"].shape[0] for p in parts) == q["pixel_values"].shape[0]
    assert [p["image_rows"].tolist() for p in parts] == [[1], [1], []]
    assert torch.equal(torch.cat([p["pixel_values"] for p in parts]), q["pixel_values"])
    # right padding: a chunk drops the columns that are padding in all its rows, and nothing else
    for lo, p in zip(range(0, 5, 2), parts, strict=True):
        mask = q["attention_mask"][lo:lo + 2]
        width = int(mask.sum(dim=1).max())
        assert p["input_ids"].shape[1] == width and torch.equal(p["input_ids"], q["input_ids"][lo:lo + 2, :width])
        assert int(mask[:, width:].sum()) == 0
    assert max(p["input_ids"].shape[1] for p in parts) == q["input_ids"].shape[1]
    assert min(p["input_ids"].shape[1] for p in parts) < q["input_ids"].shape[1]


class _Batches(torch.utils.data.Dataset):
    def __init__(self, batch: dict) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        return self.batch


def _fit(base: Path, chunk: int | None) -> dict[str, torch.Tensor]:
    r = _retriever(base)
    q, c = _pairs(r)
    # eps 1: Adam steps ~ lr * g, so a 1e-7 gradient difference on a ~0 entry cannot turn into a full lr step
    module = RetrieverModule(r, OptimParams(lr=1.0, eps=1.0, lr_new=None, weight_decay=0.0, warmup_steps=0), 2,
                             grad_cache_chunk=chunk)
    loader = torch.utils.data.DataLoader(_Batches({"query": q, "cand": c}), batch_size=None)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == 2
    return {n: p.detach().clone() for n, p in r.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_lightning_grad_cache_steps_like_the_plain_step(base: Path) -> None:
    plain, cached = _fit(base, None), _fit(base, 2)
    start = {n: p.detach() for n, p in _retriever(base).named_parameters() if p.requires_grad}
    assert any(not torch.allclose(plain[n], start[n]) for n in plain)  # it trained
    for name in plain:
        assert torch.allclose(plain[name], cached[name], atol=1e-5), name


class _RankHalf(torch.utils.data.Dataset):
    """Each rank's half of the global batch, as a distributed sampler would hand it out."""

    def __init__(self, halves: list[dict]) -> None:
        self.halves = halves

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        return self.halves[torch.distributed.get_rank()]


@pytest.mark.slow
def test_lightning_ddp_grad_cache_steps_like_one_process_on_the_global_batch(base: Path) -> None:
    """`rare train`'s path on 2 CPU ranks: Lightning's DDP wraps the module, GradCache backs every chunk up
    through it, the loss gathers both ranks' embeddings, DDP averages the gradients. Two steps of that equal
    two plain steps of one process on the whole batch (without the gather they do not)."""
    opt = OptimParams(lr=1.0, eps=1.0, lr_new=None, weight_decay=0.0, warmup_steps=0)
    r = _retriever(base)
    q, c = _pairs(r, 4)
    plain = RetrieverModule(r, opt, 2)
    pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(
        plain, train_dataloaders=torch.utils.data.DataLoader(_Batches({"query": q, "cand": c}), batch_size=None))
    expected = {n: p.detach().clone() for n, p in r.named_parameters() if p.requires_grad}

    r = _retriever(base)
    halves = [{"query": a, "cand": b} for a, b in zip(r.split(q, 2), r.split(c, 2), strict=True)]
    module = RetrieverModule(r, opt, 2, grad_cache_chunk=1)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(_RankHalf(halves), batch_size=None))
    got = {n: p.detach() for n, p in module.retriever.named_parameters() if p.requires_grad}  # rank 0's, sent back
    start = {n: p.detach() for n, p in _retriever(base).named_parameters() if p.requires_grad}
    assert any(not torch.allclose(expected[n], start[n]) for n in expected)  # it trained
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-5), name


@pytest.mark.parametrize("export", ["merged", "adapter"])
def test_export_reloads_to_identical_embeddings(base: Path, export: str, tmp_path: Path) -> None:
    from transformers import AutoModel

    r = _retriever(base, export=export).eval()
    q, c = _pairs(r)
    with torch.no_grad():
        live = torch.cat([r(q), r(c)])
    out = save_retriever(r, tmp_path / "export")
    loaded = load_retriever(out)
    with torch.no_grad():
        again = torch.cat([loaded(q), loaded(c)])
    assert torch.allclose(live, again, atol=1e-5)
    assert (live - torch.cat([_retriever(base, seed=1).eval()(q), _retriever(base, seed=1).eval()(c)]).detach()
            ).abs().max() > 1e-4  # a different LoRA embeds differently: the check can fail
    spec = json.loads((out / "retriever.json").read_text())
    assert spec["family"] == "vlm" and spec["vlm"]["export"] == export
    if export == "merged":
        model = AutoModel.from_pretrained(out / "vlm")  # a plain checkpoint, LoRA folded in
        assert not any("lora" in n for n, _ in model.named_parameters())
        assert not (out / "adapter").exists()
    else:
        adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == 4 and "language_model" in adapter["target_modules"]
        assert not (out / "vlm").exists()
        assert spec["vlm"]["base"] == str(base.resolve())
        assert (out / "adapter" / "adapter_model.safetensors").stat().st_size < 200_000


def test_adapter_export_without_its_base_is_one_clear_error(base: Path, tmp_path: Path) -> None:
    import shutil

    moved = tmp_path / "base"
    shutil.copytree(base, moved)
    r = _retriever(moved, export="adapter")
    out = save_retriever(r, tmp_path / "export")
    shutil.rmtree(moved)
    with pytest.raises(FileNotFoundError, match="its base model .* is not there"):
        load_retriever(out)


def test_params_reject_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="family 'vlm' needs"):
        ModelParams(family="vlm")
    with pytest.raises(ValueError, match="needs a pretrained base"):
        ModelParams(family="vlm", vlm={"model": {"config": {"model_type": "qwen2_vl"}}, "export": "adapter"})
    vlm = {"model": {"pretrained": "/x"}, "grad_cache_chunk": 4}
    with pytest.raises(ValueError, match="set optim.grad_clip to null"):
        TrainParams(model={"family": "vlm", "vlm": vlm}, optim={"grad_clip": 1.0})


def test_mbeir_vlm_profile_holds_lamra_stage_two(tmp_path: Path) -> None:
    import yaml

    from rare.config import load_all

    doc = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    doc["profile"] = "mbeir-vlm"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    params = load_all(tmp_path / "p.yaml")
    train = params["train"]
    vlm = train.model.vlm
    assert train.model.family == "vlm" and params["data"].source == "mbeir"
    assert (vlm.prompt, vlm.pooling, vlm.positions, vlm.temperature, vlm.learn_temperature) == \
        ("lamra", "before_emb", "1d", 0.05, False)
    assert (vlm.lora.r, vlm.lora.alpha, vlm.lora.dropout) == (128, 256, 0.05)
    assert (train.optim.lr, train.optim.weight_decay, train.optim.grad_clip, train.optim.schedule) == \
        (1e-4, 0.0, None, "cosine")
    assert train.batch_size * 8 * train.num_nodes == 960 and train.precision == "bf16-mixed"
    assert load_all("params.yaml")["train"].model.family == "dual"  # the embedded default is untouched
