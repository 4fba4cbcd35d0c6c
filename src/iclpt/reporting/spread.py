"""Finding 2 as a test: does IPT (soft prompt + demo) spread less than PT (soft prompt alone) over seeds and over
prompt lengths? Pure numpy; the test's null distribution is parameter-free and computed numerically (no sampling).

**Seeds** (``seed_spread``). In cell c (task × model, one metric) the S_I IPT seeds and the S_P PT seeds score
independently and normally, ``N(μ_Ic, σ²_Ic)`` and ``N(μ_Pc, σ²_Pc)``; cells are independent (other tasks or
models, their own training runs). The one shared parameter is the ratio of seed standard deviations
``ρ = σ_Ic / σ_Pc``, the same in every cell; means and scales are free per cell. With r_c = s_I / s_P (sample SDs,
ddof 1) Fisher's F pivot gives, independently per cell,

    F_c = (s²_I / σ²_I) / (s²_P / σ²_P) = (r_c / ρ)² ~ F(d1_c, d2_c),   d1_c = S_I − 1,  d2_c = S_P − 1,

so ``u_c = ½ (log F_c − E log F_c)`` is free of every unknown, with mean 0 and variance
``v_c = ¼ (ψ'(d1/2) + ψ'(d2/2))`` (``E log F(d1, d2) = ψ(d1/2) − ψ(d2/2) − log(d1/d2)``; ψ, ψ' di- and trigamma).
The estimate is ``log ρ̂ = Σ_c w_c (log r_c − ½ E log F_c)`` with inverse-variance weights ``w_c ∝ 1 / v_c``
(Σ w = 1): each term is unbiased for log ρ and these weights minimise the variance of the average; they depend on
the seed counts only, never on the data, so ``log ρ̂ − log ρ = Σ_c w_c u_c =: U`` is an exact pivot. With the same
seed counts in every cell (the usual case) the weights are equal and the centring is 0 when S_I = S_P, so ρ̂ is the
plain ``exp(mean_c log(s_I / s_P))``. U's distribution is computed, not sampled (``pivot_cdf``: the log-F
densities convolved on a grid by FFT, CDF within 1e-5 of the exact one), so results are deterministic. The (1 − α)
interval is ``[ρ̂ e^{−q(1−α/2)}, ρ̂ e^{−q(α/2)}]`` (q: U's quantiles) and the two-sided p of H0 ρ = 1 is
``2 · min(P(U ≤ log ρ̂), P(U ≥ log ρ̂))``: the interval excludes 1 exactly when p < α (test inversion).

Under the model the interval is exact. Measured (tests/test_spread.py, 1,000 replications per setting, true ρ 0.6,
cells of different means and scales; binomial SD ±0.007): 95 % coverage 0.953 with 5 seeds × 2 cells, 0.939 with
5 × 4, 0.953 with 3 × 3, 0.946 with IPT 5 / PT 3 seeds × 3 cells, 0.951 with 3/4, 4/6, 6/3 seeds; type-I rate at
ρ = 1 and α 0.05: 0.059, 0.042, 0.050, 0.048, 0.054 (other seeds, 2,000 replications: coverage 0.934–0.957, type-I
0.043–0.053; 200,000 vectorised replications of 5 × 2: 0.9502). A percentile bootstrap of the same pooled ratio
(seeds resampled within method and cell, resamples with an SD of 0 dropped) does not under-cover here, it
over-covers: 0.98 with 5 × 2, 5 × 4 and 3 × 3 and 0.96 with one 5-seed cell (1,000 replications), with intervals
1.2–1.4 times as wide on the log scale as the F pivot's at 5 seeds and 6 times at 3 seeds (a resample of 5 seeds
has about 3.4 distinct values, of 3 seeds often 1 or 2), so it spends power for nothing and is not used.

Assumptions that matter: normal seed scores (the F test of variances is not robust to heavy tails: with t₅ seed
noise, 5 × 4, 2,000 replications, coverage falls to 0.90 and the type-I rate rises to 0.09; near a 0/100 floor or
ceiling scores are not normal either) and one ratio for all cells (with ratios varying over cells, ρ̂ is a
precision-weighted geometric mean of them and the test still asks whether that is 1, but the interval is too narrow
for the spread of cell ratios). A cell where either method has
the same score for every seed (s = 0, e.g. all at a floor) has no log ratio: ``seed_spread`` raises ValueError
naming it, and the caller leaves such cells out.

Power. Against ρ < 1 the two-sided level-α test rejects on the low side when ``log ρ + U < q(α/2)``; power 80 %
needs ``log ρ = q(α/2) − q(power)``, so ``mde_ratio = exp(q(α/2) − q(0.8))`` (exact; the chance of a high-side
rejection is ignored, < α/2). It is small: 0.33 with 5 seeds × 2 cells, 0.45 with 5 × 4, 0.60 with 5 × 10, 0.23
with 3 × 3 (simulated power at 5 × 4's MDE: 0.81). ``cells_needed`` scales it: the pivot's spread shrinks like
1/√K with K cells of these sizes, so K' = ⌈K · (log mde_ratio / log ρ̂)²⌉ cells detect the observed ρ̂ with 80 %
power (rough: the 1/√K law is the normal approximation of the average of K log F's; 5-seed cells at ρ 0.7: 20
cells, simulated power 0.77); None when ρ̂ ≥ 1.

**Prompt lengths** (``length_spread``). Per cell and method the seed-mean score at L ≥ 3 prompt lengths ℓ is
modelled as ``a + b · log ℓ + e_ℓ``, e_ℓ independent ``N(0, τ²)`` (τ² = the length-to-length dispersion plus the
seed mean's own noise, all that is not the trend). Least squares on log ℓ gives the slope b (reported only) and the
residual variance RSS / (L − 2) with ``RSS / τ² ~ χ²(L − 2)`` whatever a and b are, so the ratio of residual SDs
``τ_I / τ_P`` has the same F pivot with d1 = d2 = L − 2 and is pooled and tested exactly as above. Separating the
trend matters: a plain SD over lengths counts a steady rise with length as instability (a method that gains 3 points
per e-fold would look unstable), and when the methods' slopes differ it rejects H0 in 100 % of 200 replications
with equal dispersions (4 lengths, 3 cells, PT slope 6 a unit log length, IPT flat; detrended: 5 %). Measured
(1,000 replications, 3 cells): coverage 0.952 / 0.961 with lengths 5, 25, 100 without / with a PT trend, 0.953 /
0.943 with 1, 10, 50, 100 without / with opposite trends; type-I 0.047, 0.046, 0.052, 0.043. A trend that is not
linear in log ℓ is counted as dispersion. With L = 3 each method has one residual degree of freedom: valid but weak
(F(1, 1); power 0.08 against ρ 0.6 with 3 cells, 0.16–0.18 with 4 lengths).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpreadRatio:
    """Pooled IPT / PT ratio of standard deviations over independent cells (module doc): estimate, (1 − alpha)
    interval, two-sided p of H0 ratio = 1, per-cell ratios and degrees of freedom, and power (``mde_ratio``: the
    true ratio below 1, nearest 1, that these cells detect with 80 % power at ``alpha``; ``cells_needed``: about
    how many cells of these sizes detect ``ratio`` with 80 % power, None when ratio ≥ 1)."""

    ratio: float
    low: float
    high: float
    p_value: float
    n_cells: int
    cell_ratios: tuple[float, ...]
    dfs: tuple[tuple[int, int], ...]  # (IPT, PT) degrees of freedom per cell
    mde_ratio: float
    cells_needed: int | None
    alpha: float


@dataclass(frozen=True)
class LengthSpread(SpreadRatio):
    """``SpreadRatio`` of the residual SDs around each method's log-length trend, with the trends' slopes
    (score per unit of log length, i.e. per e-fold of prompt length) per cell as (IPT, PT)."""

    slopes: tuple[tuple[float, float], ...]


# ---- seeds ----------------------------------------------------------------------------------------------------
def seed_spread(cells: Sequence[tuple[Sequence[float], Sequence[float]]], alpha: float = 0.05,
                power: float = 0.8) -> SpreadRatio:
    """Pooled seed-SD ratio IPT / PT over ``cells``, each (IPT seed scores, PT seed scores), ≥ 2 seeds a side (the
    counts may differ). Raises ValueError naming the cell when a side has fewer than 2 finite scores or SD 0."""
    if not cells:
        raise ValueError("seed_spread: no cells")
    sds, dfs = [], []
    for i, (ipt, pt) in enumerate(cells):
        pair = [_sample_sd(x, f"seed_spread: cell {i} ({side})") for x, side in ((ipt, "IPT"), (pt, "PT"))]
        sds.append((pair[0][0], pair[1][0]))
        dfs.append((pair[0][1], pair[1][1]))
    return pooled_ratio(sds, dfs, alpha, power)


def _sample_sd(values: Sequence[float], where: str) -> tuple[float, int]:
    """(sample SD with ddof 1, its degrees of freedom) of one side of a cell."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"{where}: expected a 1-D array of at least 2 seed scores, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: scores must be finite, got {x.tolist()}")
    sd = float(np.std(x, ddof=1))
    if sd == 0:
        raise ValueError(f"{where}: every seed scores {x[0]:g} (SD 0): leave this cell out of the spread test")
    return sd, len(x) - 1


