"""The paper's three findings, checked on this run's numbers (computed, never asserted).

Each finding function returns a dict: ``status`` in {supported, not supported, mixed, not enough data, not run},
the numbers it computed and a list of Markdown lines explaining them. A fraction counts a "cell"
(task x model, primary metric) or a transfer pair (source, target, model); a criterion is met when the fraction is
above ``threshold`` (default 0.5, i.e. a majority); fewer than ``min_cells`` cells give "not enough data".
Findings 1 and 3 compare methods: every such comparison comes from the paired bootstrap over test examples
(``iclpt.reporting.uncertainty.comparisons_table``) and counts only when it is not within noise (p < alpha and
its interval excludes 0, ``iclpt.reporting.stats.within_noise``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from iclpt.orchestration.methods import label
from iclpt.reporting.aggregate import BASELINES, ICL, IPT, PT, TRANSFER, versus
from iclpt.reporting.stats import within_noise

SUPPORTED, NOT_SUPPORTED, MIXED, NO_DATA, NOT_RUN = (
    "supported", "not supported", "mixed", "not enough data", "not run")


def _frac(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


def _fmt(x: float, d: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def _combine(statuses: list[str]) -> str:
    s = [x for x in statuses if x not in (NO_DATA, NOT_RUN)]
    if not s:
        return NO_DATA
    if all(x == SUPPORTED for x in s):
        return SUPPORTED
    if all(x == NOT_SUPPORTED for x in s):
        return NOT_SUPPORTED
    return MIXED


def _criterion(flags: list[bool], min_cells: int, threshold: float) -> str:
    if len(flags) < min_cells:
        return NO_DATA
    return SUPPORTED if _frac(flags) > threshold else NOT_SUPPORTED


def _primary_rows(df: pd.DataFrame, primary: dict[str, str], task_col: str = "task") -> pd.DataFrame:
    if df is None or df.empty:
        return pd.DataFrame() if df is None else df
    return df[df[task_col].map(primary) == df["metric"]]


def _baseline_lines(df: pd.DataFrame, task_col: str, ref_col: str, ref_name: str) -> list[str]:
    """One line per baseline run (zero-shot): its score per task x model next to the compared reference's.

    Reported only: the verdicts never use it. Empty when the table has no '<baseline>_mean' column."""
    lines = []
    for name in BASELINES:
        col = f"{name}_mean"
        if col not in df.columns:
            continue
        d = df.dropna(subset=[col]).groupby([task_col, "model"], sort=True)[[col, ref_col]].first()
        if d.empty:
            continue
        cells = "; ".join(f"{t} / {mo} {_fmt(r[col])} ({ref_name} {_fmt(r[ref_col])})" for (t, mo), r in d.iterrows())
        lines.append(f"- {label(name)} baseline (no soft prompt, no demos; reported only): {cells}")
    return lines


def _tested(comparisons: pd.DataFrame | None, kind: str, primary: dict[str, str],
            method: str | None = None) -> pd.DataFrame:
    """The comparisons of one kind on each task's primary metric (optionally of one method)."""
    if comparisons is None or comparisons.empty:
        return pd.DataFrame(columns=["task", "model", "metric", "diff", "diff_ci_low", "diff_ci_high", "p_value"])
    c = comparisons[comparisons["comparison"] == kind]
    if method is not None:
        c = c[c["method"].astype(str) == method]
    c = c[c["task"].map(primary) == c["metric"]].dropna(subset=["diff", "p_value"])
    return c.sort_values(["task", "model"] + (["source"] if "source" in c.columns else []), kind="stable")


def _noise(c: pd.DataFrame, alpha: float) -> list[bool]:
    """Per comparison: within noise (p ≥ alpha, or the interval of the difference contains 0; iclpt.reporting.stats)."""
    return [within_noise(p, lo, hi, alpha) for p, lo, hi in zip(c["p_value"], c["diff_ci_low"], c["diff_ci_high"])]


def _significant_wins(c: pd.DataFrame, alpha: float) -> list[bool]:
    """Per comparison: a − b > 0 and not within noise."""
    return [bool(d > 0 and not n) for d, n in zip(c["diff"], _noise(c, alpha))]


