"""Training stage parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rare.config.base import Section


class TrainParams(Section):
    text_mode: Literal["replace", "append"] = "replace"
    seed: int = 0
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-4, gt=0)
