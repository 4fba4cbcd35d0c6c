"""The paper's three findings, checked on this run's numbers (computed, never asserted).

Each finding function returns a dict: ``status`` in {supported, not supported, mixed, not enough data, not run},
the numbers it computed and a list of Markdown lines explaining them. A fraction counts a "cell"
(task x model, primary metric) or a transfer pair (source, target, model); a criterion is met when the fraction is
above ``threshold`` (default 0.5, i.e. a majority); fewer than ``min_cells`` cells give "not enough data".
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from iclpt.methods import label
from iclpt.reporting.aggregate import BASELINES, ICL, IPT, PT

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


def finding1(main: pd.DataFrame, similarity: pd.DataFrame | None, buckets: pd.DataFrame | None,
             primary: dict[str, str], min_cells: int = 2, threshold: float = 0.5,
             similarity_run: bool = True) -> dict[str, Any]:
    """IPT helps when the demo is similar: top- vs bottom-similarity-bucket gain, and retrieved vs random IPT."""
    lines = []
    m = _primary_rows(main, primary)
    ipt_beats = []
    if not m.empty:
        piv = m.pivot_table(index=["task", "model"], columns="method", values="mean", aggfunc="first")
        if {IPT, PT} <= set(piv.columns):
            d = piv.dropna(subset=[IPT, PT])
            ipt_beats = list(d[IPT] > d[PT])
    lines.append(f"- IPT > PT (main setting) in {sum(ipt_beats)}/{len(ipt_beats)} task × model cells "
                 f"(fraction {_fmt(_frac(ipt_beats))}); the paper says IPT does not *always* beat PT.")
    # (a) gain in the most vs least similar bucket
    top_gt_bottom, gaps = [], []
    b = _primary_rows(buckets, primary) if buckets is not None else pd.DataFrame()
    if not b.empty:
        for (task, model), sub in b.groupby(["task", "model"], sort=True):
            if sub["bucket"].nunique() < 2:
                continue
            lo = sub.loc[sub["bucket"].idxmin(), "gain_mean"]
            hi = sub.loc[sub["bucket"].idxmax(), "gain_mean"]
            if math.isnan(lo) or math.isnan(hi):
                continue
            top_gt_bottom.append(bool(hi > lo))
            gaps.append(hi - lo)
            lines.append(f"  - {task} / {model}: IPT − PT gain {_fmt(lo)} in the least similar bucket, "
                         f"{_fmt(hi)} in the most similar bucket")
    s_a = _criterion(top_gt_bottom, min_cells, threshold)
    lines.insert(1, f"- Similarity buckets: gain(top) > gain(bottom) in {sum(top_gt_bottom)}/{len(top_gt_bottom)} "
                    f"cells (fraction {_fmt(_frac(top_gt_bottom))}, mean gap "
                    f"{_fmt(sum(gaps) / len(gaps) if gaps else math.nan)}) → {s_a}")
    # (b) retrieved vs random demos for IPT (and ICL, reported)
    s_b = NOT_RUN if not similarity_run else NO_DATA
    ret_gt_rand = {}
    sim = _primary_rows(similarity, primary) if similarity is not None else pd.DataFrame()
    for method in (IPT, ICL):
        flags = []
        if not sim.empty:
            d = sim[(sim["method"] == method)].dropna(subset=["retrieved_mean", "random_mean"])
            flags = list(d["retrieved_mean"] > d["random_mean"])
        ret_gt_rand[method] = flags
    if similarity_run:
        s_b = _criterion(ret_gt_rand[IPT], min_cells, threshold)
    for method in (IPT, ICL):
        f = ret_gt_rand[method]
        lines.append(f"- {label(method)} with retrieved > random demos in {sum(f)}/{len(f)} cells "
                     f"(fraction {_fmt(_frac(f))})" + (f" → {s_b}" if method == IPT else " (reported only)"))
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


def finding3(transfer: pd.DataFrame | None, primary: dict[str, str], min_cells: int = 2,
             threshold: float = 0.5, transfer_run: bool = True) -> dict[str, Any]:
    """A PT prompt from a source task + target demos beats ICL on the target (and, reported, PT on the target)."""
    if not transfer_run or transfer is None:
        return {"status": NOT_RUN, "lines": ["- Experiment E4 was not run (experiments.transfer false or one task)."],
                "beats_icl": [], "beats_pt": []}
    t = _primary_rows(transfer, primary, task_col="target")
    beats_icl, beats_pt = [], []
    if not t.empty:
        tr = t[t["kind"] == "transfer"]
        beats_icl = [bool(v) for v in tr["beats_icl"] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        beats_pt = [bool(v) for v in tr["beats_pt"] if v is not None and not (isinstance(v, float) and math.isnan(v))]
    status = _criterion(beats_icl, min_cells, threshold)
    lines = [f"- Transfer pairs beating ICL on the target: {sum(beats_icl)}/{len(beats_icl)} "
             f"(fraction {_fmt(_frac(beats_icl))}) → {status}",
             f"- Transfer pairs beating PT trained on the target: {sum(beats_pt)}/{len(beats_pt)} "
             f"(fraction {_fmt(_frac(beats_pt))}) (reported only)"]
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
                    min_cells: int = 2, threshold: float = 0.5) -> str:
    out = [f"# Findings of run `{run}`", "",
           "Each of the paper's findings is checked on this run's numbers (tables/ in this folder). A criterion is "
           f"met when the fraction of cells (task × model, primary metric) or transfer pairs exceeds {threshold}; "
           f"with fewer than {min_cells} cells it reports 'not enough data'. Tiny demo models and few examples "
           "make these numbers noise, not evidence.", ""]
    for i, f in ((1, f1), (2, f2), (3, f3)):
        out += [f"## Finding {i}: **{f['status']}**", "", f"Paper: {PAPER_FINDINGS[i]}", ""] + f["lines"] + [""]
    return "\n".join(out)
