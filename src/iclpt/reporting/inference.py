"""Inference that treats seeds as random: two-level bootstrap, seed-and-example standard errors, two-sided tests,
proportion intervals, Holm's adjustment and the minimum detectable effect (issue #24).

``iclpt.reporting.stats`` resamples the test examples with the seeds held fixed: its interval is the test-set
uncertainty of the reported seed mean. A claim about a *method* also has to hold for other seeds. The model here is
the crossed design of S seeds (random) on the same n test examples (random), one method m::

    y[s, e] = μ + a[s] + b[e] + g[s, e],   Var a = σ²_seed,  Var b = σ²_example,  Var g = σ²_interaction

so the seed mean of a (linear) statistic has ``Var = σ²_seed / S + σ²_example / n + σ²_interaction / (S·n)``.
For a difference of two methods on the same examples (seeds independent between methods, S_a and S_b of them),
b is the per-example *difference* of the two methods' example effects (the pairing cancels shared difficulty) and
the seed and interaction terms add up over the methods::

    Var(Δ) = σ²_seed,a / S_a + σ²_seed,b / S_b + σ²_example,Δ / n + σ²_int,a / (S_a·n) + σ²_int,b / (S_b·n)

Estimates (unbiased for a mean statistic; for BLEU through the bootstrap's linearisation), from each seed's score on
the test set and on B example resamples shared by all seeds (the inner level of the two-level bootstrap), with
k = n / (n − 1) removing the bootstrap's plug-in bias:

* ``V_seed[m]  = var(seed scores, ddof=1) / S_m``, expectation σ²_seed/S + σ²_int/(S·n);
* ``V_one[m]   = k · mean over seeds of var(a seed's resampled scores)``, expectation (σ²_example + σ²_int) / n;
* ``V_fixed[m] = k · var(resampled seed means)`` (stats' fixed-seed bootstrap), expectation σ²_example/n + σ²_int/(S·n);
* hence ``V_int[m] = (V_one − V_fixed) / (S − 1)`` estimates σ²_int/(S·n), ``V_seed − V_int`` estimates σ²_seed/S,
  and ``V_fixed`` of the difference minus Σ V_int estimates σ²_example,Δ / n (each clipped at 0).

Why not the percentiles of the two-level bootstrap itself (``SeedDraws.two_level``)? Resampling seeds, then examples,
has (derivation in ``two_level_draws``) ``E var* ≈ (1 − 1/S)·σ²_seed/S + σ²_example/n + (3 − 2/S)·σ²_int/(S·n)``:
with 3 seeds it misses a third of the seed variance and has no small-sample (t) correction, so it under-covers when
seeds dominate, and it counts the seed × example interaction up to 3 times, so it over-covers when that dominates
(95 % percentile interval of Δ in tests/test_inference.py's model, 500 replications: 0.94 with 5 seeds and a 60 %
seed share of Var(Δ), 0.85 with 3 seeds and 87 %, 0.98 with 3 seeds and 21 %; 0/100 scores, 3 seeds: 0.91; the
studentized interval below: 0.95, 0.95, 0.97, 0.96). The intervals here are therefore
studentized: ``estimate ± t_ν(1 − α/2) · SE`` with SE² the sum above and ν Satterthwaite's degrees of freedom
(seed terms S − 1, example terms n − 1), and the p-value is the two-sided t test of the same statistic, so the
interval excludes 0 exactly when p < α (test inversion: verdict, interval and p cannot disagree). With one seed
the seed variance cannot be seen; the SE is the fixed-seed one (n − 1 degrees of freedom), as in ``stats``.

0/100 proportions: ``wilson_interval`` and ``clopper_pearson_interval`` for one run (0 of 16 → upper 19.4 % and
20.6 %). A seed-averaged proportion cell (``seed_interval(proportion=True)``) takes the studentized interval,
clipped to [0, 100], widened to at least the Wilson interval of its mean at n *examples* (not S·n rows: the seeds
of one example are correlated, and the Wilson variance p(1 − p)/n bounds the variance of a mean of n values in
[0, 1]). The widening is decisive near 0 and 100, where the SE collapses (all 0 → SE 0 → [0, 0] otherwise):
3 seeds × 16 examples at p ≈ 5 % cover 0.83 studentized, 1.00 widened (conservative there); at p = 50 % with 100
examples, 0.94 and 0.96 (tests/test_inference.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from iclpt.reporting.stats import (
    Bootstrap,
    Statistic,
    bleu_statistic,
    full_sample,
    mean_statistic,
    resample_counts,
    within_noise,
)


# ---- two-level resamples ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedDraws:
    """One method's S seeds scored on the test set and on B example resamples (the same for every seed)."""

    full: np.ndarray  # (S,) each seed's statistic on the test set
    draws: np.ndarray  # (B, S) each seed's statistic on each example resample
    seed_counts: np.ndarray  # (B, S) how often each seed is drawn in each two-level resample
    n_examples: int

    @property
    def n_seeds(self) -> int:
        return len(self.full)

    @property
    def estimate(self) -> float:
        return float(self.full.mean())

    def fixed(self) -> np.ndarray:
        """(B,) seed means with the seeds held fixed (``stats``' bootstrap of a seed mean)."""
        return self.draws.mean(axis=1)

    def two_level(self) -> np.ndarray:
        """(B,) seed means of the two-level resamples: the mean over the drawn seeds (with multiplicity)."""
        return (self.seed_counts * self.draws).sum(axis=1) / self.n_seeds


