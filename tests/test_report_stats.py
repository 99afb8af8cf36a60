"""The stratified paired bootstrap and the permutation test on synthetic runs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from rare.report.stats import Bootstrap, Contrast, Samples, mean_of, permutation_p, seed_summary


def _hits(n: int, hits: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    out[rng.choice(n, size=hits, replace=False)] = 100.0
    return out


def _samples(rows: dict[str, dict[str, np.ndarray]]) -> Samples:
    s = Samples()
    for row, per_dt in rows.items():
        for dt, v in per_dt.items():
            s.add(row, dt, v)
    return s


def test_identical_runs_give_exactly_zero():
    rng = np.random.default_rng(1)
    base = {dt: _hits(100, 60 + i, rng) for i, dt in enumerate(("a_task0", "b_task1", "c_task2"))}
    s = _samples({"none": base, "same": {dt: v.copy() for dt, v in base.items()}})
    iv = Bootstrap(s, resamples=1000, seed=0).interval(Contrast("same", "none", mean_of(list(base))), 2000)
    assert (iv.estimate, iv.lo, iv.hi) == (0.0, 0.0, 0.0)
    assert iv.p == 1.0


def test_ten_more_hits_out_of_100_excludes_zero():
    rng = np.random.default_rng(2)
    base = _hits(100, 50, rng)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:10]] = 100.0  # the same queries, plus 10 hits
    s = _samples({"none": {"x_task0": base}, "better": {"x_task0": better}})
    iv = Bootstrap(s, resamples=1000, seed=0).interval(Contrast("better", "none", {"x_task0": 1.0}), 2000)
    assert iv.estimate == pytest.approx(10.0)
    assert 0 < iv.lo < 10 < iv.hi
    assert iv.sign() == 1 and iv.p < 0.01
    worse = Bootstrap(s, resamples=1000, seed=0).interval(Contrast("none", "better", {"x_task0": 1.0}))
    assert worse.sign() == -1 and worse.lo == pytest.approx(-iv.hi) and worse.hi == pytest.approx(-iv.lo)


def test_same_seed_same_interval_other_seed_differs():
    rng = np.random.default_rng(3)
    rows = {r: {dt: _hits(80, int(rng.integers(20, 60)), rng) for dt in ("a_task0", "b_task1")} for r in ("x", "y")}
    c = Contrast("x", "y", mean_of(["a_task0", "b_task1"]))
    one = Bootstrap(_samples(rows), resamples=1000, seed=7).interval(c, 1000)
    two = Bootstrap(_samples(rows), resamples=1000, seed=7).interval(c, 1000)
    other = Bootstrap(_samples(rows), resamples=1000, seed=8).interval(c, 1000)
    assert one == two
    assert (one.lo, one.hi) != (other.lo, other.hi)


def test_strata_weigh_equally_and_resamples_are_paired():
    """A score over two dataset-tasks of 10 and 1,000 queries is the mean of the two means; a constant shift
    of one row on every query moves every resample by exactly that shift (the pairing)."""
    rng = np.random.default_rng(4)
    small, large = _hits(10, 5, rng), _hits(1000, 200, rng)
    s = _samples({"b": {"s_task0": small, "l_task1": large},
                  "a": {"s_task0": small + 3.0, "l_task1": large + 3.0}})
    boot = Bootstrap(s, resamples=500, seed=0)
    score = mean_of(["s_task0", "l_task1"])
    assert s.point("b", "s_task0") == 50.0 and s.point("b", "l_task1") == 20.0
    iv = boot.interval(Contrast("a", "b", score))
    assert iv.estimate == pytest.approx(3.0) and iv.lo == pytest.approx(3.0) and iv.hi == pytest.approx(3.0)
    # the small stratum is far noisier: its share of the score's spread is much the larger
    spread = {dt: boot.distribution("b", dt).std() for dt in ("s_task0", "l_task1")}
    assert spread["s_task0"] > 5 * spread["l_task1"]


def test_interval_matches_a_hand_resampling():
    """The same multinomial draws, recomputed by explicit index resampling, give the same percentile interval."""
    rng = np.random.default_rng(5)
    a, b = _hits(50, 30, rng), _hits(50, 20, rng)
    s = _samples({"a": {"t_task0": a}, "b": {"t_task0": b}})
    boot = Bootstrap(s, resamples=400, seed=11)
    iv = boot.interval(Contrast("a", "b", {"t_task0": 1.0}))
    draw = np.random.default_rng(11).multinomial(50, np.full(50, 1 / 50), size=400)
    hand = np.array([(np.repeat(a, c) - np.repeat(b, c)).mean() for c in draw])
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.percentile(hand, [2.5, 97.5])))


def test_seeds_widen_the_interval_and_aggregate_by_hand():
    rng = np.random.default_rng(6)
    base = _hits(200, 100, rng)
    seeds = np.stack([np.where(rng.random(200) < p, 100.0, 0.0) for p in (0.45, 0.6, 0.75)])
    s = _samples({"none": {"t_task0": base}, "v": {"t_task0": seeds}})
    assert s.seeds("v") == 3 and s.point("v", "t_task0") == pytest.approx(seeds.mean())
    mean, sd = seed_summary(seeds.mean(axis=1))
    assert mean == pytest.approx(np.mean(seeds.mean(axis=1)))
    assert sd == pytest.approx(np.sqrt(((seeds.mean(axis=1) - mean) ** 2).sum() / 2))
    c = Contrast("v", "none", {"t_task0": 1.0})
    with_seeds = Bootstrap(s, resamples=2000, seed=0).interval(c)
    one = _samples({"none": {"t_task0": base}, "v": {"t_task0": seeds.mean(axis=0)}})
    queries_only = Bootstrap(one, resamples=2000, seed=0).interval(c)
    assert with_seeds.estimate == pytest.approx(queries_only.estimate)
    assert with_seeds.half_width > queries_only.half_width
    assert seed_summary([4.0]) == (4.0, 0.0)


def test_unpaired_rows_are_an_error():
    s = _samples({"a": {"t_task0": np.zeros(5)}, "b": {"t_task0": np.zeros(6)}})
    with pytest.raises(ValueError, match="t_task0: rows have different query counts"):
        Bootstrap(s)


def test_permutation_p_of_a_clear_and_a_null_difference():
    rng = np.random.default_rng(8)
    base = _hits(300, 100, rng)
    shifted = base.copy()
    shifted[np.flatnonzero(base == 0)[:40]] = 100.0
    noise = base.copy()
    noise[np.flatnonzero(base == 0)[:10]] = 100.0  # 10 gains and 10 losses: no net difference
    noise[np.flatnonzero(base == 100)[:10]] = 0.0
    s = _samples({"base": {"t_task0": base}, "shifted": {"t_task0": shifted}, "noise": {"t_task0": noise}})
    assert permutation_p(s, Contrast("shifted", "base", {"t_task0": 1.0}), 2000) < 0.001
    assert permutation_p(s, Contrast("noise", "base", {"t_task0": 1.0}), 2000) > 0.05
