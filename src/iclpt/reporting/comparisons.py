"""Every comparison findings.md draws, with seeds and test examples both random (tables/comparisons.csv).

Each row is a contrast of seed means on the same test examples (``iclpt.reporting.inference``): its estimate, the
studentized interval, the SE and its Satterthwaite degrees of freedom, the two-sided p, the minimum detectable
effect at the run's size (80 % power at the run's alpha) and the three variance parts it is made of (seeds,
seed x example interaction, examples), from which findings.md says how many rows or seeds would resolve a test.
A kind's ``a`` and ``b`` name what is compared; ``subset`` is ``all`` or ``no_duplicates`` (the rows whose top
retrieved demo has an input identical to theirs left out; finding 1's kinds only); the ``ipt_vs_pt`` row of
``all`` counts those rows among the ones it compares (``n_dup_input``) and, of them, the ones whose demo has
their target too (``n_dup_pair``).

Kinds (F = the finding that reads it):

* ``pt_vs_zeroshot`` (the regime gate): PT in its main setting − zero-shot;
* ``ipt_vs_pt`` (F1, reported): IPT − PT in their main settings;
* ``retrieved_vs_random`` (F1, reported): IPT and ICL with retrieved − random demos;
* ``similarity_interaction`` (F1): (IPT retrieved − IPT random) − (ICL retrieved − ICL random), so a prompt that
  adds nothing to ICL cannot carry it;
* ``random_demos_vs_pt`` (F1, the "requires" half): IPT with random demos − PT;
* ``similarity_slope`` (F1): slope of the per-example IPT − PT gain on the top retrieved demo's similarity over
  all test rows (gain points per unit of cosine similarity; per-example scores, sentence BLEU for BLEU tasks). The
  slope of a seed mean is the seed mean of per-seed slopes, and a seed's slope is the mean of its per-example
  slope-plus-influence values (``slope_values``), so it takes the same seed-and-example inference (the sandwich,
  HC0, variance);
* ``transfer_vs_icl``, ``transfer_vs_untrained`` (F3) and ``transfer_vs_pt`` (F3, reported): a source task's
  PT prompt with the target's demos − ICL / the untrained-prompt control / PT on the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from iclpt.io import DataError, PathLike, read_json
from iclpt.orchestration.methods import ROLE_UNTRAINED_PROMPT_AND_DEMOS, label, method_with_role, split_name
from iclpt.reporting.aggregate import BASELINES, ICL, IPT, PT, reference_label, select_main, versus
from iclpt.reporting.inference import (
    SeedComparison,
    contrast_from,
    mde,
    mean_statistics,
    proportion_floor,
    two_level_draws,
)
from iclpt.reporting.stats import Bootstrap
from iclpt.reporting.uncertainty import (
    Resamples,
    RunKey,
    RunScores,
    aligned,
    group_draws,
    is_proportion,
    setting_runs,
)

CONTROL = method_with_role(ROLE_UNTRAINED_PROMPT_AND_DEMOS)
ZEROSHOT = BASELINES[0]
GATE = versus(PT, ZEROSHOT)
INTERACTION, RANDOM_VS_PT, SLOPE = "similarity_interaction", f"random_demos_vs_{PT}", "similarity_slope"
ALL, NO_DUPLICATES = "all", "no_duplicates"
#: the kinds finding 1 recomputes without the rows whose top demo duplicates their input
DEDUP_KINDS = (versus(IPT, PT), INTERACTION, RANDOM_VS_PT, SLOPE)

COMPARISON_COLS = ["comparison", "task", "model", "metric", "method", "source", "subset", "a", "b", "n_examples",
                   "n_seeds_a", "n_seeds_b", "mean_a", "mean_b", "diff", "diff_ci_low", "diff_ci_high", "se", "df",
                   "p_value", "within_noise", "mde", "v_seed", "v_interaction", "v_example", "n_dup_input",
                   "n_dup_pair", "test"]
TEST = "seeds and test examples random: studentized two-level bootstrap, two-sided t"


def _parts_row(c: SeedComparison, n: int, alpha: float) -> dict[str, Any]:
    """The columns a contrast contributes: estimate, interval, test, MDE and the variance parts."""
    k = c.components
    return {"n_examples": n, "diff": c.diff, "diff_ci_low": c.low, "diff_ci_high": c.high, "se": c.se,
            "df": k.df, "p_value": c.p_value, "within_noise": c.within_noise, "mde": mde(c.se, alpha),
            "v_seed": sum(v / s for v, s in zip(k.seed, k.seeds)),
            "v_interaction": sum(w / (s * k.rows) for w, s in zip(k.interaction, k.seeds)),
            "v_example": k.example / k.rows, "test": TEST}


def contrast_row(kind: str, cell: tuple[str, str, str], names: tuple[str, str], groups: Sequence[Sequence[RunScores]],
                 signs: Sequence[float], boot: Bootstrap, draws: Resamples, exclude: Iterable[str] = (),
                 subset: str = ALL, **extra: Any) -> dict[str, Any] | None:
    """One row: Σ sign · seed mean of each group on the cell's (task, model, metric) examples; with two groups
    mean_a / mean_b are their means, with four ((a, b, c, d), (1, −1, −1, 1)) the gaps a − b and c − d."""
    task, model, metric = cell
    al = aligned(groups, metric, exclude)
    if al is None or al.n == 0:
        return None
    parts = group_draws(al, boot, draws)
    c = contrast_from(parts, signs, boot.alpha)
    if is_proportion(metric):
        c = proportion_floor(c, al.n, len(parts), boot.alpha)
    est = [p.estimate for p in parts]
    mean_a, mean_b = (est[0], est[1]) if len(est) == 2 else (est[0] - est[1], est[2] - est[3])
    return {"comparison": kind, "task": task, "model": model, "metric": metric, "method": "", "source": "",
            "subset": subset, "a": names[0], "b": names[1], "n_seeds_a": len(groups[0]), "n_seeds_b": len(groups[1]),
            "mean_a": mean_a, "mean_b": mean_b, **_parts_row(c, al.n, boot.alpha), **extra}


def slope_values(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(S, n) per-example values whose mean is each seed's OLS slope of y on x and whose resampled means vary as
    the slope does: the slope plus its influence n · (x_e − x̄) · residual_e / Σ(x − x̄)² (the sandwich, HC0, linear
    approximation; the intercept and a seed's shift do not enter it, as they do not enter the slope)."""
    xc = np.asarray(x, dtype=float) - float(np.mean(x))
    ss = float(xc @ xc)
    if ss <= 0:
        raise ValueError("slope_values: the similarities are all equal; no slope can be fitted")
    y = np.atleast_2d(np.asarray(y, dtype=float))
    slope = (y - y.mean(axis=1, keepdims=True)) @ xc / ss
    resid = y - y.mean(axis=1, keepdims=True) - slope[:, None] * xc
    return slope[:, None] + len(xc) * xc * resid / ss


