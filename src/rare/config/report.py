"""Report stage parameters."""

from __future__ import annotations

from pydantic import Field

from rare.config.base import Section


class ReportParams(Section):
    gallery_queries: int = Field(6, ge=1, le=50)
    gallery_top_k: int = Field(5, ge=1, le=10)
    seed: int = 0