def mean_statistics(values: np.ndarray, subset: np.ndarray | None = None) -> list[Statistic]:
    """One ``stats.mean_statistic`` per seed of (S, n) per-example 0-100 scores."""
    return [mean_statistic(v, subset) for v in np.atleast_2d(np.asarray(values, dtype=float))]


def bleu_statistics(stats: np.ndarray, metric: Any = None) -> list[Statistic]:
    """One ``stats.bleu_statistic`` (corpus BLEU) per seed of (S, n, k) per-example sufficient statistics."""
    s = np.asarray(stats, dtype=float)
    return [bleu_statistic(x, metric) for x in (s[None] if s.ndim == 2 else s)]


def two_level_draws(stats: Sequence[Statistic], counts: np.ndarray, seed: int, stream: int = 0) -> SeedDraws:
    """Two-level bootstrap of the seed mean of ``stats`` (one per seed): each resample draws S seeds with
    replacement (``default_rng([seed, stream])``; give each method of a comparison its own stream) and the examples
    of ``counts`` row (shared by the drawn seeds, which share the test set). With S = 1 ``two_level()`` is
    ``stats``' ordinary bootstrap on ``counts``.

    With w the seed counts and c the example counts, the resampled mean minus the test-set mean is
    ``Σ_s w_s α_s / S + Σ_e c_e β_e / n + Σ_se w_s c_e γ_se / (S·n)`` (α, β, γ the sample's row, column and
    interaction effects); the three parts are uncorrelated and have variances mean(α²)/S, mean(β²)/n and
    mean(γ²)/(S·n), whose expectations give the ``E var*`` in the module doc."""
    if not stats:
        raise ValueError("two_level_draws: no seeds")
    n_res, n = counts.shape
    s = len(stats)
    full = np.array([float(st(full_sample(n))[0]) for st in stats])
    draws = np.stack([st(counts) for st in stats], axis=1)
    rng = np.random.default_rng([seed, stream])
    seed_counts = rng.multinomial(s, np.full(s, 1 / s), size=n_res).astype(float)
    return SeedDraws(full, draws, seed_counts, n)


# ---- variance components ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Components:
    """Variance components of a seed mean or of a difference of seed means (module doc), per method where they
    belong to one: Var(estimate) = Σ_m seed[m] / S_m + example / n + Σ_m interaction[m] / (S_m·n)."""

    seed: tuple[float, ...]  # σ²_seed of each method (0 where it has one seed: not identifiable)
    interaction: tuple[float, ...]  # σ²_int of each method
    example: float  # σ²_example (of the paired difference for a comparison)
    seeds: tuple[int, ...]  # the run's seeds per method
    rows: int  # the run's test examples
    df: float  # Satterthwaite's degrees of freedom of the estimated variance

    def variance(self, seeds: int | None = None, rows: int | None = None) -> float:
        """Var(estimate) with ``seeds`` per method (default: the run's) and ``rows`` examples (default: the run's)."""
        n = rows or self.rows
        s = [seeds or k for k in self.seeds]
        return sum(v / k + w / (k * n) for v, w, k in zip(self.seed, self.interaction, s)) + self.example / n

    @property
    def se(self) -> float:
        return math.sqrt(self.variance())


def components(parts: Sequence[SeedDraws], signs: Sequence[float] | None = None) -> Components:
    """Components of Σ sign_m · (seed mean of part m) (one part: a cell; parts (a, b), signs (1, −1): a − b)."""
    signs = [1.0] * len(parts) if signs is None else list(signs)
    n = parts[0].n_examples
    k = n / (n - 1) if n > 1 else 1.0
    fixed = sum(sg * p.fixed() for sg, p in zip(signs, parts))
    v_fixed = k * float(np.var(fixed))
    seeds = tuple(p.n_seeds for p in parts)
    seed, inter, terms = [0.0] * len(parts), [0.0] * len(parts), [(v_fixed, n - 1)]
    for i, (p, s) in enumerate(zip(parts, seeds)):
        if s > 1:
            v_seed = float(np.var(p.full, ddof=1)) / s
            v_int = k * (float(np.var(p.draws, axis=0).mean()) - float(np.var(p.fixed()))) / (s - 1)
            seed[i], inter[i] = max(v_seed - v_int, 0.0) * s, max(v_int, 0.0) * s * n
            terms += [(v_seed, s - 1), (v_int, (s - 1) * (n - 1))]
    example = max(v_fixed - sum(w / (s * n) for w, s in zip(inter, seeds)), 0.0) * n
    var = sum(v / s + w / (s * n) for v, w, s in zip(seed, inter, seeds)) + example / n
    denom = sum(t * t / d for t, d in terms if d > 0)
    return Components(tuple(seed), tuple(inter), example, seeds, n, var * var / denom if denom > 0 else math.inf)


