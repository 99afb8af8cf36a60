"""A run killed mid-epoch and resumed from its checkpoint ends bit-identical to an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file

from rare.config.train import OptimParams, TrainParams
from rare.data.layout import MBEIRRoot
from rare.model import build_retriever, load_retriever
from rare.train.datamodule import resolve_inputs
from rare.train.fit import LAST, train_variant, work_dir
from tests.fixtures.models import tiny_model_params


class _Killed(RuntimeError):
    pass


class _KillAt(pl.Callback):
    """Dies as step ``step`` begins, as a SIGKILL would: whatever the last checkpoint holds is what survives."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            raise _Killed(f"killed at step {self.step}")


def _params(tok: Path, cache: Path) -> TrainParams:
    # 36 union queries / batch 8 = 4 steps per epoch: 6 steps cross an epoch, the kill lands mid-epoch.
    # Dropout is on, so the RNG state has to come back too.
    return TrainParams(model=tiny_model_params(tok, dropout=0.1), optim=OptimParams(lr=1e-3, lr_new=3e-3),
                       batch_size=8, max_steps=6, epochs=5, val_every_n_steps=2, checkpoint_every_n_steps=3,
                       num_workers=0, cache_dir=str(cache))


def test_resume_after_kill_equals_straight_run(tmp_path: Path, tiny_root_session: Path, tiny_tokenizer_dir: Path) -> None:
    straight = train_variant("none", tiny_root_session, tmp_path / "straight", _params(tiny_tokenizer_dir, tmp_path / "a")).out

    params = _params(tiny_tokenizer_dir, tmp_path / "b")
    with pytest.raises(_Killed):
        train_variant("none", tiny_root_session, tmp_path / "resumed", params, callbacks=[_KillAt(4)])
    assert not (tmp_path / "resumed").exists()  # no half export
    work = work_dir(params, "none", resolve_inputs(MBEIRRoot(tiny_root_session), params, None, None))
    ckpt = torch.load(work / LAST, weights_only=True)  # nothing in a checkpoint needs unpickling
    assert ckpt["global_step"] == 3 and "rng" in ckpt

    resumed = train_variant("none", tiny_root_session, tmp_path / "resumed", params).out
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ma, mb = load_retriever(straight).meta, load_retriever(resumed).meta
    assert ma.global_steps == mb.global_steps == 6
    assert ma.train_loss == mb.train_loss
    assert ma.val_loss == mb.val_loss and [s for s, _ in ma.val_loss] == [0, 2, 4, 6]
    assert not work.exists()  # checkpoints are dropped once the export is in place

    # Training moved the weights away from the seeded init (so the equality above is not trivial).
    pl.seed_everything(params.seed, verbose=False)
    fresh = build_retriever(params.model)
    assert not torch.equal(fresh.towers.image_proj.weight.detach(), a["towers.image_proj.weight"])


def test_resume_from_a_validation_step_keeps_the_whole_curve(tmp_path: Path, tiny_root_session: Path,
                                                             tiny_tokenizer_dir: Path) -> None:
    """A step checkpoint is written before that step's validation pass: killed after it, the resumed run
    re-validates the step, so the curve is [0, 2, 4, 6] with the same values as an uninterrupted run."""
    def params(cache: Path) -> TrainParams:
        return _params(tiny_tokenizer_dir, cache).model_copy(update={"checkpoint_every_n_steps": 2})

    straight = train_variant("none", tiny_root_session, tmp_path / "straight", params(tmp_path / "a")).out
    with pytest.raises(_Killed):
        train_variant("none", tiny_root_session, tmp_path / "resumed", params(tmp_path / "b"),
                      callbacks=[_KillAt(3)])
    resumed = train_variant("none", tiny_root_session, tmp_path / "resumed", params(tmp_path / "b")).out
    ma, mb = load_retriever(straight).meta, load_retriever(resumed).meta
    assert [s for s, _ in mb.val_loss] == [0, 2, 4, 6]
    assert mb.val_loss == ma.val_loss
    # Identical weights give an identical export, byte for byte: no timings, a fixed header order.
    for name in ("model.safetensors", "meta.json", "retriever.json"):
        assert (straight / name).read_bytes() == (resumed / name).read_bytes(), name