# ---- prompt lengths -------------------------------------------------------------------------------------------
def length_spread(cells: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float]]], alpha: float = 0.05,
                  power: float = 0.8) -> LengthSpread:
    """Pooled ratio IPT / PT of the residual SDs around a linear trend in log(prompt length), over ``cells``, each
    (prompt lengths, IPT seed-mean scores, PT seed-mean scores) at those L ≥ 3 distinct positive lengths."""
    if not cells:
        raise ValueError("length_spread: no cells")
    sds, dfs, slopes = [], [], []
    for i, (lengths, ipt, pt) in enumerate(cells):
        where = f"length_spread: cell {i}"
        x = _log_lengths(lengths, where)
        (s_i, b_i), (s_p, b_p) = (_trend_residual_sd(x, y, f"{where} ({side})")
                                  for y, side in ((ipt, "IPT"), (pt, "PT")))
        sds.append((s_i, s_p))
        dfs.append((len(x) - 2, len(x) - 2))
        slopes.append((b_i, b_p))
    base = pooled_ratio(sds, dfs, alpha, power)
    return LengthSpread(**vars(base), slopes=tuple(slopes))


def _log_lengths(lengths: Sequence[float], where: str) -> np.ndarray:
    ell = np.asarray(lengths, dtype=float)
    if ell.ndim != 1 or len(ell) < 3:
        raise ValueError(f"{where}: need at least 3 prompt lengths (a trend and a residual), got {ell.tolist()}")
    if not np.all(np.isfinite(ell)) or np.any(ell <= 0) or len(np.unique(ell)) != len(ell):
        raise ValueError(f"{where}: prompt lengths must be distinct, finite and > 0, got {ell.tolist()}")
    return np.log(ell)


