"""Bootstrap intervals for the cells of the E1, E2 and E4 tables, and the paired tests behind findings.md.

Every interval and test resamples the *test examples* (``iclpt.reporting.stats``, sacrebleu's conventions): BLEU
from the per-example sufficient statistics the score rule writes to scores.jsonl (``"stats"``), the other metrics from
the per-example 0/100 scores. A cell that averages several seeds gets the bootstrap of that seed mean: each
resample of the examples is applied to every seed's per-example data, each seed is rescored on it and the
scores are averaged. So the interval is the test-set uncertainty of the reported number with the seeds held
fixed; the spread over seeds stays in the std / min / max columns. A paired test draws the same resamples for
both systems (all their seeds). Examples a metric did not evaluate (Spider: missing database, failing gold) are
left out of every run of the cell, as the metric's value leaves them out.

The functions that attach columns (``with_*_ci``) leave the table's own columns untouched: they add
``<x>_ci_low`` / ``<x>_ci_high`` next to each mean (``ci_low`` / ``ci_high`` next to ``mean``) and, for the
differences a table shows, the paired test's p-value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from iclpt.io import DataError, PathLike, read_jsonl
from iclpt.orchestration.methods import METHODS, family_name, label, split_name
from iclpt.reporting.aggregate import (
    DEFAULT_METHODS,
    E2_METHODS,
    ICL,
    IPT,
    PT,
    REFERENCE,
    bucket_cells,
    main_setting,
    reference_label,
    run_beside,
    versus,
)
from iclpt.reporting.stats import (
    Bootstrap,
    Comparison,
    Interval,
    Statistic,
    bleu_statistic,
    interval,
    mean_statistic,
    paired,
    resample_counts,
)

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


def _setting(scores: dict[RunKey, RunScores], task: str, model: str, method: str, main_len: int,
             demos: str | None = None) -> list[RunScores]:
    """The runs of a method in its main setting (or with the given demo source at its main length)."""
    length, main_demos = main_setting(method, main_len)
    return _runs(scores, task, model, method, length, demos or main_demos)


def _aligned(groups: Sequence[Sequence[RunScores]], metric: str) -> tuple[list[np.ndarray], bool] | None:
    """Per group, the (S, n) values or (S, n, k) BLEU statistics over the examples every run evaluated, in one
    example order; and whether they are statistics. None when a group has no run with this metric."""
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
    keep = ~np.any([np.isnan(r.values[metric][pos[id(r)]]) for r in runs], axis=0)
    src = (lambda r: r.stats[metric]) if corpus[0] else (lambda r: r.values[metric])
    return [np.stack([src(r)[pos[id(r)]][keep] for r in g]) for g in kept], corpus[0]


def _statistic(data: np.ndarray, corpus: bool) -> Statistic:
    return bleu_statistic(data) if corpus else mean_statistic(data)


class _Resamples:
    """The resample counts of n examples (cached for the last n: rows of a table share their task's n)."""

    def __init__(self, boot: Bootstrap) -> None:
        self.boot = boot
        self._n, self._counts = -1, np.empty((0, 0))

    def __call__(self, n: int) -> np.ndarray:
        if n != self._n:
            self._n, self._counts = n, resample_counts(n, self.boot.n_resamples, self.boot.seed)
        return self._counts


def cell_interval(runs: Sequence[RunScores], metric: str, boot: Bootstrap,
                  draws: _Resamples | None = None) -> Interval | None:
    """Bootstrap interval of the seed mean of a cell's runs (None: no per-example scores)."""
    al = _aligned([runs], metric)
    if al is None or al[0][0].shape[1] == 0:
        return None
    (data,), corpus = al
    return interval(_statistic(data, corpus), (draws or _Resamples(boot))(data.shape[1]), boot.alpha)


def compare(runs_a: Sequence[RunScores], runs_b: Sequence[RunScores], metric: str, boot: Bootstrap,
            draws: _Resamples | None = None) -> tuple[Comparison, int] | None:
    """Paired bootstrap of seed mean(a) − seed mean(b) over the same examples: (Comparison, n examples)."""
    al = _aligned([runs_a, runs_b], metric)
    if al is None or al[0][0].shape[1] == 0:
        return None
    (a, b), corpus = al
    n = a.shape[1]
    return paired(_statistic(a, corpus), _statistic(b, corpus), (draws or _Resamples(boot))(n), boot.alpha), n


def _nan_pair(iv: Interval | None) -> tuple[float, float]:
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
    draws = _Resamples(boot)
    ivs = [cell_interval(_setting(scores, r.task, r.model, r.method, main_len), r.metric, boot, draws)
           for r in main.itertuples()]
    lows, highs = zip(*map(_nan_pair, ivs)) if ivs else ((), ())
    return _insert_after(main, "mean", {"ci_low": list(lows), "ci_high": list(highs)})


# ---- E2 -----------------------------------------------------------------------------------------------------
def with_similarity_ci(sim: pd.DataFrame, scores: dict[RunKey, RunScores], main_len: int,
                       boot: Bootstrap) -> pd.DataFrame:
    """The E2a table with {retrieved,random}_ci_{low,high} after each mean, and the paired test of diff
    (retrieved − random): diff_ci_low, diff_ci_high, diff_p after diff."""
    draws = _Resamples(boot)
    cols: dict[str, list[float]] = {c: [] for c in (
        "retrieved_ci_low", "retrieved_ci_high", "random_ci_low", "random_ci_high",
        "diff_ci_low", "diff_ci_high", "diff_p")}
    for r in sim.itertuples():
        if not isinstance(r.task, str):  # the placeholder row of an empty table
            for v in cols.values():
                v.append(math.nan)
            continue
        groups = {d: _setting(scores, r.task, r.model, r.method, main_len, d) for d in ("retrieved", "random")}
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
    """The E2b table with gain_ci_low / gain_ci_high after gain_mean (bootstrap over the bucket's examples of
    the seed-mean IPT − PT gain)."""
    found: dict[tuple[str, str, str, int], Interval] = {}
    for task, model, metric, _sim, _bucket, merged in bucket_cells(per_example, main_len, n_buckets,
                                                                   min_per_bucket):
        gains, labels = _gain_matrix(merged)
        for b in np.unique(labels):
            sub = gains[:, labels == b]
            counts = resample_counts(sub.shape[1], boot.n_resamples, boot.seed)
            found[(task, model, metric, int(b) + 1)] = interval(mean_statistic(sub), counts, boot.alpha)
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
    draws = _Resamples(boot)
    lows, highs, p_icl, p_pt = [], [], [], []
    for r in transfer.itertuples():
        method = _family_method(r.kind, r.source) if r.kind != REFERENCE else _reference_method(r.source)
        runs = _setting(scores, r.target, r.model, method, main_len) if method else []
        lo, hi = _nan_pair(cell_interval(runs, r.metric, boot, draws))
        lows.append(lo)
        highs.append(hi)
        for ref, out in ((ICL, p_icl), (PT, p_pt)):
            c = compare(runs, _setting(scores, r.target, r.model, ref, main_len), r.metric, boot, draws) \
                if r.kind != REFERENCE else None
            out.append(c[0].p_value if c else math.nan)
    res = _insert_after(transfer, "mean", {"ci_low": lows, "ci_high": highs})
    res[f"p_{ICL}"], res[f"p_{PT}"] = p_icl, p_pt
    return res


# ---- the comparisons findings.md draws ------------------------------------------------------------------------
COMPARISON_COLS = ["comparison", "task", "model", "metric", "method", "source", "a", "b", "n_examples",
                   "n_seeds_a", "n_seeds_b", "mean_a", "mean_b", "diff", "diff_ci_low", "diff_ci_high", "p_value",
                   "within_noise", "test"]
PAIRED = "paired bootstrap over test examples"


def _row(kind: str, task: str, model: str, metric: str, a: str, b: str, runs_a: Sequence[RunScores],
         runs_b: Sequence[RunScores], boot: Bootstrap, draws: _Resamples, **extra: Any) -> dict[str, Any] | None:
    c = compare(runs_a, runs_b, metric, boot, draws)
    if c is None:
        return None
    cmp_, n = c
    ia = cell_interval(runs_a, metric, boot, draws)
    ib = cell_interval(runs_b, metric, boot, draws)
    return {"comparison": kind, "task": task, "model": model, "metric": metric, "method": "", "source": "",
            "a": a, "b": b, "n_examples": n, "n_seeds_a": len(runs_a), "n_seeds_b": len(runs_b),
            "mean_a": ia.estimate if ia else math.nan, "mean_b": ib.estimate if ib else math.nan,
            "diff": cmp_.diff, "diff_ci_low": cmp_.low, "diff_ci_high": cmp_.high, "p_value": cmp_.p_value,
            "within_noise": cmp_.within_noise, "test": PAIRED, **extra}


def _metrics(runs: Iterable[RunScores]) -> list[str]:
    return sorted({m for r in runs for m in r.values})


def comparisons_table(scores: dict[RunKey, RunScores], per_example: pd.DataFrame | None, main_len: int,
                      boot: Bootstrap, n_buckets: int = 4, min_per_bucket: int = 2) -> pd.DataFrame:
    """Every comparison the findings draw, one row each (a − b, its interval, p, within_noise: p ≥ alpha or the
    interval contains 0, iclpt.reporting.stats.within_noise):

    * ipt_vs_pt: IPT vs PT in their main settings (finding 1, reported);
    * retrieved_vs_random: IPT (criterion) and ICL (reported) with retrieved vs random demos (finding 1);
    * bucket_gap: IPT − PT gain in the most vs the least similar bucket (finding 1; sentence BLEU per example
      for BLEU tasks, as E2b; the two buckets are different examples, so each is resampled on its own);
    * transfer_vs_icl (finding 3, criterion) and transfer_vs_pt (reported): a source task's PT prompt with the
      target's demos vs ICL / PT on the target.
    """
    draws = _Resamples(boot)
    rows: list[dict[str, Any] | None] = []
    cells = sorted({(k[0], k[1]) for k in scores})
    for task, model in cells:
        ipt, pt = _setting(scores, task, model, IPT, main_len), _setting(scores, task, model, PT, main_len)
        for metric in _metrics(ipt):
            rows.append(_row(versus(IPT, PT), task, model, metric, label(IPT), label(PT), ipt, pt, boot, draws))
        for method in E2_METHODS:
            ret = _setting(scores, task, model, method, main_len, "retrieved")
            rnd = _setting(scores, task, model, method, main_len, "random")
            for metric in _metrics(ret):
                rows.append(_row("retrieved_vs_random", task, model, metric, f"{label(method)} retrieved",
                                 f"{label(method)} random", ret, rnd, boot, draws, method=method))
        for name in sorted({k[2] for k in scores if k[:2] == (task, model)}):
            family, source = split_name(name)
            if source is None:
                continue
            tr = _setting(scores, task, model, name, main_len)
            for ref in (ICL, PT):
                kind = versus(family.name, ref)
                refs = _setting(scores, task, model, ref, main_len)
                for metric in _metrics(tr):
                    rows.append(_row(kind, task, model, metric, label(name), reference_label(ref), tr, refs, boot,
                                     draws, method=name, source=source))
    if per_example is not None:
        rows += _bucket_gaps(per_example, main_len, boot, n_buckets, min_per_bucket)
    df = pd.DataFrame([r for r in rows if r is not None], columns=COMPARISON_COLS)
    return df.sort_values(["comparison", "task", "model", "metric", "method", "source"], kind="stable").reset_index(
        drop=True)


def _bucket_gaps(per_example: pd.DataFrame, main_len: int, boot: Bootstrap, n_buckets: int,
                 min_per_bucket: int) -> list[dict[str, Any]]:
    rows = []
    for task, model, metric, _sim, _bucket, merged in bucket_cells(per_example, main_len, n_buckets,
                                                                   min_per_bucket):
        gains, labels = _gain_matrix(merged)
        if len(np.unique(labels)) < 2:
            continue
        lo, hi = labels.min(), labels.max()
        strata = np.where(labels == hi, 1, np.where(labels == lo, 0, -1))
        top, bottom = mean_statistic(gains, labels == hi), mean_statistic(gains, labels == lo)
        c = paired(top, bottom, resample_counts(len(labels), boot.n_resamples, boot.seed, strata), boot.alpha)
        full = np.ones((1, len(labels)))
        rows.append({"comparison": "bucket_gap", "task": task, "model": model, "metric": metric, "method": IPT,
                     "source": "", "a": f"gain in bucket {hi + 1} (most similar)",
                     "b": f"gain in bucket {lo + 1} (least similar)",
                     "n_examples": int((strata >= 0).sum()), "n_seeds_a": gains.shape[0], "n_seeds_b": gains.shape[0],
                     "mean_a": float(top(full)[0]), "mean_b": float(bottom(full)[0]), "diff": c.diff,
                     "diff_ci_low": c.low, "diff_ci_high": c.high, "p_value": c.p_value,
                     "within_noise": c.within_noise, "test": "bootstrap over test examples, each bucket resampled"})
    return rows
