"""Data stage parameters: generate the embedded benchmark, or point at a real M-BEIR root."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from rare.config.base import Section


class DataParams(Section):
    source: Literal["embedded", "mbeir"] = "embedded"
    mbeir_root: str | None = None  # required when source == "mbeir"
    seed: int = 0

    @model_validator(mode="after")
    def _root_for_mbeir(self) -> DataParams:
        if self.source == "mbeir" and not self.mbeir_root:
            raise ValueError("mbeir_root must be set when source is 'mbeir'")
        return self