def _trend_residual_sd(x: np.ndarray, values: Sequence[float], where: str) -> tuple[float, float]:
    """(residual SD with L − 2 df, slope) of the least-squares line of ``values`` on x (log lengths)."""
    y = np.asarray(values, dtype=float)
    if y.shape != x.shape or not np.all(np.isfinite(y)):
        raise ValueError(f"{where}: expected {len(x)} finite scores (one per length), got {y.tolist()}")
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc))
    resid = y - y.mean() - slope * xc
    rss = float(resid @ resid)
    if rss <= 1e-24 * max(float(y @ y), 1.0):
        raise ValueError(f"{where}: scores lie exactly on a line in log length (residual SD 0), got {y.tolist()}")
    return math.sqrt(rss / (len(x) - 2)), slope


# ---- the pooled F pivot ---------------------------------------------------------------------------------------
def pooled_ratio(sds: Sequence[tuple[float, float]], dfs: Sequence[tuple[int, int]], alpha: float = 0.05,
                 power: float = 0.8) -> SpreadRatio:
    """``SpreadRatio`` of per-cell (IPT SD, PT SD) > 0 with (IPT, PT) degrees of freedom ≥ 1 (module doc)."""
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"pooled_ratio: alpha and power must lie in (0, 1), got {alpha}, {power}")
    d1, d2 = (np.array([d[k] for d in dfs], dtype=float) for k in (0, 1))
    if len(sds) != len(dfs) or np.any(d1 < 1) or np.any(d2 < 1):
        raise ValueError(f"pooled_ratio: expected one (df IPT, df PT) ≥ 1 per cell, got {list(dfs)}")
    cell = np.array([a / b if a > 0 and b > 0 and math.isfinite(a / b) else math.nan for a, b in sds])
    if np.any(np.isnan(cell)):
        raise ValueError(f"pooled_ratio: cell {int(np.argmax(np.isnan(cell)))}: SDs must be finite and > 0, "
                         f"got {sds[int(np.argmax(np.isnan(cell)))]}")
    w = 1 / _log_f_var(d1, d2)
    w /= w.sum()
    est = float(w @ (np.log(cell) - _log_f_mean(d1, d2) / 2))
    grid, cdf = pivot_cdf(d1, d2, w)
    q_lo, q_hi, q_pow = np.interp([alpha / 2, 1 - alpha / 2, power], cdf, grid)
    below = float(np.interp(est, grid, cdf, left=0.0, right=1.0))
    mde_log = float(q_lo - q_pow)
    return SpreadRatio(
        ratio=math.exp(est), low=math.exp(est - q_hi), high=math.exp(est - q_lo),
        p_value=min(1.0, 2 * min(below, 1 - below)), n_cells=len(cell), cell_ratios=tuple(cell.tolist()),
        dfs=tuple((int(a), int(b)) for a, b in zip(d1, d2)), mde_ratio=math.exp(mde_log),
        cells_needed=None if est >= 0 else max(1, math.ceil(len(cell) * (mde_log / est) ** 2 - 1e-9)), alpha=alpha)