# ---- intervals and tests ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedInterval:
    """A seed mean, its studentized (1 − α) interval with seeds and examples random, SE and components."""

    estimate: float
    low: float
    high: float
    se: float
    components: Components


@dataclass(frozen=True)
class SeedComparison:
    """a − b: difference of seed means, studentized interval, SE, two-sided p (H0: Δ = 0) and the verdict
    (within_noise: p ≥ alpha or the interval contains 0, as ``stats.within_noise``; the two agree here)."""

    diff: float
    low: float
    high: float
    se: float
    p_value: float
    within_noise: bool
    components: Components


def seed_interval(stats: Sequence[Statistic], n: int, boot: Bootstrap, proportion: bool = False) -> SeedInterval:
    """Interval of the seed mean of ``stats`` (one per seed) over n examples (``boot``'s resamples); proportion:
    a 0/100 metric (clipped to [0, 100], widened to the Wilson interval of the mean at n examples)."""
    d = two_level_draws(stats, resample_counts(n, boot.n_resamples, boot.seed), boot.seed)
    return interval_from(d, boot.alpha, proportion)


def interval_from(d: SeedDraws, alpha: float, proportion: bool = False) -> SeedInterval:
    """``seed_interval`` of drawn resamples."""
    c = components([d])
    half = t_quantile(1 - alpha / 2, c.df) * c.se
    low, high = d.estimate - half, d.estimate + half
    if proportion:
        w_low, w_high = wilson_interval(d.estimate, d.n_examples, alpha)
        low, high = min(max(low, 0.0), w_low), max(min(high, 100.0), w_high)
    return SeedInterval(d.estimate, low, high, c.se, c)


def seed_comparison(stats_a: Sequence[Statistic], stats_b: Sequence[Statistic], n: int,
                    boot: Bootstrap) -> SeedComparison:
    """a − b over the same n examples (``boot``'s resamples, shared by both methods; seeds drawn independently)."""
    counts = resample_counts(n, boot.n_resamples, boot.seed)
    a, b = two_level_draws(stats_a, counts, boot.seed, 0), two_level_draws(stats_b, counts, boot.seed, 1)
    return comparison_from(a, b, boot.alpha)


def comparison_from(a: SeedDraws, b: SeedDraws, alpha: float) -> SeedComparison:
    """``seed_comparison`` of drawn resamples (a and b on the same example resamples)."""
    return contrast_from([a, b], [1.0, -1.0], alpha)


def contrast_from(parts: Sequence[SeedDraws], signs: Sequence[float], alpha: float) -> SeedComparison:
    """Σ sign_m · (seed mean of part m), e.g. (a, b, c, d) with (1, −1, −1, 1) for the interaction
    (a − b) − (c − d): every part drawn on the same example resamples, seeds independent between parts."""
    if len({p.draws.shape[0] for p in parts}) != 1 or len({p.n_examples for p in parts}) != 1:
        raise ValueError("contrast_from: every part must be drawn on the same example resamples")
    c = components(parts, signs)
    diff = float(sum(sg * p.estimate for sg, p in zip(signs, parts)))
    half = t_quantile(1 - alpha / 2, c.df) * c.se
    p = two_sided_p(diff, c.se, c.df)
    low, high = diff - half, diff + half
    return SeedComparison(diff, low, high, c.se, p, within_noise(p, low, high, alpha), c)


def proportion_floor(c: SeedComparison, n: int, parts: int, alpha: float) -> SeedComparison:
    """A contrast of 0/100 metrics with its SE at least ``100 · sqrt((parts / 2) / (n (n + 2)))``: what half a
    discordant example on each side of each paired difference gives (Agresti and Min's pseudo-counts). Where every
    example agrees (both methods at 0 on 12 rows), the estimated SE is 0 and the interval [0, 0] would claim that no
    difference at all is possible; the floor gives 12 rows an MDE of about 22 points instead. Unchanged when its
    own SE is larger (the floor only acts at the boundary); the added variance counts as example variance."""
    floor = 100.0 * math.sqrt((parts / 2) / (n * (n + 2))) if n > 0 else 0.0
    if c.se >= floor or n < 2:
        return c
    k = c.components
    comps = dataclasses.replace(k, example=k.example + (floor**2 - c.se**2) * n, df=float(n - 1))
    half = t_quantile(1 - alpha / 2, comps.df) * floor
    p = two_sided_p(c.diff, floor, comps.df)
    low, high = c.diff - half, c.diff + half
    return SeedComparison(c.diff, low, high, floor, p, within_noise(p, low, high, alpha), comps)


