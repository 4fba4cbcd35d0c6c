"""Intervals for the cells of the E1, E2 and E4 tables, with seeds and test examples both random.

Every interval resamples the *test examples* (``iclpt.reporting.stats``; BLEU from the per-example sufficient
statistics the score rule writes to scores.jsonl, ``"stats"``; the other metrics from the per-example 0/100
scores) and treats the *seeds* as a random sample too (``iclpt.reporting.inference``: two-level resamples, the
variance components of a seed mean, a studentized interval with Satterthwaite's degrees of freedom). A cell's
interval is therefore about the method, not about the seeds that happened to run; with one seed (a deterministic
run) it is the test-set interval. A 0/100 metric (the metric registry's ``interval`` is ``proportion``) is kept in
[0, 100] and widened to at least its Wilson interval, so 0 of 16 reads [0, 19.4], never [0, 0]. A paired test draws
the same example resamples for both systems; its p is two-sided. Examples a metric did not evaluate (Spider:
missing database, failing gold) are left out of every run of the cell, as the metric's value leaves them out.

The functions that attach columns (``with_*_ci``) leave the table's own columns untouched: they add
``<x>_ci_low`` / ``<x>_ci_high`` next to each mean (``ci_low`` / ``ci_high`` next to ``mean``) and, for the
differences a table shows, the paired test's p-value. The comparisons behind findings.md are
``iclpt.reporting.comparisons``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from iclpt.evaluation.metrics import METRICS, PROPORTION
from iclpt.io import DataError, PathLike, read_jsonl
from iclpt.orchestration.methods import METHODS, family_name
from iclpt.reporting.aggregate import (
    DEFAULT_METHODS,
    ICL,
    PT,
    REFERENCE,
    bucket_cells,
    main_setting,
    reference_label,
    run_beside,
)
from iclpt.reporting.inference import (
    SeedComparison,
    SeedDraws,
    SeedInterval,
    bleu_statistics,
    comparison_from,
    interval_from,
    mean_statistics,
    proportion_floor,
    seed_interval,
    two_level_draws,
)
from iclpt.reporting.stats import Bootstrap, Interval, Statistic, resample_counts

RunKey = tuple[str, str, str, int, str, int]


@dataclass(frozen=True)
class RunScores:
    """One run's scores.jsonl: example ids, per-example values (NaN: not evaluated) and BLEU statistics."""

    source: str
    ids: tuple[str, ...]
    values: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]


def load_scores(score_files: Iterable[PathLike]) -> dict[RunKey, RunScores]:
    """{run key (RUN_KEYS order): RunScores} of scores.jsonl files, each named by the metrics.json beside it."""
    out: dict[RunKey, RunScores] = {}
    for f in score_files:
        run = run_beside(f)
        rows = read_jsonl(f, required=("id",))
        names = list(dict.fromkeys(n for r in rows for n in r if n not in ("id", "stats")))
        values = {n: np.array([math.nan if r.get(n) is None else float(r[n]) for r in rows]) for n in names}
        stats: dict[str, np.ndarray] = {}
        for n in dict.fromkeys(n for r in rows for n in (r.get("stats") or {})):
            if not all(n in (r.get("stats") or {}) for r in rows):
                raise DataError(f"{f}: some lines lack the {n!r} statistics")
            stats[n] = np.array([r["stats"][n] for r in rows], dtype=float)
        out[tuple(run)] = RunScores(str(f), tuple(str(r["id"]) for r in rows), values, stats)
    return out


def _runs(scores: dict[RunKey, RunScores], task: str, model: str, method: str, length: int,
          demos: str) -> list[RunScores]:
    """The runs (every seed, by seed) of one setting."""
    return [scores[k] for k in sorted(scores, key=lambda k: k[5]) if k[:5] == (task, model, method, length, demos)]


def setting_runs(scores: dict[RunKey, RunScores], task: str, model: str, method: str, main_len: int,
             demos: str | None = None) -> list[RunScores]:
    """The runs of a method in its main setting (or with the given demo source at its main length)."""
    length, main_demos = main_setting(method, main_len)
    return _runs(scores, task, model, method, length, demos or main_demos)


class Aligned:
    """Per group of runs, the (S, n) per-example values or (S, n, k) BLEU statistics over the examples every run
    evaluated (minus the excluded ones), in one example order (``ids``)."""

    def __init__(self, data: list[np.ndarray], corpus: bool, ids: list[str]) -> None:
        self.data, self.corpus, self.ids = data, corpus, ids

    @property
    def n(self) -> int:
        return len(self.ids)

    def statistics(self, i: int) -> list[Statistic]:
        """One statistic per seed of group i (corpus BLEU from its statistics, else the mean)."""
        return bleu_statistics(self.data[i]) if self.corpus else mean_statistics(self.data[i])