def pivot_cdf(d1: np.ndarray, d2: np.ndarray, weights: np.ndarray,
              points: int = 2**12) -> tuple[np.ndarray, np.ndarray]:
    """(grid, CDF) of U = Σ_c w_c · ½ (log F_c − E log F_c), F_c ~ F(d1_c, d2_c) independent: each term's density
    on a grid of ±30 SD(U) (each term's SD is at most SD(U) and log F's tails are exponential, so what lies outside
    is below e^-40), made into point masses and convolved by FFT (the period, 60 SD(U), leaves no wrap-around).
    With the default 4,096 points the CDF is within 1e-5 of the exact one (one cell: the F distribution)."""
    half = 30 * math.sqrt(float(np.sum(weights**2 * _log_f_var(d1, d2) / 4)))
    step = 2 * half / points
    u = (np.arange(points) - points // 2) * step
    spectrum = np.ones(points // 2 + 1, dtype=complex)
    terms, counts = np.unique(np.stack([d1, d2, weights], axis=1), axis=0, return_counts=True)
    for (a, b, w), n in zip(terms, counts):  # cells alike in df (hence in weight) share one transform
        y = 2 * u / w + float(_log_f_mean(a, b))  # log F at which the term equals u
        mass = np.exp(_log_f_density(y, a, b))
        spectrum *= np.fft.rfft(np.fft.ifftshift(mass / mass.sum())) ** n
    mass = np.clip(np.fft.fftshift(np.fft.irfft(spectrum, points)), 0.0, None)
    return u + step / 2, np.cumsum(mass) / mass.sum()


def _log_f_density(y: np.ndarray, d1: float, d2: float) -> np.ndarray:
    """log density of log F(d1, d2) at y: (d1/2)(y + log(d1/d2)) − ((d1 + d2)/2)·log(1 + (d1/d2)e^y) − log B."""
    z = y + math.log(d1 / d2)
    log_beta = math.lgamma(d1 / 2) + math.lgamma(d2 / 2) - math.lgamma((d1 + d2) / 2)
    return d1 / 2 * z - (d1 + d2) / 2 * np.logaddexp(0.0, z) - log_beta


def _log_f_mean(d1: np.ndarray | float, d2: np.ndarray | float) -> np.ndarray:
    """E log F(d1, d2) = ψ(d1/2) − ψ(d2/2) − log(d1/d2), elementwise."""
    return np.vectorize(lambda a, b: _digamma(a / 2) - _digamma(b / 2) - math.log(a / b), otypes=[float])(d1, d2)


def _log_f_var(d1: np.ndarray | float, d2: np.ndarray | float) -> np.ndarray:
    """Var log F(d1, d2) = ψ'(d1/2) + ψ'(d2/2), elementwise."""
    return np.vectorize(lambda a, b: _trigamma(a / 2) + _trigamma(b / 2), otypes=[float])(d1, d2)


def _digamma(x: float) -> float:
    """ψ(x), x > 0: recurrence ψ(x) = ψ(x + 1) − 1/x up to x ≥ 8, then the asymptotic series (error < 1e-11)."""
    acc = 0.0
    while x < 8:
        acc, x = acc - 1 / x, x + 1
    r = 1 / (x * x)
    return acc + math.log(x) - 0.5 / x - r * (1 / 12 - r * (1 / 120 - r * (1 / 252 - r / 240)))


def _trigamma(x: float) -> float:
    """ψ'(x), x > 0: recurrence ψ'(x) = ψ'(x + 1) + 1/x² up to x ≥ 8, then the asymptotic series."""
    acc = 0.0
    while x < 8:
        acc, x = acc + 1 / (x * x), x + 1
    r = 1 / (x * x)
    return acc + 1 / x + r / 2 + r / x * (1 / 6 - r * (1 / 30 - r * (1 / 42 - r / 30)))
