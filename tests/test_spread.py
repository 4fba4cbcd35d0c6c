"""Finding 2's spread statistics (iclpt.reporting.spread): the pooled F pivot for IPT / PT seed-SD ratios and for
residual SDs around a log-length trend, checked against closed forms and by simulation on normal scores with a
known common ratio (cells of different means and scales)."""

import math

import numpy as np
import pytest

from iclpt.reporting.inference import _betainc
from iclpt.reporting.spread import (
    LengthSpread,
    SpreadRatio,
    _log_f_mean,
    _log_f_var,
    length_spread,
    pivot_cdf,
    pooled_ratio,
    seed_spread,
)

REPS = 1000  # ±0.02 around 0.95 is ±2.9 binomial SDs at 1,000 replications
ALPHA = 0.05


def _seed_cells(rng, counts, ratio):
    """One (IPT, PT) pair of normal seed-score arrays per (S_IPT, S_PT) in ``counts``; PT's SD and both means
    differ per cell, IPT's SD is ``ratio`` times PT's."""
    cells = []
    for s_ipt, s_pt in counts:
        mu, sd = rng.uniform(20, 80, 2), 2 * math.exp(rng.uniform(-1, 1))
        cells.append((mu[0] + ratio * sd * rng.standard_normal(s_ipt), mu[1] + sd * rng.standard_normal(s_pt)))
    return cells


def _length_cells(rng, lengths, n_cells, ratio, slopes):
    """(lengths, IPT means, PT means) cells: a line in log length (``slopes`` (IPT, PT)) plus normal dispersion
    whose SD is ``ratio`` times larger for IPT than for PT; intercepts and scales differ per cell."""
    x = np.log(np.asarray(lengths, dtype=float))
    cells = []
    for _ in range(n_cells):
        mu, tau = rng.uniform(20, 80, 2), 2 * math.exp(rng.uniform(-1, 1))
        cells.append((lengths, mu[0] + slopes[0] * x + ratio * tau * rng.standard_normal(len(x)),
                      mu[1] + slopes[1] * x + tau * rng.standard_normal(len(x))))
    return cells


def _rates(results, ratio):
    """(coverage of ``ratio`` by the intervals, rejection rate of H0 ratio = 1 at ALPHA)."""
    cover = np.mean([r.low <= ratio <= r.high for r in results])
    reject = np.mean([r.p_value < ALPHA for r in results])
    return float(cover), float(reject)


# ---- known values -------------------------------------------------------------------------------------------
def test_identical_cells_give_the_cell_ratio():
    ipt, pt = np.array([50.0, 52.0, 49.0, 55.0, 51.0]), np.array([40.0, 48.0, 36.0, 45.0, 50.0])
    r = seed_spread([(ipt, pt), (ipt + 10, pt - 5)])
    cell = np.std(ipt, ddof=1) / np.std(pt, ddof=1)
    assert isinstance(r, SpreadRatio)
    assert r.ratio == pytest.approx(cell, rel=1e-12)
    assert r.cell_ratios == pytest.approx((cell, cell), rel=1e-12)
    assert r.n_cells == 2 and r.dfs == ((4, 4), (4, 4)) and r.alpha == ALPHA
    assert r.low < r.ratio < r.high


def test_geometric_mean_of_cells_with_equal_seed_counts():
    rng = np.random.default_rng(10)
    cells = _seed_cells(rng, [(4, 4)] * 3, 0.5)
    r = seed_spread(cells)
    logs = [math.log(np.std(a, ddof=1) / np.std(b, ddof=1)) for a, b in cells]
    assert r.ratio == pytest.approx(math.exp(np.mean(logs)), rel=1e-12)


def test_unequal_seed_counts_centre_log_f():
    """One cell, 5 IPT and 3 PT seeds: ratio = r · exp(−½ E log F(4, 2)), E log F(4, 2) = ψ(2) − ψ(1) − log 2."""
    assert float(_log_f_mean(np.array(4.0), np.array(2.0))) == pytest.approx(1 - math.log(2), abs=1e-10)
    assert float(_log_f_var(np.array(2.0), np.array(2.0))) == pytest.approx(2 * math.pi**2 / 6, abs=1e-10)
    ipt, pt = np.array([1.0, 2.0, 4.0, 3.0, 7.0]), np.array([2.0, 5.0, 1.0])
    r = seed_spread([(ipt, pt)])
    cell = np.std(ipt, ddof=1) / np.std(pt, ddof=1)
    assert r.dfs == ((4, 2),)
    assert r.ratio == pytest.approx(cell * math.exp(-(1 - math.log(2)) / 2), rel=1e-9)