def aligned(groups: Sequence[Sequence[RunScores]], metric: str, exclude: Iterable[str] = (),
            values: bool = False) -> Aligned | None:
    """The groups' data on the examples every run evaluated, minus ``exclude`` (ids); ``values``: the per-example
    values even for a corpus metric (sentence BLEU). None when a group has no run with this metric."""
    kept = [[r for r in g if metric in r.values and not np.isnan(r.values[metric]).all()] for g in groups]
    if not kept or not all(kept):
        return None
    runs = [r for g in kept for r in g]
    ids = runs[0].ids
    for r in runs[1:]:
        if set(r.ids) != set(ids) or len(r.ids) != len(ids):
            raise DataError(f"{r.source} and {runs[0].source} score different test examples: cannot pair them")
    pos = {}
    for r in runs:
        where = {e: i for i, e in enumerate(r.ids)}
        pos[id(r)] = np.array([where[e] for e in ids], dtype=int)
    corpus = [metric in r.stats for r in runs]
    if any(corpus) and not all(corpus):
        missing = next(r.source for r, c in zip(runs, corpus) if not c)
        raise DataError(f"{missing}: no {metric!r} statistics in scores.jsonl (rerun the score rule)")
    drop = set(exclude)
    keep = ~np.any([np.isnan(r.values[metric][pos[id(r)]]) for r in runs], axis=0)
    keep &= np.array([e not in drop for e in ids], dtype=bool)
    use_stats = corpus[0] and not values
    src = (lambda r: r.stats[metric]) if use_stats else (lambda r: r.values[metric])
    data = [np.stack([src(r)[pos[id(r)]][keep] for r in g]) for g in kept]
    return Aligned(data, use_stats, [e for e, k in zip(ids, keep) if k])


class Resamples:
    """The resample counts of n examples (cached for the last n: rows of a table share their task's n)."""

    def __init__(self, boot: Bootstrap) -> None:
        self.boot = boot
        self._n, self._counts = -1, np.empty((0, 0))

    def __call__(self, n: int) -> np.ndarray:
        if n != self._n:
            self._n, self._counts = n, resample_counts(n, self.boot.n_resamples, self.boot.seed)
        return self._counts


def group_draws(al: Aligned, boot: Bootstrap, draws: Resamples | None = None) -> list[SeedDraws]:
    """Two-level draws of every group of ``al`` on the same example resamples (each group its own seed stream)."""
    counts = (draws or Resamples(boot))(al.n)
    return [two_level_draws(al.statistics(i), counts, boot.seed, i) for i in range(len(al.data))]


def is_proportion(metric: str) -> bool:
    """Whether a metric is a 0/100 proportion (its cells take the Wilson-widened interval)."""
    return metric in METRICS and METRICS[metric].interval == PROPORTION


def cell_interval(runs: Sequence[RunScores], metric: str, boot: Bootstrap,
                  draws: Resamples | None = None) -> SeedInterval | None:
    """Interval of the seed mean of a cell's runs, seeds and examples random (None: no per-example scores), kept in
    the scores' range [0, 100] (a studentized interval of a BLEU near 0 would otherwise reach below it)."""
    al = aligned([runs], metric)
    if al is None or al.n == 0:
        return None
    iv = interval_from(group_draws(al, boot, draws)[0], boot.alpha, is_proportion(metric))
    return dataclasses.replace(iv, low=max(iv.low, 0.0), high=min(iv.high, 100.0))


def compare(runs_a: Sequence[RunScores], runs_b: Sequence[RunScores], metric: str, boot: Bootstrap,
            draws: Resamples | None = None) -> tuple[SeedComparison, int] | None:
    """Seed mean(a) − seed mean(b) over the same examples, seeds random: (SeedComparison, n examples)."""
    al = aligned([runs_a, runs_b], metric)
    if al is None or al.n == 0:
        return None
    a, b = group_draws(al, boot, draws)
    c = comparison_from(a, b, boot.alpha)
    return (proportion_floor(c, al.n, 2, boot.alpha) if is_proportion(metric) else c), al.n


def _nan_pair(iv: Interval | SeedInterval | None) -> tuple[float, float]:
    return (iv.low, iv.high) if iv is not None else (math.nan, math.nan)


def _insert_after(df: pd.DataFrame, after: str, cols: dict[str, list[float]]) -> pd.DataFrame:
    out = df.copy()
    at = list(out.columns).index(after) + 1
    for i, (name, vals) in enumerate(cols.items()):
        out.insert(at + i, name, vals)
    return out


# ---- E1 -----------------------------------------------------------------------------------------------------
def with_main_ci(main: pd.DataFrame, scores: dict[RunKey, RunScores], main_len: int,
                 boot: Bootstrap) -> pd.DataFrame:
    """The E1 table with ci_low / ci_high (bootstrap over test examples of the seed mean) after mean."""
    draws = Resamples(boot)
    ivs = [cell_interval(setting_runs(scores, r.task, r.model, r.method, main_len), r.metric, boot, draws)
           for r in main.itertuples()]
    lows, highs = zip(*map(_nan_pair, ivs)) if ivs else ((), ())
    return _insert_after(main, "mean", {"ci_low": list(lows), "ci_high": list(highs)})


