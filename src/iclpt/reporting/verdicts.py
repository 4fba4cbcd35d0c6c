"""Three-valued verdicts: supported, contradicted or inconclusive, never "not supported" for want of evidence.

A criterion of a finding pools its cells (task x model, or transfer pairs) into one test: the mean of the cells'
contrasts (tables/comparisons.csv rows, each with seeds and examples random), whose variance is the sum of the
cells' variances over K² (independent cells: every cell trains its own prompts) and whose degrees of freedom are
Satterthwaite's. One pooled test per criterion, then Holm's adjustment over the criteria of a finding, keeps the
family-wise error of each finding at alpha however many cells a run has.

* A directional claim (effect > 0) is *supported* when the Holm-adjusted p < alpha and the estimate is positive,
  *contradicted* when p < alpha and it is negative, and *inconclusive* otherwise.
* A "not above" claim (effect ≤ margin, e.g. IPT with random demos not above PT) is *contradicted* when the effect
  is significantly positive and *supported* when the upper end of the (1 − alpha) interval is below the margin
  (a non-superiority test at alpha / 2), else *inconclusive*.

An inconclusive verdict prints the pooled test's minimum detectable effect (80 % power) and what would resolve it:
the test rows (seeds kept) or seeds (rows kept) at which the observed effect would be detected, from the cells'
own variance parts (seed, seed x example, example; ``iclpt.reporting.comparisons``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from iclpt.reporting.inference import holm, mde, t_quantile, two_sided_p

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run"


@dataclass(frozen=True)
class Pooled:
    """The mean contrast of K cells, its interval, two-sided p, MDE and variance parts (summed over cells / K²)."""

    estimate: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    n_cells: int
    mde: float
    v_seed: float
    v_interaction: float
    v_example: float
    rows: int
    seeds: int

    def variance(self, rows_factor: float = 1.0, seeds_factor: float = 1.0) -> float:
        """The variance with every cell's test rows and seeds scaled by these factors."""
        return (self.v_seed / seeds_factor + self.v_interaction / (rows_factor * seeds_factor)
                + self.v_example / rows_factor)


def pool(rows: pd.DataFrame, alpha: float, power: float = 0.8) -> Pooled | None:
    """The pooled test of comparison rows (one per cell): None when there are none."""
    if rows.empty:
        return None
    r = rows.dropna(subset=["diff", "se"])
    if r.empty:
        return None
    k = len(r)
    est = float(r["diff"].mean())
    var = float((r["se"] ** 2).sum()) / k**2
    dfs = r["df"].astype(float).to_numpy()
    terms = (r["se"].to_numpy(dtype=float) ** 2 / k**2) ** 2 / np.where(np.isfinite(dfs), dfs, np.inf)
    df = var**2 / float(terms.sum()) if float(terms.sum()) > 0 else math.inf
    se = math.sqrt(var)
    half = t_quantile(1 - alpha / 2, df) * se if se > 0 else 0.0
    seeds = int(r[["n_seeds_a", "n_seeds_b"]].max(axis=1).min())
    return Pooled(est, est - half, est + half, se, df, two_sided_p(est, se, df), k, mde(se, alpha, power),
                  float(r["v_seed"].sum()) / k**2, float(r["v_interaction"].sum()) / k**2,
                  float(r["v_example"].sum()) / k**2, int(r["n_examples"].min()), seeds)


def _factor_needed(p: Pooled, target: float, which: str, alpha: float, power: float) -> float | None:
    """The smallest scale of rows (or seeds) at which mde ≤ target, the other kept; None if none can."""
    v = (target / mde(1.0, alpha, power)) ** 2
    if which == "rows":
        fixed, scaled = p.v_seed, p.v_interaction + p.v_example
    else:
        fixed, scaled = p.v_example, p.v_seed + p.v_interaction
    if v <= fixed:
        return None
    return max(scaled / (v - fixed), 1.0) if scaled > 0 else 1.0


def resolution(p: Pooled, alpha: float, power: float = 0.8) -> str:
    """'detecting the observed effect would take about R test rows per cell (seeds kept) or S seeds (rows kept)'."""
    target = abs(p.estimate)
    if target == 0 or not math.isfinite(target):
        return "the observed effect is 0: no size of run would detect it"
    parts = []
    f_rows = _factor_needed(p, target, "rows", alpha, power)
    parts.append(f"about {math.ceil(f_rows * p.rows):,} test rows per cell at {p.seeds} seeds" if f_rows
                 else f"no number of test rows at {p.seeds} seeds (the seed variance alone is too large)")
    f_seeds = _factor_needed(p, target, "seeds", alpha, power)
    parts.append(f"about {math.ceil(f_seeds * p.seeds)} seeds at {p.rows} rows" if f_seeds
                 else f"no number of seeds at {p.rows} rows (the example variance alone is too large)")
    return f"detecting the observed {p.estimate:+.2f} with {int(power * 100)} % power would take " + " or ".join(parts)


def directional(p_adj: float, estimate: float, alpha: float) -> str:
    """The verdict of a claim 'effect > 0' (module doc)."""
    if p_adj < alpha:
        return SUPPORTED if estimate > 0 else CONTRADICTED
    return INCONCLUSIVE


def not_above(p: Pooled, p_adj: float, alpha: float, margin: float) -> str:
    """The verdict of a claim 'effect ≤ margin' (module doc)."""
    if p_adj < alpha and p.estimate > 0:
        return CONTRADICTED
    return SUPPORTED if p.high < margin else INCONCLUSIVE


def adjusted(pooled: Sequence[Any]) -> list[float]:
    """Holm-adjusted p-values of the criteria of one finding: each a test with a ``p_value`` (a Pooled or a
    ``spread.SpreadRatio``), or None where a criterion has no test (NaN)."""
    ps = [p.p_value for p in pooled if p is not None]
    adj = iter(holm(ps)) if ps else iter(())
    return [next(adj) if p is not None else math.nan for p in pooled]


def combine(statuses: Sequence[str]) -> str:
    """A finding's verdict from its criteria: contradicted if any is, supported if all are, else inconclusive."""
    s = [x for x in statuses if x != NOT_RUN]
    if not s:
        return NOT_RUN
    if CONTRADICTED in s:
        return CONTRADICTED
    return SUPPORTED if all(x == SUPPORTED for x in s) else INCONCLUSIVE


def fmt_p(p: float) -> str:
    """'0.0123', or '< 0.0001' below it (a t tail that small is not worth more digits)."""
    return "n/a" if p is None or math.isnan(p) else ("< 0.0001" if p < 1e-4 else f"{p:.3g}")


def describe(p: Pooled, p_adj: float, unit: str = "") -> str:
    """'+1.23 [−0.4, 2.9] (K cells, p = 0.12, Holm 0.24, MDE 3.1)'."""
    return (f"{p.estimate:+.2f}{unit} [{p.low:.2f}, {p.high:.2f}] ({p.n_cells} cell{'s' * (p.n_cells != 1)}, "
            f"p {p_text(p.p_value)}, Holm-adjusted {p_text(p_adj)}, MDE {p.mde:.2f})")


def p_text(p: float) -> str:
    """'= 0.0123' or '< 0.0001': a p-value as it follows 'p '."""
    text = fmt_p(p)
    return text if text.startswith("<") else f"= {text}"