def _tally(c: pd.DataFrame, alpha: float) -> str:
    """'significantly higher in i, lower in j, within noise in k' of a set of comparisons."""
    noise = _noise(c, alpha)
    up = sum(1 for d, n in zip(c["diff"], noise) if d > 0 and not n)
    down = sum(1 for d, n in zip(c["diff"], noise) if d <= 0 and not n)
    return f"significantly higher in {up}, lower in {down}, within noise in {sum(noise)}"


def _comparison_line(r: Any, alpha: float, what: str | None = None) -> str:
    """'  - task / model: a … vs b …, difference +d [lo, hi], p = …' and ' — within noise' where it is."""
    where = f"{r.task} / {r.model}" + (f" ({what})" if what else "")
    text = (f"  - {where}: {r.a} {_fmt(r.mean_a)} vs {r.b} {_fmt(r.mean_b)}, difference {r.diff:+.2f} "
            f"[{_fmt(r.diff_ci_low)}, {_fmt(r.diff_ci_high)}], p = {r.p_value:.3f}")
    if not within_noise(r.p_value, r.diff_ci_low, r.diff_ci_high, alpha):
        return text
    return text + (" — within noise" if r.p_value >= alpha else " — within noise (the interval contains 0)")


NO_TESTS = "- No paired tests (tables/comparisons.csv) were given: no difference can be told from noise."


def finding1(comparisons: pd.DataFrame | None, primary: dict[str, str], min_cells: int = 2,
             threshold: float = 0.5, alpha: float = 0.05, similarity_run: bool = True,
             similarity: pd.DataFrame | None = None) -> dict[str, Any]:
    """IPT helps when the demo is similar: top- vs bottom-similarity-bucket gain, and retrieved vs random IPT.

    Every comparison is a row of ``comparisons`` (iclpt.reporting.uncertainty.comparisons_table); a cell meets a
    criterion when its difference is positive and not within noise (p < alpha, interval excluding 0).
    ``similarity`` (the E2a table) only feeds the reported zero-shot line."""
    lines = [] if comparisons is not None else [NO_TESTS]
    ivp = _tested(comparisons, versus(IPT, PT), primary)
    ipt_beats = _significant_wins(ivp, alpha)
    lines.append(f"- IPT − PT (main setting), paired over test examples: {_tally(ivp, alpha)} of {len(ivp)} "
                 "task × model cells; the paper says IPT does not *always* beat PT (reported only).")
    lines += [_comparison_line(r, alpha) for r in ivp.itertuples()]
    # (a) gain in the most vs least similar bucket
    gap = _tested(comparisons, "bucket_gap", primary)
    top_gt_bottom = _significant_wins(gap, alpha)
    s_a = _criterion(top_gt_bottom, min_cells, threshold)
    mean_gap = float(gap["diff"].mean()) if len(gap) else math.nan
    lines.append(f"- Similarity buckets: gain(top) − gain(bottom) significantly > 0 in {sum(top_gt_bottom)}/"
                 f"{len(top_gt_bottom)} cells (fraction {_fmt(_frac(top_gt_bottom))}, mean gap {_fmt(mean_gap)}; "
                 f"{_tally(gap, alpha)}) → {s_a}")
    lines += [_comparison_line(r, alpha) for r in gap.itertuples()]
    # (b) retrieved vs random demos for IPT (and ICL, reported)
    s_b = NOT_RUN if not similarity_run else NO_DATA
    ret_gt_rand = {}
    for method in (IPT, ICL):
        c = _tested(comparisons, "retrieved_vs_random", primary, method)
        ret_gt_rand[method] = _significant_wins(c, alpha)
        if method == IPT and similarity_run:
            s_b = _criterion(ret_gt_rand[IPT], min_cells, threshold)
        f = ret_gt_rand[method]
        lines.append(f"- {label(method)} with retrieved − random demos significantly > 0 in {sum(f)}/{len(f)} cells "
                     f"(fraction {_fmt(_frac(f))}; {_tally(c, alpha)})"
                     + (f" → {s_b}" if method == IPT else " (reported only)"))
        lines += [_comparison_line(r, alpha) for r in c.itertuples()]
    sim = _primary_rows(similarity, primary) if similarity is not None else pd.DataFrame()
    if not sim.empty and "retrieved_mean" in sim.columns:
        icl_ret = sim["retrieved_mean"].where(sim["method"] == ICL)
        lines += _baseline_lines(sim.assign(_ref=icl_ret), "task", "_ref", f"{label(ICL)} retrieved")
    if not similarity_run:
        lines.append("- The random-demo control was not run (experiments.similarity false or no 'random' source).")
    status = _combine([s_a, s_b])
    return {"status": status, "ipt_beats_pt": ipt_beats, "top_gt_bottom": top_gt_bottom,
            "retrieved_gt_random_ipt": ret_gt_rand[IPT], "retrieved_gt_random_icl": ret_gt_rand[ICL],
            "criteria": {"buckets": s_a, "retrieved_vs_random": s_b}, "lines": lines}