# ---- E2 -----------------------------------------------------------------------------------------------------
def with_similarity_ci(sim: pd.DataFrame, scores: dict[RunKey, RunScores], main_len: int,
                       boot: Bootstrap) -> pd.DataFrame:
    """The E2a table with {retrieved,random}_ci_{low,high} after each mean, and the paired test of diff
    (retrieved − random): diff_ci_low, diff_ci_high, diff_p after diff."""
    draws = Resamples(boot)
    cols: dict[str, list[float]] = {c: [] for c in (
        "retrieved_ci_low", "retrieved_ci_high", "random_ci_low", "random_ci_high",
        "diff_ci_low", "diff_ci_high", "diff_p")}
    for r in sim.itertuples():
        if not isinstance(r.task, str):  # the placeholder row of an empty table
            for v in cols.values():
                v.append(math.nan)
            continue
        groups = {d: setting_runs(scores, r.task, r.model, r.method, main_len, d) for d in ("retrieved", "random")}
        for d, g in groups.items():
            lo, hi = _nan_pair(cell_interval(g, r.metric, boot, draws))
            cols[f"{d}_ci_low"].append(lo)
            cols[f"{d}_ci_high"].append(hi)
        c = compare(groups["retrieved"], groups["random"], r.metric, boot, draws)
        cols["diff_ci_low"].append(c[0].low if c else math.nan)
        cols["diff_ci_high"].append(c[0].high if c else math.nan)
        cols["diff_p"].append(c[0].p_value if c else math.nan)
    out = _insert_after(sim, "retrieved_mean", {k: cols[k] for k in ("retrieved_ci_low", "retrieved_ci_high")})
    out = _insert_after(out, "random_mean", {k: cols[k] for k in ("random_ci_low", "random_ci_high")})
    return _insert_after(out, "diff", {k: cols[k] for k in ("diff_ci_low", "diff_ci_high", "diff_p")})


def _gain_matrix(merged: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(S, n) IPT − PT gains of the examples scored in every seed, and each example's bucket (n,)."""
    g = merged.pivot_table(index="seed", columns="id", values="gain", aggfunc="first").dropna(axis=1)
    b = merged.drop_duplicates("id").set_index("id")["bucket"].reindex(g.columns)
    return g.to_numpy(dtype=float), b.to_numpy(dtype=int)


def with_bucket_ci(buckets: pd.DataFrame, per_example: pd.DataFrame, main_len: int, boot: Bootstrap,
                   n_buckets: int, min_per_bucket: int) -> pd.DataFrame:
    """The E2b table with gain_ci_low / gain_ci_high after gain_mean (the seed-mean IPT − PT gain over the
    bucket's examples, seeds and examples random)."""
    found: dict[tuple[str, str, str, int], SeedInterval] = {}
    for task, model, metric, _sim, _bucket, merged in bucket_cells(per_example, main_len, n_buckets,
                                                                   min_per_bucket):
        gains, labels = _gain_matrix(merged)
        for b in np.unique(labels):
            sub = gains[:, labels == b]
            found[(task, model, metric, int(b) + 1)] = seed_interval(mean_statistics(sub), sub.shape[1], boot)
    ivs = [found.get((r.task, r.model, r.metric, int(r.bucket))) for r in buckets.itertuples()]
    lows, highs = zip(*map(_nan_pair, ivs)) if ivs else ((), ())
    return _insert_after(buckets, "gain_mean", {"gain_ci_low": list(lows), "gain_ci_high": list(highs)})


# ---- E4 -----------------------------------------------------------------------------------------------------
def _reference_method(source: str) -> str | None:
    return next((n for n in DEFAULT_METHODS if reference_label(n) == source), None)


def _family_method(kind: str, source: str) -> str:
    """The run method of an E4 family row: its family (the row's kind) from the source task."""
    return family_name(METHODS[kind], source)


def with_transfer_ci(transfer: pd.DataFrame, scores: dict[RunKey, RunScores], main_len: int,
                     boot: Bootstrap) -> pd.DataFrame:
    """The E4 table with ci_low / ci_high after mean on every row, and p_icl / p_pt at the end: the paired test
    of a transfer row against ICL / PT on the target (empty on reference rows). beats_* stay comparisons of
    means; comparisons.csv says which differences are within noise."""
    draws = Resamples(boot)
    lows, highs, p_icl, p_pt = [], [], [], []
    for r in transfer.itertuples():
        method = _family_method(r.kind, r.source) if r.kind != REFERENCE else _reference_method(r.source)
        runs = setting_runs(scores, r.target, r.model, method, main_len) if method else []
        lo, hi = _nan_pair(cell_interval(runs, r.metric, boot, draws))
        lows.append(lo)
        highs.append(hi)
        for ref, out in ((ICL, p_icl), (PT, p_pt)):
            c = compare(runs, setting_runs(scores, r.target, r.model, ref, main_len), r.metric, boot, draws) \
                if r.kind != REFERENCE else None
            out.append(c[0].p_value if c else math.nan)
    res = _insert_after(transfer, "mean", {"ci_low": lows, "ci_high": highs})
    res[f"p_{ICL}"], res[f"p_{PT}"] = p_icl, p_pt
    return res
