"""Strict pydantic base: unknown keys, wrong types and out-of-range values fail fast."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