def slope_row(cell: tuple[str, str, str], ipt: Sequence[RunScores], pt: Sequence[RunScores], sim: pd.Series,
              boot: Bootstrap, exclude: Iterable[str] = (), subset: str = ALL) -> dict[str, Any] | None:
    """The slope of the per-example IPT − PT gain on the top demo's similarity (``similarity_slope``)."""
    task, model, metric = cell
    al = aligned([ipt, pt], metric, set(exclude) | {e for e in (ipt[0].ids if ipt else ()) if e not in sim.index},
                 values=True)
    if al is None or al.n < 3:
        return None
    x = sim.reindex(al.ids).to_numpy(dtype=float)
    if float(np.ptp(x)) == 0:
        return None
    counts = Resamples(boot)(al.n)
    parts = [two_level_draws(mean_statistics(slope_values(d, x)), counts, boot.seed, i) for i, d in enumerate(al.data)]
    c = contrast_from(parts, [1.0, -1.0], boot.alpha)
    return {"comparison": SLOPE, "task": task, "model": model, "metric": metric, "method": IPT, "source": "",
            "subset": subset, "a": f"{label(IPT)} slope on similarity", "b": f"{label(PT)} slope on similarity",
            "n_seeds_a": len(ipt), "n_seeds_b": len(pt), "mean_a": parts[0].estimate, "mean_b": parts[1].estimate,
            **_parts_row(c, al.n, boot.alpha)}


def top_similarity(per_example: pd.DataFrame | None, main_len: int) -> dict[tuple[str, str], pd.Series]:
    """{(task, model): top retrieved demo similarity per test id} (the IPT runs', mean over seeds)."""
    if per_example is None or per_example.empty:
        return {}
    ipt = select_main(per_example, IPT, main_len)
    return {(t, m): g.groupby("id")["top_demo_score"].mean().dropna() for (t, m), g in ipt.groupby(["task", "model"])}


def _metrics(runs: Iterable[RunScores]) -> list[str]:
    return sorted({m for r in runs for m in r.values})


@dataclass(frozen=True)
class Duplicates:
    """A task's test rows whose top retrieved demo has their input (``input_ids``), and of those the ones whose
    demo also has their target (``pair_ids``), out of ``n`` test rows (the retrieval summary of the test split)."""

    input_ids: frozenset[str]
    pair_ids: frozenset[str]
    n: int


def read_duplicates(summary_files: Iterable[PathLike]) -> dict[str, Duplicates]:
    """{task: Duplicates} from retrieval summary.json files (their ``test`` split)."""
    out = {}
    for f in summary_files:
        doc = read_json(f)
        test = (doc.get("splits") or {}).get("test")
        if not isinstance(test, dict) or "first_demo_identical_input_ids" not in test:
            raise DataError(f"{f}: no test-split duplicate ids (first_demo_identical_input_ids); rerun "
                            "retrieval_summary")
        out[str(doc["task"])] = Duplicates(frozenset(map(str, test["first_demo_identical_input_ids"])),
                                           frozenset(map(str, test.get("first_demo_identical_pair_ids", []))),
                                           int(test["n_queries"]))
    return out


