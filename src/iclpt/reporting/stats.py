"""Bootstrap confidence intervals and paired tests over test examples, with sacrebleu's conventions.

A *statistic* maps resample counts to scores: row b of a (B, n) count matrix says how often each of the n test
examples appears in resample b; a row of ones is the test set itself (the point estimate). Every statistic here
is a **seed mean**: given the per-example data of S runs (seeds) on the same n examples, it scores each run on the
resample and averages over the runs. Resampling the examples once and applying the draw to every seed keeps the
seeds fixed: the interval is the test-set sampling uncertainty of the reported seed mean, not the spread over
seeds (reported separately as the seed std). With one run it is the ordinary bootstrap of that run's score.

* ``mean_statistic``: per-example 0-100 scores (exact match, exact set match, execution accuracy, sentence BLEU
  gains), the mean over the resample. Examples a metric skipped are left out by the caller (the value over the
  evaluated examples, as ``iclpt.evaluation.metrics`` computes it).
* ``bleu_statistic``: per-example BLEU sufficient statistics (``iclpt.evaluation.metrics.bleu_stats``); the resample's
  corpus BLEU is sacrebleu's ``BLEU._compute_score_from_stats`` of the summed statistics, which is how
  sacrebleu's own bootstrap (``corpus_score(n_bootstrap=...)``, ``PairedTest``) rescores.

Conventions (sacrebleu 2.x, ``sacrebleu.significance``):

* resamples are ``numpy.random.default_rng(seed).choice(n, size=(B, n), replace=True)``, the draw of
  sacrebleu's bootstrap: with the same seed (sacrebleu: ``SACREBLEU_SEED``) and B they are sacrebleu's resamples;
* the interval is the order statistics ``floor(B·α/2)`` and ``B − floor(B·α/2) − 1`` of the sorted resampled
  scores (sacrebleu: ``B // 40`` for 95 %; sacrebleu prints their half-width around the resampled mean);
* the paired test scores both systems on the same resamples; with Δ the observed difference and Δ* the resampled
  ones, ``p = (#{|Δ*| − mean|Δ*| > |Δ|} + 1) / (B + 1)`` (sacrebleu's paired bootstrap, after Moses'
  bootstrap-hypothesis-difference-significance.pl). One departure: when Δ* is 0 on every resample (the systems
  score every example alike) p is 1, where that formula gives its minimum 1/(B+1).

A difference is *within noise* when p ≥ α **or** its (1 − α) interval contains 0. The second condition matters
at the margin: sacrebleu's statistic ignores the sign, but once |Δ| is a few standard errors from 0 it counts
only the tail of Δ* beyond 2Δ, so its p is close to a one-sided p (about half the two-sided one) and can fall
below α while the two-sided interval still contains 0. Requiring both keeps the verdict, the p-value and the
interval in the tables from contradicting each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: (B, n) resample counts -> (B,) scores
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Bootstrap:
    """The bootstrap settings (config: report.bootstrap_resamples, report.alpha, report.bootstrap_seed)."""

    n_resamples: int
    alpha: float
    seed: int

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be >= 1, got {self.n_resamples}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """System a minus system b: the observed difference, its bootstrap interval and the paired test
    (within_noise: p ≥ alpha or the interval contains 0)."""

    diff: float
    low: float
    high: float
    p_value: float
    within_noise: bool


def resample_counts(n: int, n_resamples: int, seed: int, strata: np.ndarray | None = None) -> np.ndarray:
    """(B, n) counts of each example in each resample (sacrebleu's draw).

    With ``strata`` (an integer label per example), every stratum is resampled on its own (in the order of its
    labels), so each resample keeps the strata sizes; examples labelled -1 are never drawn."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return _counts(rng.choice(n, size=(n_resamples, n), replace=True), n)
    labels = np.asarray(strata)
    if labels.shape != (n,):
        raise ValueError(f"strata: expected {n} labels, got shape {labels.shape}")
    out = np.zeros((n_resamples, n))
    for g in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == g)
        draw = rng.choice(len(members), size=(n_resamples, len(members)), replace=True)
        out[:, members] = _counts(draw, len(members))
    return out


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    b = idx.shape[0]
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def full_sample(n: int) -> np.ndarray:
    """The counts of the test set itself (one row of ones): a statistic's point estimate."""
    return np.ones((1, n))


