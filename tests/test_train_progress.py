"""The training bar counts the run's real optimizer steps, ends at them and prints once, loss to 4 digits."""

from __future__ import annotations

import io

import pytest
import pytorch_lightning as pl
import torch
from rich.console import Console
from torch.utils.data import DataLoader, TensorDataset

from rare.runtime import sig4
from rare.train import progress


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_bar_totals_max_steps_ends_there_and_prints_once(monkeypatch: pytest.MonkeyPatch, tmp_path):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", lambda: Console(file=out, width=200, force_terminal=False))
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(20, 2), torch.randn(20, 1)), batch_size=4)  # 5 batches an epoch
    bar = progress.StepProgress("train tiny")
    seen: list[tuple[float, float]] = []

    class Watch(pl.Callback):
        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            task = bar.bar.tasks[0]
            seen.append((task.total, task.completed))

    # Registered before the bar, so it reads the bar before the bar closes.
    trainer = pl.Trainer(max_epochs=3, max_steps=7, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[Watch(), bar])
    trainer.fit(Tiny(), data)
    assert trainer.global_step == 7
    assert seen == [(7, 7)]
    lines = [line for line in out.getvalue().splitlines() if "train tiny" in line]
    assert len(lines) == 1 and "7/7" in lines[0]
    loss = float(trainer.callback_metrics["train/loss"])
    assert f"loss {sig4(loss)}" in lines[0] and len(sig4(loss).replace(".", "").lstrip("0-")) <= 4
    assert "Epoch" not in out.getvalue() and "v_num" not in out.getvalue()


def test_a_library_warning_names_its_package_not_the_venv():
    from rare.runtime import format_warning

    line = format_warning(DeprecationWarning("old"), DeprecationWarning,
                          "/home/u/rare/.venv/lib/python3.11/site-packages/pytorch_lightning/utilities/_pytree.py", 21)
    assert line == "warning: pytorch_lightning/utilities/_pytree.py:21: DeprecationWarning: old\n"