def finding2(stability: pd.DataFrame | None, primary: dict[str, str], min_cells: int = 2,
             threshold: float = 0.5, stability_run: bool = True) -> dict[str, Any]:
    """IPT reduces PT's variance: seed std (main length) and spread of the seed-mean over prompt lengths."""
    lines = []
    if not stability_run or stability is None:
        return {"status": NOT_RUN, "lines": ["- Experiment E3 was not run (experiments.stability false)."],
                "seed_std_lower": [], "length_std_lower": []}
    s = _primary_rows(stability, primary)
    seed_flags, length_flags = [], []
    if not s.empty:
        main = s[s["main"].astype(bool)]
        for (task, model), sub in main.groupby(["task", "model"], sort=True):
            pt = sub[(sub["method"] == PT) & (sub["n_seeds"] >= 2)]
            ipt = sub[(sub["method"] == IPT) & (sub["n_seeds"] >= 2)]
            if pt.empty or ipt.empty:
                continue
            a, b = float(ipt["std"].iloc[0]), float(pt["std"].iloc[0])
            seed_flags.append(a < b)
            lines.append(f"  - {task} / {model}: seed std IPT {_fmt(a)} vs PT {_fmt(b)} "
                         f"({int(ipt['n_seeds'].iloc[0])} / {int(pt['n_seeds'].iloc[0])} seeds)")
        for (task, model), sub in s.groupby(["task", "model"], sort=True):
            spreads = {}
            for method in (PT, IPT):
                d = sub[sub["method"] == method].dropna(subset=["mean"])
                if d["length"].nunique() >= 2:
                    spreads[method] = float(d["mean"].std(ddof=1))
            if len(spreads) == 2:
                length_flags.append(spreads[IPT] < spreads[PT])
                lines.append(f"  - {task} / {model}: std over prompt lengths of the seed mean IPT "
                             f"{_fmt(spreads[IPT])} vs PT {_fmt(spreads[PT])}")
    s_seed = _criterion(seed_flags, min_cells, threshold)
    s_len = _criterion(length_flags, min_cells, threshold)
    head = [f"- Seeds: IPT std < PT std in {sum(seed_flags)}/{len(seed_flags)} task × model cells "
            f"(fraction {_fmt(_frac(seed_flags))}) → {s_seed}",
            f"- Prompt lengths: IPT spread < PT spread in {sum(length_flags)}/{len(length_flags)} cells "
            f"(fraction {_fmt(_frac(length_flags))}) → {s_len}"]
    return {"status": _combine([s_seed, s_len]), "seed_std_lower": seed_flags, "length_std_lower": length_flags,
            "criteria": {"seeds": s_seed, "lengths": s_len}, "lines": head + lines}