class _Cell:
    """The runs of one task x model, and the bootstrap state its rows share."""

    def __init__(self, scores: dict[RunKey, RunScores], task: str, model: str, main_len: int, boot: Bootstrap):
        self.scores, self.task, self.model, self.main_len, self.boot = scores, task, model, main_len, boot
        self.draws = Resamples(boot)

    def runs(self, method: str, demos: str | None = None) -> list[RunScores]:
        return setting_runs(self.scores, self.task, self.model, method, self.main_len, demos)

    def row(self, kind: str, metric: str, names: tuple[str, str], groups: Sequence[Sequence[RunScores]],
            signs: Sequence[float] = (1.0, -1.0), **extra: Any) -> dict[str, Any] | None:
        return contrast_row(kind, (self.task, self.model, metric), names, groups, signs, self.boot, self.draws,
                            **extra)


def _finding1_rows(c: _Cell, metric: str, sim: pd.Series | None, dup: Duplicates | None
                   ) -> list[dict[str, Any] | None]:
    ipt, pt = c.runs(IPT), c.runs(PT)
    ipt_rnd, icl, icl_rnd = c.runs(IPT, "random"), c.runs(ICL), c.runs(ICL, "random")
    rows = []
    excluded = set(dup.input_ids) if dup else set()
    for subset, excl in ((ALL, set()), (NO_DUPLICATES, excluded)) if excluded else ((ALL, set()),):
        kw = {"exclude": excl, "subset": subset}
        row = c.row(versus(IPT, PT), metric, (label(IPT), label(PT)), [ipt, pt], **kw)
        if row is not None and subset == ALL and dup is not None:  # the duplicate counts among its rows
            ids = set(ipt[0].ids)
            row.update(n_dup_input=len(ids & dup.input_ids), n_dup_pair=len(ids & dup.pair_ids))
        rows.append(row)
        if ipt_rnd and icl and icl_rnd:
            rows.append(c.row(INTERACTION, metric, (f"{label(IPT)} retrieved − random", f"{label(ICL)} retrieved − "
                                                    "random"), [ipt, ipt_rnd, icl, icl_rnd], (1.0, -1.0, -1.0, 1.0),
                              method=IPT, **kw))
        if ipt_rnd:
            rows.append(c.row(RANDOM_VS_PT, metric, (f"{label(IPT)} random", label(PT)), [ipt_rnd, pt], method=IPT,
                              **kw))
        if sim is not None and ipt and pt:
            rows.append(slope_row((c.task, c.model, metric), ipt, pt, sim, c.boot, excl, subset))
    return rows


def _cell_rows(c: _Cell, sim: pd.Series | None, dup: Duplicates | None) -> list[dict[str, Any] | None]:
    rows: list[dict[str, Any] | None] = []
    pt = c.runs(PT)
    for metric in _metrics(pt):
        rows.append(c.row(GATE, metric, (label(PT), label(ZEROSHOT)), [pt, c.runs(ZEROSHOT)]))
    for metric in _metrics(c.runs(IPT)):
        rows += _finding1_rows(c, metric, sim, dup)
    for method in (IPT, ICL):
        ret, rnd = c.runs(method, "retrieved"), c.runs(method, "random")
        for metric in _metrics(ret):
            rows.append(c.row("retrieved_vs_random", metric, (f"{label(method)} retrieved", f"{label(method)} random"),
                              [ret, rnd], method=method))
    return rows + _transfer_rows(c)


def _transfer_rows(c: _Cell) -> list[dict[str, Any] | None]:
    rows: list[dict[str, Any] | None] = []
    for name in sorted({k[2] for k in c.scores if k[:2] == (c.task, c.model)}):
        family, source = split_name(name)
        if source is None:
            continue
        tr = c.runs(name)
        for ref in (ICL, CONTROL, PT):
            refs = c.runs(ref)
            for metric in _metrics(tr):
                rows.append(c.row(versus(family.name, ref), metric, (label(name), reference_label(ref)), [tr, refs],
                                  method=name, source=source))
    return rows


def comparisons_table(scores: dict[RunKey, RunScores], per_example: pd.DataFrame | None, main_len: int,
                      boot: Bootstrap, duplicates: dict[str, Duplicates] | None = None) -> pd.DataFrame:
    """Every comparison of the module doc over every task x model; ``duplicates``: per task, the test ids whose top
    retrieved demo has their input (finding 1's kinds are repeated without them)."""
    sims = top_similarity(per_example, main_len)
    rows: list[dict[str, Any] | None] = []
    for task, model in sorted({(k[0], k[1]) for k in scores}):
        cell = _Cell(scores, task, model, main_len, boot)
        rows += _cell_rows(cell, sims.get((task, model)), (duplicates or {}).get(task))
    df = pd.DataFrame([r for r in rows if r is not None], columns=COMPARISON_COLS)
    return df.sort_values(["comparison", "task", "model", "metric", "method", "source", "subset"],
                          kind="stable").reset_index(drop=True)
