"""Uncertainty of every difference the report shows: a paired, stratified bootstrap over test queries
(and over seeds, where a variant was trained with several) and a paired sign-flip permutation test.

Why these and not a library call alone: the M-BEIR score is the unweighted mean of per-dataset-task
means, so resampling must happen within each dataset-task (strata of different sizes weigh the same),
every evaluation must see the same resampled queries (comparisons are paired), and a study's seeds are
a second level to resample. ``scipy.stats.bootstrap`` resamples independent samples but has no
second level, so the resampling here is a few vectorised count matrices; the permutation test is
``scipy.stats.permutation_test`` (one sample of per-query differences: sign flips).

Everything is expressed per dataset-task and combined by linear ``Contrast``s: a group mean is the mean
of its dataset-tasks, the score the mean of all, a "chiefly" claim a difference of two group gains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval and its permutation p-value (None if not run)."""

    estimate: float
    lo: float
    hi: float
    p: float | None = None

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def sign(self) -> int:
        """+1 when the interval lies above zero, -1 below, 0 when it contains zero."""
        return 1 if self.lo > 0 else -1 if self.hi < 0 else 0

    def text(self, digits: int = 1) -> str:
        return f"{self.estimate:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"

    def as_dict(self) -> dict[str, float | None]:
        return {"estimate": self.estimate, "lo": self.lo, "hi": self.hi, "p": self.p}


@dataclass(frozen=True)
class Contrast:
    """``sum_c coef_c * (a_c - b_c)`` over quantities c (dataset-task names), a and b two rows."""

    a: str
    b: str
    coefs: Mapping[str, float]


def mean_of(dts: Sequence[str], coef: float = 1.0) -> dict[str, float]:
    """Coefficients of a group mean (or the M-BEIR score, over every dataset-task)."""
    return {dt: coef / len(dts) for dt in dts}


def combine(*parts: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in parts:
        for dt, c in part.items():
            out[dt] = out.get(dt, 0.0) + c
    return out


@dataclass
class Samples:
    """Per-query values (x100) of every row: ``values[row][dt]`` is (seeds, queries), queries in the same
    (qrels) order for every row. A row trained once has one seed."""

    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def add(self, row: str, dt: str, per_seed: np.ndarray) -> None:
        per_seed = np.atleast_2d(np.asarray(per_seed, dtype=np.float64))
        self.values.setdefault(row, {})[dt] = per_seed

    def dts(self) -> list[str]:
        seen: list[str] = []
        for per_dt in self.values.values():
            seen += [dt for dt in per_dt if dt not in seen]
        return seen

    def seeds(self, row: str) -> int:
        return max(v.shape[0] for v in self.values[row].values())

    def point(self, row: str, dt: str) -> float:
        return float(self.values[row][dt].mean())


class Bootstrap:
    """Draws the resamples once (fixed seed); every row and contrast is then read from the same draws.

    Queries: per dataset-task, counts ``(B, n)`` from a multinomial (resampling with replacement). Seeds:
    per seed count S, weights ``(B, S)`` the same way, shared by every row with S seeds. Row r's value on
    dataset-task d in resample b is ``sum_q C[b,q]/n * sum_s W[b,s]/S * V[s,q]``.
    """

    def __init__(self, samples: Samples, resamples: int = 2000, seed: int = 0, level: float = LEVEL):
        if resamples < 1:
            raise ValueError(f"resamples must be >= 1, got {resamples}")
        self.samples, self.resamples, self.seed, self.level = samples, resamples, seed, level
        rng = np.random.default_rng(seed)
        self._counts: dict[str, np.ndarray] = {}
        for dt in samples.dts():
            sizes = {v[dt].shape[1] for v in samples.values.values() if dt in v}
            if len(sizes) != 1:
                raise ValueError(f"{dt}: rows have different query counts {sorted(sizes)}; they cannot be paired")
            n = sizes.pop()
            self._counts[dt] = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64) / n
        self._weights: dict[int, np.ndarray] = {}
        for s in sorted({samples.seeds(r) for r in samples.values}):
            self._weights[s] = (np.ones((resamples, 1)) if s == 1 else
                                rng.multinomial(s, np.full(s, 1.0 / s), size=resamples).astype(np.float64) / s)
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def distribution(self, row: str, dt: str) -> np.ndarray:
        """(B,) resampled means of one row on one dataset-task."""
        key = (row, dt)
        if key not in self._cache:
            v = self.samples.values[row][dt]
            w = self._weights[v.shape[0]] if v.shape[0] > 1 else np.ones((self.resamples, 1))
            per_query = w @ v  # (B, n): seed-averaged values under each resample's seed weights
            self._cache[key] = np.einsum("bq,bq->b", self._counts[dt], per_query)
        return self._cache[key]

    def interval(self, c: Contrast, permutations: int = 0) -> Interval:
        est = sum(coef * (self.samples.point(c.a, dt) - self.samples.point(c.b, dt)) for dt, coef in c.coefs.items())
        dist = np.zeros(self.resamples)
        for dt, coef in c.coefs.items():
            dist += coef * (self.distribution(c.a, dt) - self.distribution(c.b, dt))
        tail = (1 - self.level) / 2 * 100
        lo, hi = np.percentile(dist, [tail, 100 - tail])
        p = permutation_p(self.samples, c, permutations, self.seed) if permutations else None
        return Interval(float(est), float(lo), float(hi), p)


def permutation_p(samples: Samples, c: Contrast, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of a paired randomization test: under "no difference", each query's (seed-averaged)
    a-minus-b difference is as likely with either sign. The statistic is the contrast itself."""
    from scipy.stats import permutation_test

    diffs, weights = [], []
    for dt, coef in c.coefs.items():
        d = samples.values[c.a][dt].mean(axis=0) - samples.values[c.b][dt].mean(axis=0)
        diffs.append(d)
        weights.append(np.full(d.shape, coef / d.size))
    d, w = np.concatenate(diffs), np.concatenate(weights)
    if not d.any():
        return 1.0

    def statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return (x * w).sum(axis=axis)

    res = permutation_test((d,), statistic, permutation_type="samples", n_resamples=resamples, vectorized=True,
                           alternative="two-sided", rng=np.random.default_rng(seed), batch=500)
    return float(res.pvalue)


def seed_summary(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) across seeds; sd 0 for one seed."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