def test_one_cell_is_fishers_f_test():
    """3 seeds a side: F(2, 2) has CDF x / (1 + x), so the interval and p-value have closed forms."""
    ipt, pt = np.array([10.0, 11.0, 13.0]), np.array([10.0, 17.0, 12.0])
    r = seed_spread([(ipt, pt)], alpha=0.1)
    cell = np.std(ipt, ddof=1) / np.std(pt, ddof=1)
    q = {p: p / (1 - p) for p in (0.05, 0.95)}  # F(2, 2) quantiles
    assert r.low == pytest.approx(cell / math.sqrt(q[0.95]), rel=1e-4)
    assert r.high == pytest.approx(cell / math.sqrt(q[0.05]), rel=1e-4)
    f = cell**2
    assert r.p_value == pytest.approx(2 * min(f / (1 + f), 1 / (1 + f)), abs=1e-4)


@pytest.mark.parametrize("d1,d2", [(1, 9), (4, 4), (2, 6)])
def test_pivot_cdf_of_one_cell_is_the_f_distribution(d1, d2):
    a, b = np.array([float(d1)]), np.array([float(d2)])
    grid, cdf = pivot_cdf(a, b, np.ones(1))
    for u in (-2.0, -0.7, 0.0, 0.4, 1.5):
        x = math.exp(2 * u + float(_log_f_mean(a, b)[0]))  # F at which U = u
        exact = _betainc(d1 / 2, d2 / 2, d1 * x / (d1 * x + d2))
        assert float(np.interp(u, grid, cdf)) == pytest.approx(exact, abs=2e-5)


def test_pivot_cdf_of_several_cells_matches_monte_carlo():
    d1, d2 = np.array([4.0, 2.0, 1.0, 5.0]), np.array([2.0, 3.0, 1.0, 5.0])
    w = 1 / _log_f_var(d1, d2)
    w /= w.sum()
    grid, cdf = pivot_cdf(d1, d2, w)
    f = np.random.default_rng(11).f(d1, d2, size=(200_000, len(d1)))
    u = (0.5 * (np.log(f) - _log_f_mean(d1, d2))) @ w
    for q in (0.01, 0.025, 0.2, 0.5, 0.8, 0.975, 0.99):
        assert float(np.interp(np.quantile(u, q), grid, cdf)) == pytest.approx(q, abs=0.003)


def test_interval_excludes_one_exactly_when_p_below_alpha():
    rng = np.random.default_rng(12)
    for _ in range(100):
        r = seed_spread(_seed_cells(rng, [(5, 5), (3, 4)], rng.uniform(0.3, 1.5)))
        assert (r.p_value < ALPHA) == (not r.low <= 1 <= r.high)


# ---- bad input ------------------------------------------------------------------------------------------------
def test_zero_sd_cell_is_named():
    with pytest.raises(ValueError, match=r"cell 1 \(PT\).*SD 0"):
        seed_spread([([1.0, 2.0, 3.0], [1.0, 4.0, 2.0]), ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])])
    with pytest.raises(ValueError, match=r"cell 0 \(IPT\).*at least 2"):
        seed_spread([([1.0], [1.0, 4.0, 2.0])])
    with pytest.raises(ValueError, match="no cells"):
        seed_spread([])
    with pytest.raises(ValueError, match="alpha"):
        pooled_ratio([(1.0, 2.0)], [(2, 2)], alpha=1.5)
    with pytest.raises(ValueError, match=r"cell 1: SDs must be finite and > 0"):
        pooled_ratio([(1.0, 2.0), (0.0, 2.0)], [(2, 2), (2, 2)])