def mean_statistic(values: np.ndarray, subset: np.ndarray | None = None) -> Statistic:
    """Seed mean of the per-example mean. values: (n,) or (S, n) scores without NaN; subset: a bool mask of the
    examples the mean runs over (the others count for nothing)."""
    v = np.atleast_2d(np.asarray(values, dtype=float))
    if np.isnan(v).any():
        raise ValueError("mean_statistic: NaN in values (leave out the examples that were not evaluated)")
    mask = np.ones(v.shape[1], bool) if subset is None else np.asarray(subset, bool)

    def stat(counts: np.ndarray) -> np.ndarray:
        c = counts * mask
        return ((c @ v.T) / c.sum(axis=1, keepdims=True)).mean(axis=1)

    return stat


def bleu_statistic(stats: np.ndarray, metric: Any = None) -> Statistic:
    """Seed mean of corpus BLEU. stats: (n, k) or (S, n, k) per-example sufficient statistics; metric: the
    sacrebleu BLEU that rescores (default ``iclpt.evaluation.metrics.bleu_metric()``, the one every score uses)."""
    s = np.asarray(stats, dtype=float)
    s = s[None] if s.ndim == 2 else s
    if s.ndim != 3:
        raise ValueError(f"bleu_statistic: expected (n, k) or (S, n, k) statistics, got shape {s.shape}")
    if metric is None:
        from iclpt.evaluation.metrics import bleu_metric

        metric = bleu_metric()

    def stat(counts: np.ndarray) -> np.ndarray:
        totals = np.matmul(counts, s)  # (S, B, k): each seed's summed statistics per resample
        return np.array([[metric._compute_score_from_stats(t).score for t in seed] for seed in totals]).mean(axis=0)

    return stat


def order_interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    """(low, high): the order statistics floor(B·α/2) and B − floor(B·α/2) − 1 (sacrebleu's for α = 0.05)."""
    x = np.sort(np.asarray(samples, dtype=float))
    lo = int(len(x) * alpha / 2)
    return float(x[lo]), float(x[len(x) - lo - 1])


def p_value(resampled_diffs: np.ndarray, observed: float) -> float:
    """Two-sided p of a difference (sacrebleu's paired bootstrap, with p = 1 when every resampled one is 0)."""
    d = np.abs(np.asarray(resampled_diffs, dtype=float))
    if not d.any():
        return 1.0
    return float((np.sum(d - d.mean() > abs(observed)) + 1) / (len(d) + 1))


def interval(stat: Statistic, counts: np.ndarray, alpha: float) -> Interval:
    """Point estimate (the full test set) and bootstrap interval of one statistic."""
    est = float(stat(full_sample(counts.shape[1]))[0])
    low, high = order_interval(stat(counts), alpha)
    return Interval(est, low, high)


def paired(stat_a: Statistic, stat_b: Statistic, counts: np.ndarray, alpha: float) -> Comparison:
    """a − b on the same resamples: difference, its interval, p (sacrebleu's paired bootstrap) and the verdict."""
    full = full_sample(counts.shape[1])
    diff = float(stat_a(full)[0] - stat_b(full)[0])
    resampled = stat_a(counts) - stat_b(counts)
    low, high = order_interval(resampled, alpha)
    p = p_value(resampled, diff)
    return Comparison(diff, low, high, p, within_noise(p, low, high, alpha))


def within_noise(p: float, low: float, high: float, alpha: float) -> bool:
    """p ≥ alpha, or the interval of the difference contains 0 (see the module doc)."""
    return bool(p >= alpha or low <= 0 <= high)


def bootstrap_interval(stat: Statistic, n: int, boot: Bootstrap) -> Interval:
    """interval() over fresh resamples of n examples drawn with the settings' seed."""
    return interval(stat, resample_counts(n, boot.n_resamples, boot.seed), boot.alpha)


def paired_test(stat_a: Statistic, stat_b: Statistic, n: int, boot: Bootstrap) -> Comparison:
    """paired() over fresh resamples of n examples drawn with the settings' seed."""
    return paired(stat_a, stat_b, resample_counts(n, boot.n_resamples, boot.seed), boot.alpha)
