"""Strict pydantic base: unknown keys, wrong types and out-of-range values fail fast.

No number may be infinite or NaN (YAML's ``.inf`` / ``.nan``): ``lr: .inf`` passes ``gt=0`` and would
train to NaN weights; every bound a field declares is meant for finite values.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _numeric(annotation: Any) -> bool:
    """int or float (maybe optional), and not also bool: YAML's true/false must not pass for 1/0."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    return bool(set(args) & {int, float}) and bool not in args


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value
