"""A training bar that tells the truth: its total is the run's real optimizer-step count, it ends there,
it shows the loss to 4 significant digits, and it shares the console with logging.

Lightning's own bars count batches per epoch (a total of 75 for a 60-step run, "Epoch 0/0", a ``v_num``)
and print their final state twice; this one counts ``trainer.global_step`` against
``trainer.estimated_stepping_batches`` (max_steps, epochs, accumulation and devices included).
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rare.runtime import console, sig4

log = logging.getLogger(__name__)


class StepProgress(Callback):
    """One bar per fit on the shared console (off a terminal, rich prints it once, when it stops)."""

    def __init__(self, label: str):
        self.label = label
        self.bar: Progress | None = None
        self.task: Any = None
        self.total = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.total = int(trainer.estimated_stepping_batches)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=console())
        self.task = self.bar.add_task(self.label, total=self.total, completed=trainer.global_step, loss="n/a")
        self.bar.start()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.bar is None:
            return
        loss = trainer.callback_metrics.get("train/loss")
        self.bar.update(self.task, completed=min(trainer.global_step, self.total),
                        loss=sig4(float(loss)) if loss is not None else "n/a")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.close()

    def close(self) -> None:
        """Stop the bar and say where it ended in one log line: a terminal's bar is gone from the stage's
        flow run log, this line is not."""
        if self.bar is None:
            return
        task = self.bar.tasks[0]
        self.bar.stop()
        self.bar = None
        log.info("%s: %d/%d steps, loss %s, %.1f s", self.label, task.completed, self.total, task.fields["loss"],
                 task.finished_time or task.elapsed or 0.0)