def finding3(comparisons: pd.DataFrame | None, primary: dict[str, str], min_cells: int = 2,
             threshold: float = 0.5, alpha: float = 0.05, transfer_run: bool = True,
             transfer: pd.DataFrame | None = None) -> dict[str, Any]:
    """A PT prompt from a source task + target demos beats ICL on the target (and, reported, PT on the target).

    A pair counts when its paired difference is positive and not within noise (p < alpha, interval excluding 0);
    ``transfer`` (the E4
    table) only feeds the reported zero-shot line."""
    if not transfer_run:
        return {"status": NOT_RUN, "lines": ["- Experiment E4 was not run (experiments.transfer false or one task)."],
                "beats_icl": [], "beats_pt": []}
    lines = [] if comparisons is not None else [NO_TESTS]
    vs_icl = _tested(comparisons, versus(TRANSFER, ICL), primary)
    vs_pt = _tested(comparisons, versus(TRANSFER, PT), primary)
    beats_icl, beats_pt = _significant_wins(vs_icl, alpha), _significant_wins(vs_pt, alpha)
    status = _criterion(beats_icl, min_cells, threshold)
    lines.append(f"- Transfer pairs significantly beating ICL on the target: {sum(beats_icl)}/{len(beats_icl)} "
                 f"(fraction {_fmt(_frac(beats_icl))}; {_tally(vs_icl, alpha)}) → {status}")
    lines += [_comparison_line(r, alpha, f"source {r.source}") for r in vs_icl.itertuples()]
    lines.append(f"- Transfer pairs significantly beating PT trained on the target: {sum(beats_pt)}/{len(beats_pt)} "
                 f"(fraction {_fmt(_frac(beats_pt))}; {_tally(vs_pt, alpha)}) (reported only)")
    lines += [_comparison_line(r, alpha, f"source {r.source}") for r in vs_pt.itertuples()]
    t = _primary_rows(transfer, primary, task_col="target") if transfer is not None else pd.DataFrame()
    if not t.empty and f"{ICL}_mean" in t.columns:
        lines += _baseline_lines(t, "target", f"{ICL}_mean", f"{label(ICL)} on the target")
    return {"status": status, "beats_icl": beats_icl, "beats_pt": beats_pt, "lines": lines}


PAPER_FINDINGS = {
    1: "IPT does not always beat PT; it helps when the demonstration is semantically similar to the test input "
       "(retrieved demos help, random ones do not).",
    2: "PT is unstable across seeds and prompt lengths; adding a demonstration (IPT) reduces that variance.",
    3: "A soft prompt learned by PT on a source task transfers positively to a target task when paired with "
       "in-context demonstrations of the target task (compared with ICL on the target).",
}


def render_findings(run: str, f1: dict[str, Any], f2: dict[str, Any], f3: dict[str, Any],
                    min_cells: int = 2, threshold: float = 0.5, alpha: float = 0.05,
                    n_resamples: int | None = None) -> str:
    level = f"{100 * (1 - alpha):g} %"
    resamples = f"{n_resamples} resamples, " if n_resamples else ""
    out = [f"# Findings of run `{run}`", "",
           "Each of the paper's findings is checked on this run's numbers (tables/ in this folder). A criterion is "
           f"met when the fraction of cells (task × model, primary metric) or transfer pairs exceeds {threshold}; "
           f"with fewer than {min_cells} cells it reports 'not enough data'. A verdict is only as strong as the run "
           "behind it: few test examples give wide intervals, and a tiny random model gives noise.", "",
           f"Every comparison of findings 1 and 3 is a paired bootstrap over the test examples ({resamples}the "
           "same resamples for both sides and every seed; sacrebleu's paired bootstrap for BLEU, its p-value "
           "convention for every metric; tables/comparisons.csv): the difference of the seed means, its "
           f"{level} interval in brackets and p. A difference with p ≥ {alpha}, or whose interval contains 0, is "
           "*within noise* and never counts towards a criterion. Finding 2 is about the spread over seeds and "
           "prompt lengths, reported as it is.", ""]
    for i, f in ((1, f1), (2, f2), (3, f3)):
        out += [f"## Finding {i}: **{f['status']}**", "", f"Paper: {PAPER_FINDINGS[i]}", ""] + f["lines"] + [""]
    return "\n".join(out)
