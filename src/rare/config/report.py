"""Report stage parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rare.config.base import Section


class ReportParams(Section):
    gallery_queries: int = Field(6, ge=1, le=50)
    gallery_top_k: int = Field(5, ge=1, le=10)
    gallery_compare: str = "both"     # evaluation shown beside the baseline in the gallery
    seed: int = 0                     # which queries the gallery shows
    findings_pool: Literal["local", "global"] = "local"
    min_gain: float = Field(1.0, ge=0.0)  # points of R@k a difference must exceed to count as a finding
