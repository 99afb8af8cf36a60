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
    # Intervals (rare.report.stats): a paired bootstrap over test queries stratified per dataset-task (and
    # over seeds where a study ran), percentile intervals at `level`; a sign-flip permutation test per finding.
    resamples: int = Field(2000, ge=1000)
    permutations: int = Field(10000, ge=0)  # 0: no p-values
    level: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_seed: int = 0
    runtime_dir: str = "metrics/runtime"   # where `rare enhance` left its per-item cost records (untracked)
    audit_top: int = Field(3, ge=0, le=50)  # largest gains and losses listed per dataset-task