def two_sided_p(diff: float, se: float, df: float) -> float:
    """P(|T_df| ≥ |diff| / se); 1 when diff is 0, 0 when se is 0 and diff is not."""
    if diff == 0:
        return 1.0
    if se <= 0:
        return 0.0
    t = abs(diff) / se
    if math.isinf(df):
        return 2 * (1 - NormalDist().cdf(t))
    return _betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The q quantile (q > 1/2) of Student's t with df (real, > 0; inf: the normal) degrees of freedom
    (Newton's method on the two-sided tail, kept inside a shrinking bracket)."""
    z = NormalDist().inv_cdf(q)
    if math.isinf(df):
        return z
    target, t, lo, hi = 2 * (1 - q), z, z, math.inf
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for _ in range(200):
        tail = two_sided_p(t, 1.0, df)
        if abs(tail - target) <= 1e-13 * target:
            break
        lo, hi = (t, hi) if tail > target else (lo, t)
        density = math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))
        t_new = t + (tail - target) / (2 * density)
        t = t_new if lo < t_new < hi else (2 * lo if math.isinf(hi) else (lo + hi) / 2)
    return t


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for j in range(1, 400):
        m = j // 2
        if j % 2:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1 + num * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return math.exp(log_front) / (a * f)


# ---- proportions --------------------------------------------------------------------------------------------
def wilson_interval(score: float, n: int, alpha: float) -> tuple[float, float]:
    """Wilson's score interval of a 0-100 proportion ``score`` over n examples, in 0-100."""
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p, z2n = score / 100, z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return 100 * max(centre - half, 0.0), 100 * min(centre + half, 1.0)


def clopper_pearson_interval(score: float, n: int, alpha: float) -> tuple[float, float]:
    """Clopper–Pearson's exact interval of k = score·n/100 successes of n (k an integer), in 0-100."""
    k = round(score * n / 100)
    if abs(k - score * n / 100) > 1e-6:
        raise ValueError(f"clopper_pearson_interval: {score} % of {n} is not a whole number of successes")
    low = 0.0 if k == 0 else _solve(lambda p: _binom_sf(k, n, p) - alpha / 2)  # P(X ≥ k) = α/2
    high = 1.0 if k == n else _solve(lambda p: alpha / 2 - _binom_cdf(k, n, p))  # P(X ≤ k) = α/2
    return 100 * low, 100 * high


def _binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def _binom_sf(k: int, n: int, p: float) -> float:
    return 1 - _binom_cdf(k - 1, n, p)


def _solve(f: Callable[[float], float]) -> float:
    """The root in [0, 1] of an increasing f (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


# ---- multiplicity and power ---------------------------------------------------------------------------------
def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order): reject H_i at family-wise level α when adjusted p_i < α."""
    order = np.argsort(np.asarray(p_values, dtype=float), kind="stable")
    m, out, running = len(order), [0.0] * len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        out[i] = running
    return out


def mde(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a two-sided level-α test with the given power: (z_{1−α/2} + z_power) · se."""
    nd = NormalDist()
    return (nd.inv_cdf(1 - alpha / 2) + nd.inv_cdf(power)) * se


@dataclass(frozen=True)
class Resolution:
    """What would bring the MDE down to a target: test rows at the run's seeds, seeds (per method) at the run's
    rows; None where that alone cannot (the other term already exceeds the target)."""

    rows: int | None
    seeds: int | None


def needed(c: Components, target: float, alpha: float = 0.05, power: float = 0.8) -> Resolution:
    """Smallest rows (seeds kept) and smallest seeds per method (rows kept) with mde(SE) ≤ target: solves
    Var(S, n) = (target / (z_{1−α/2} + z_power))² for n, then for S (``Components.variance``). A method with one
    seed shows no seed variance (taken as 0), so with single-seed runs the seeds answer is a lower bound."""
    v = (target / mde(1.0, alpha, power)) ** 2
    seed_part = sum(s / k for s, k in zip(c.seed, c.seeds))
    row_part = c.example + sum(w / k for w, k in zip(c.interaction, c.seeds))  # × 1/n
    per_seed = sum(c.seed) + sum(c.interaction) / c.rows  # × 1/S
    rows = max(math.ceil(row_part / (v - seed_part) - 1e-9), 1) if v > seed_part else None
    seeds = max(math.ceil(per_seed / (v - c.example / c.rows) - 1e-9), 1) if v > c.example / c.rows else None
    return Resolution(rows, seeds)