def test_fewer_than_three_lengths_is_refused():
    with pytest.raises(ValueError, match=r"cell 0: need at least 3 prompt lengths"):
        length_spread([([5, 25], [1.0, 2.0], [3.0, 1.0])])
    with pytest.raises(ValueError, match=r"cell 0 \(PT\).*exactly on a line"):
        length_spread([([1, 10, 100], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="distinct"):
        length_spread([([5, 5, 100], [1.0, 3.0, 2.0], [1.0, 2.5, 3.0])])


# ---- seeds: coverage and type-I by simulation ---------------------------------------------------------------
SEED_SETTINGS = {
    "5 seeds x 2 cells": [(5, 5)] * 2,
    "5 seeds x 4 cells": [(5, 5)] * 4,
    "3 seeds x 3 cells": [(3, 3)] * 3,
    "IPT 5 / PT 3 seeds x 3 cells": [(5, 3)] * 3,
    "mixed seed counts": [(3, 4), (4, 6), (6, 3)],
}


@pytest.mark.parametrize("name", list(SEED_SETTINGS))
def test_seed_interval_covers_and_test_holds_level(name):
    counts = SEED_SETTINGS[name]
    rng = np.random.default_rng([20, len(counts), sum(map(sum, counts))])
    cover, power = _rates([seed_spread(_seed_cells(rng, counts, 0.6)) for _ in range(REPS)], 0.6)
    cover_null, type_one = _rates([seed_spread(_seed_cells(rng, counts, 1.0)) for _ in range(REPS)], 1.0)
    assert 0.93 <= cover <= 0.97, cover
    assert 0.93 <= cover_null <= 0.97, cover_null
    assert type_one <= 0.065, type_one
    assert power > type_one  # ratio 0.6 is detected more often than chance


def test_mde_ratio_has_the_stated_power_and_cells_needed_scales():
    rng = np.random.default_rng(21)
    counts = [(5, 5)] * 4
    mde_ratio = seed_spread(_seed_cells(rng, counts, 1.0)).mde_ratio  # depends on the dfs only
    _, power = _rates([seed_spread(_seed_cells(rng, counts, mde_ratio)) for _ in range(REPS)], mde_ratio)
    assert 0.77 <= power <= 0.83, (mde_ratio, power)
    # an observed ratio equal to the MDE needs these 4 cells; a ratio nearer 1 needs more; none when ≥ 1
    base = pooled_ratio([(mde_ratio, 1.0)] * 4, [(4, 4)] * 4)
    assert base.cells_needed == 4
    weaker = pooled_ratio([(0.7, 1.0)] * 4, [(4, 4)] * 4)
    assert weaker.cells_needed is not None and weaker.cells_needed > 4
    _, power_k = _rates([seed_spread(_seed_cells(rng, [(5, 5)] * weaker.cells_needed, 0.7))
                         for _ in range(REPS // 2)], 0.7)
    assert 0.72 <= power_k <= 0.88, (weaker.cells_needed, power_k)
    assert pooled_ratio([(1.2, 1.0)] * 4, [(4, 4)] * 4).cells_needed is None


# ---- prompt lengths --------------------------------------------------------------------------------------------
def test_length_spread_ignores_a_linear_trend_in_log_length():
    rng = np.random.default_rng(30)
    cells = _length_cells(rng, (1, 10, 50, 100), 3, 0.7, (0.0, 0.0))
    x = np.log([1, 10, 50, 100])
    tilted = [(ell, a + 2.0 * x + 5, b - 4.0 * x) for ell, a, b in cells]
    r, t = length_spread(cells), length_spread(tilted)
    assert isinstance(t, LengthSpread) and t.dfs == ((2, 2),) * 3
    assert t.ratio == pytest.approx(r.ratio, rel=1e-9) and t.p_value == pytest.approx(r.p_value, abs=1e-9)
    for (bi, bp), (ti, tp) in zip(r.slopes, t.slopes):
        assert ti == pytest.approx(bi + 2.0) and tp == pytest.approx(bp - 4.0)


LENGTH_SETTINGS = {
    "3 lengths, no trend": ((5, 25, 100), (0.0, 0.0)),
    "3 lengths, PT trend": ((5, 25, 100), (0.0, 6.0)),
    "4 lengths, no trend": ((1, 10, 50, 100), (0.0, 0.0)),
    "4 lengths, opposite trends": ((1, 10, 50, 100), (-3.0, 6.0)),
}


@pytest.mark.parametrize("name", list(LENGTH_SETTINGS))
def test_length_interval_covers_and_trend_does_not_inflate_type_one(name):
    lengths, slopes = LENGTH_SETTINGS[name]
    rng = np.random.default_rng([31, len(lengths), int(slopes[1])])
    cover, _ = _rates([length_spread(_length_cells(rng, lengths, 3, 0.6, slopes)) for _ in range(REPS)], 0.6)
    null = [length_spread(_length_cells(rng, lengths, 3, 1.0, slopes)) for _ in range(REPS)]
    cover_null, type_one = _rates(null, 1.0)
    assert 0.93 <= cover <= 0.97, cover
    assert 0.93 <= cover_null <= 0.97, cover_null
    assert type_one <= 0.065, type_one
    mean_slopes = np.mean([r.slopes for r in null], axis=(0, 1))
    assert mean_slopes == pytest.approx(slopes, abs=0.4)  # the reported slopes estimate the trends


def test_plain_sd_over_lengths_mistakes_a_trend_for_spread():
    """Why the trend is taken out: the SD of the means over lengths (seed_spread on lengths) rejects H0 nearly
    always when PT rises with length and IPT does not, though their dispersions are equal."""
    rng = np.random.default_rng(32)
    cells = [_length_cells(rng, (1, 10, 50, 100), 3, 1.0, (0.0, 6.0)) for _ in range(200)]
    naive = np.mean([seed_spread([(a, b) for _, a, b in c]).p_value < ALPHA for c in cells])
    separated = np.mean([length_spread(c).p_value < ALPHA for c in cells])
    assert naive > 0.5 and separated <= 0.1, (naive, separated)
