"""The paper's three findings, each given a verdict on this run's numbers: supported, contradicted or inconclusive.

Every criterion is one pooled test over its cells (``iclpt.reporting.verdicts``: mean contrast of the cells, seeds
and test examples random, Holm over the criteria of a finding); "inconclusive" comes with the minimum detectable
effect and the rows or seeds that would resolve it. The tests behind findings 1 and 3 are the rows of
tables/comparisons.csv (``iclpt.reporting.comparisons``); finding 2's are on the seed scores
(``iclpt.reporting.spread``).

The regime gate: findings 1 and 3 are about prompts trained in the paper's regime, so they read only the cells
(task x model) where PT is significantly above zero-shot and the PT prompts' dev loss levelled off (most seeds;
tables/training.csv, ``iclpt.reporting.training``). Where no cell passes, the finding is "inconclusive: PT not
trained", with the numbers. Finding 2 leaves out the cells where PT is not above zero-shot (a prompt at the floor
has no spread to reduce) and lists them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from iclpt.orchestration.methods import METHODS, label
from iclpt.reporting.aggregate import ICL, IPT, PT, TRANSFER, versus
from iclpt.reporting.comparisons import (
    ALL,
    CONTROL,
    GATE,
    INTERACTION,
    NO_DUPLICATES,
    RANDOM_VS_PT,
    SLOPE,
)
from iclpt.reporting.spread import SpreadRatio, length_spread, seed_spread
from iclpt.reporting.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_RUN,
    SUPPORTED,
    Pooled,
    adjusted,
    combine,
    describe,
    directional,
    not_above,
    p_text,
    pool,
    resolution,
)


@dataclass(frozen=True)
class Settings:
    """The verdict settings (config report.*): alpha, power, the non-superiority margin and the levelling gate."""

    alpha: float = 0.05
    power: float = 0.8
    margin: float = 1.0
    levelled_tail: float = 0.33
    levelled_tolerance: float = 0.1


@dataclass
class Finding:
    status: str
    lines: list[str] = field(default_factory=list)
    criteria: dict[str, str] = field(default_factory=dict)
    gated: list[tuple[str, str]] = field(default_factory=list)


def _fmt(x: Any, d: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def _rows(comparisons: pd.DataFrame | None, kind: str, primary: dict[str, str], subset: str = ALL) -> pd.DataFrame:
    """The comparisons of one kind and subset on each task's primary metric."""
    if comparisons is None or comparisons.empty:
        return pd.DataFrame(columns=[] if comparisons is None else comparisons.columns)
    c = comparisons[(comparisons["comparison"] == kind) & (comparisons["subset"].fillna(ALL) == subset)]
    return c[c["task"].map(primary) == c["metric"]].dropna(subset=["diff"])


def _row_line(r: Any, what: str = "") -> str:
    where = f"{r.task} / {r.model}" + (f" ({what})" if what else "")
    return (f"  - {where}: {r.a} {_fmt(r.mean_a)} vs {r.b} {_fmt(r.mean_b)}, difference {r.diff:+.2f} "
            f"[{_fmt(r.diff_ci_low)}, {_fmt(r.diff_ci_high)}], p {p_text(r.p_value)}, MDE {_fmt(r.mde)} "
            f"({int(r.n_examples)} rows, {int(r.n_seeds_a)} / {int(r.n_seeds_b)} seeds)")


# ---- the regime gate ----------------------------------------------------------------------------------------
def _levelled(training: pd.DataFrame | None, task: str, model: str, main_len: int) -> tuple[bool | None, str]:
    """Whether most PT seeds of the cell levelled off, and the words for it."""
    if training is None or training.empty:
        return None, "no training table"
    t = training[(training["task"] == task) & (training["model"] == model) & (training["method"] == PT)
                 & (training["length"] == main_len)]
    if t.empty:
        return None, "no PT train runs"
    known = t["levelled"].dropna().astype(bool)
    share = t["late_share"].dropna()
    words = (f"dev loss levelled off in {int(known.sum())} of {len(t)} PT seeds "
             f"(median share of the improvement made in the last part of training {_fmt(share.median())})")
    if len(known) < len(t) / 2:
        return None, words + "; too few dev evaluations to tell"
    return bool(known.sum() > len(t) / 2), words


def regime_gate(comparisons: pd.DataFrame | None, training: pd.DataFrame | None, primary: dict[str, str],
                main_len: int, alpha: float) -> tuple[list[tuple[str, str]], list[str]]:
    """The cells that pass the gate, and a line per cell saying why or why not."""
    rows = _rows(comparisons, GATE, primary)
    passed, lines = [], []
    for r in rows.itertuples():
        above = bool(r.diff > 0 and r.p_value < alpha)
        lev, words = _levelled(training, r.task, r.model, main_len)
        ok = above and lev is True
        if ok:
            passed.append((r.task, r.model))
        why = ("passes" if ok else "fails: PT not significantly above zero-shot" if not above
               else "fails: cannot tell whether PT's dev loss levelled off" if lev is None
               else "fails: PT's dev loss had not levelled off")
        lines.append(_row_line(r) + f"; {words} → {why}")
    return passed, lines


def _gated(rows: pd.DataFrame, cells: list[tuple[str, str]], col: str = "task") -> pd.DataFrame:
    keep = set(cells)
    return rows.loc[np.array([(t, m) in keep for t, m in zip(rows[col], rows["model"])], dtype=bool)]


# ---- criteria -----------------------------------------------------------------------------------------------
def _verdict_line(name: str, p: Pooled | None, p_adj: float, status: str, s: Settings, unit: str = "") -> str:
    if p is None:
        return f"- {name}: no cell has this test → {INCONCLUSIVE}"
    text = f"- {name}: {describe(p, p_adj, unit)} → **{status}**"
    if status == INCONCLUSIVE:
        text += f"; {resolution(p, s.alpha, s.power)}"
    return text


def _finding1_criteria(comparisons: pd.DataFrame | None, primary: dict[str, str], cells: list[tuple[str, str]],
                       s: Settings, subset: str) -> tuple[dict[str, str], list[str]]:
    names = {INTERACTION: f"Interaction: ({label(IPT)} retrieved − random) − ({label(ICL)} retrieved − random)",
             RANDOM_VS_PT: f"Requires a similar demo: {label(IPT)} with random demos − {label(PT)} (claim: not above "
                           f"{s.margin:g})",
             SLOPE: f"Slope of the per-example {label(IPT)} − {label(PT)} gain on the top demo's similarity "
                    "(points per unit of cosine similarity)"}
    pooled = {k: pool(_gated(_rows(comparisons, k, primary, subset), cells), s.alpha, s.power) for k in names}
    adj = dict(zip(names, adjusted(list(pooled.values()))))
    status, lines = {}, []
    for k, name in names.items():
        p = pooled[k]
        if p is None:
            status[k] = INCONCLUSIVE
        elif k == RANDOM_VS_PT:
            status[k] = not_above(p, adj[k], s.alpha, s.margin)
        else:
            status[k] = directional(adj[k], p.estimate, s.alpha)
        lines.append(_verdict_line(name, p, adj[k], status[k], s))
    return status, lines


def _duplicate_lines(comparisons: pd.DataFrame | None, primary: dict[str, str]) -> list[str]:
    """Per cell, the share of its compared test rows whose top retrieved demo has their input (and target)."""
    rows = _rows(comparisons, versus(IPT, PT), primary)
    if rows.empty or "n_dup_input" not in rows.columns or rows["n_dup_input"].isna().all():
        return ["- Duplicates: unknown (no retrieval summary of the demo retriever reached the comparisons)."]
    parts = [f"{r.task} / {r.model} {100 * r.n_dup_input / r.n_examples:.1f} % ({int(r.n_dup_input)} of "
             f"{int(r.n_examples)}; identical target too: {100 * r.n_dup_pair / r.n_examples:.1f} %)"
             for r in rows.dropna(subset=["n_dup_input"]).itertuples()]
    return [f"- Duplicates: test rows whose top retrieved demo has an identical input: {'; '.join(parts)}."]


def finding1(comparisons: pd.DataFrame | None, primary: dict[str, str], training: pd.DataFrame | None,
             main_len: int, s: Settings = Settings(), similarity_run: bool = True) -> Finding:
    """IPT helps when (only when) its demo is similar: interaction, "requires" and slope, on the gated cells."""
    cells, gate_lines = regime_gate(comparisons, training, primary, main_len, s.alpha)
    lines = [f"- Regime gate ({label(PT)} significantly above zero-shot, dev loss levelled off): "
             f"{len(cells)} of {len(gate_lines)} cells pass.", *gate_lines]
    lines += _duplicate_lines(comparisons, primary)
    if not similarity_run:
        return Finding(NOT_RUN, lines + ["- The random-demo control was not run (experiments.similarity false or no "
                                         "'random' demo source): the criteria need it."])
    if not cells:
        return Finding(INCONCLUSIVE, [f"- **Inconclusive: {label(PT)} not trained** (no cell passes the regime "
                                      "gate), so no criterion is interpreted.", *lines,
                                      *_reported1(comparisons, primary)], gated=cells)
    status, crit_lines = _finding1_criteria(comparisons, primary, cells, s, ALL)
    lines += ["- Criteria, one test pooled over the gated cells each (Holm over the three):", *crit_lines]
    if not _rows(comparisons, INTERACTION, primary, NO_DUPLICATES).empty or \
            not _rows(comparisons, SLOPE, primary, NO_DUPLICATES).empty:
        st2, lines2 = _finding1_criteria(comparisons, primary, cells, s, NO_DUPLICATES)
        lines += [f"- Without those rows: **{combine(list(st2.values()))}**", *["  " + x for x in lines2]]
    return Finding(combine(list(status.values())), lines + _reported1(comparisons, primary), status, cells)


def _reported1(comparisons: pd.DataFrame | None, primary: dict[str, str]) -> list[str]:
    out = []
    for kind, what in ((versus(IPT, PT), f"{label(IPT)} − {label(PT)} (main setting)"),
                       (INTERACTION, "interaction"), (RANDOM_VS_PT, f"{label(IPT)} random − {label(PT)}"),
                       (SLOPE, "slope"), ("retrieved_vs_random", "retrieved − random")):
        rows = _rows(comparisons, kind, primary)
        if not rows.empty:
            out.append(f"- Per cell, {what} (reported, not adjusted):")
            out += [_row_line(r) for r in rows.itertuples()]
    return out


# ---- finding 2 ----------------------------------------------------------------------------------------------
def _main_demos(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    """The method's runs with its main demo source (every length)."""
    return runs[(runs["method"] == method) & (runs["demos"] == METHODS[method].main_demos)]


def _spread_cells(runs: pd.DataFrame, primary: dict[str, str], floor: set[tuple[str, str]], main_len: int
                  ) -> tuple[list[tuple[str, str]], list[tuple[list[float], list[float]]], list[str]]:
    """The main-length seed scores (IPT, PT) of every cell that can enter the seed test, and why others cannot."""
    keys, cells, notes = [], [], []
    r = runs[runs["task"].map(primary) == runs["metric"]].dropna(subset=["value"])
    for (task, model), sub in r.groupby(["task", "model"], sort=True):
        ipt, pt = (_main_demos(sub, m)["value"] for m in (IPT, PT))
        ipt, pt = ipt[sub.loc[ipt.index, "length"] == main_len], pt[sub.loc[pt.index, "length"] == main_len]
        if len(ipt) < 2 or len(pt) < 2:
            continue
        why = ("PT not above zero-shot" if (task, model) in floor else
               "a method scores the same on every seed (SD 0)" if min(ipt.std(), pt.std()) == 0 else "")
        if why:
            notes.append(f"{task} / {model} ({why}: SD IPT {_fmt(ipt.std())}, PT {_fmt(pt.std())})")
            continue
        keys.append((task, model))
        cells.append((ipt.tolist(), pt.tolist()))
    return keys, cells, notes


def _length_cells(runs: pd.DataFrame, primary: dict[str, str], floor: set[tuple[str, str]]
                  ) -> tuple[list[tuple[str, str]], list[tuple[list[int], list[float], list[float]]], list[str]]:
    keys, cells, notes = [], [], []
    r = runs[runs["task"].map(primary) == runs["metric"]].dropna(subset=["value"])
    for (task, model), sub in r.groupby(["task", "model"], sort=True):
        ipt, pt = (_main_demos(sub, m).groupby("length")["value"].mean() for m in (IPT, PT))
        lengths = sorted(set(ipt.index) & set(pt.index))
        if len(lengths) < 3:
            notes.append(f"{task} / {model} ({len(lengths)} prompt lengths; the test needs at least 3)")
            continue
        if (task, model) in floor:
            notes.append(f"{task} / {model} (PT not above zero-shot)")
            continue
        keys.append((task, model))
        cells.append((lengths, ipt[lengths].tolist(), pt[lengths].tolist()))
    return keys, cells, notes


def _spread_line(name: str, r: SpreadRatio | None, p_adj: float, status: str, keys: list[tuple[str, str]]) -> str:
    if r is None:
        return f"- {name}: no cell can enter the test → {INCONCLUSIVE}"
    cells = ", ".join(f"{t} / {m} {x:.2f}" for (t, m), x in zip(keys, r.cell_ratios))
    text = (f"- {name}: IPT / PT ratio {r.ratio:.2f} [{r.low:.2f}, {r.high:.2f}] ({r.n_cells} cells: {cells}; "
            f"p {p_text(r.p_value)}, Holm-adjusted {p_text(p_adj)}) → **{status}**")
    if status == INCONCLUSIVE:
        need = (f"about {r.cells_needed} cells of this size would detect the observed ratio" if r.cells_needed
                else "the observed ratio is not below 1")
        text += f"; these cells detect a ratio of {r.mde_ratio:.2f} or less with 80 % power; {need}"
    return text


def _ratio_status(r: SpreadRatio | None, p_adj: float, alpha: float) -> str:
    if r is None:
        return INCONCLUSIVE
    return directional(p_adj, 1.0 - r.ratio, alpha)  # supported: IPT spreads less (ratio < 1)


def finding2(runs: pd.DataFrame | None, comparisons: pd.DataFrame | None, primary: dict[str, str], main_len: int,
             s: Settings = Settings(), stability_run: bool = True) -> Finding:
    """IPT reduces PT's spread over seeds and over prompt lengths: two pooled ratio tests (iclpt.reporting.spread)."""
    if runs is None or runs.empty:
        return Finding(NOT_RUN, ["- No runs."])
    gate = _rows(comparisons, GATE, primary)
    floor = {(r.task, r.model) for r in gate.itertuples() if not (r.diff > 0 and r.p_value < s.alpha)}
    k_seed, c_seed, n_seed = _spread_cells(runs, primary, floor, main_len)
    seeds = seed_spread(c_seed, s.alpha, s.power) if c_seed else None
    lines = [f"- Cells left out of the seed test: {'; '.join(n_seed)}." if n_seed else
             "- No cell left out of the seed test."]
    lengths = None
    k_len: list[tuple[str, str]] = []
    if stability_run:
        k_len, c_len, n_len = _length_cells(runs, primary, floor)
        lengths = length_spread(c_len, s.alpha, s.power) if c_len else None
        if n_len:
            lines.append(f"- Cells left out of the length test: {'; '.join(n_len)}.")
    adj = adjusted([seeds, lengths])
    status = {"seeds": _ratio_status(seeds, adj[0], s.alpha)}
    lines.append(_spread_line("Seeds (main length, SD over seeds)", seeds, adj[0], status["seeds"], k_seed))
    if stability_run:
        status["lengths"] = _ratio_status(lengths, adj[1], s.alpha)
        lines.append(_spread_line("Prompt lengths (SD of the seed mean around its log-length trend)", lengths, adj[1],
                                  status["lengths"], k_len))
        if lengths is not None:
            trends = ", ".join(f"{t} / {m} IPT {a:+.2f}, PT {b:+.2f}" for (t, m), (a, b) in zip(k_len, lengths.slopes))
            lines.append(f"  - Length trends (points per e-fold of prompt length; reported only): {trends}")
    else:
        lines.append("- Experiment E3 (prompt lengths) was not run (experiments.stability false).")
    return Finding(combine(list(status.values())), lines, status)


# ---- finding 3 ----------------------------------------------------------------------------------------------
def finding3(comparisons: pd.DataFrame | None, primary: dict[str, str], training: pd.DataFrame | None,
             main_len: int, s: Settings = Settings(), transfer_run: bool = True) -> Finding:
    """A source task's PT prompt with the target's demos beats ICL on the target and the untrained-prompt control."""
    if not transfer_run:
        return Finding(NOT_RUN, ["- Experiment E4 was not run (experiments.transfer false or one task)."])
    cells, gate_lines = regime_gate(comparisons, training, primary, main_len, s.alpha)
    lines = [f"- Regime gate on the source task's {label(PT)}: {len(cells)} of {len(gate_lines)} cells pass."]
    kinds = {versus(TRANSFER, ICL): f"Transfer − {label(ICL)} on the target",
             versus(TRANSFER, CONTROL): f"Transfer − the control ({label(CONTROL)}: an initialised, untrained prompt "
                                        "of the same length with the target's demos)"}
    rows = {k: _rows(comparisons, k, primary) for k in kinds}
    gated = {k: _gated(r.assign(_src=r["source"]), cells, "_src") if not r.empty else r for k, r in rows.items()}
    if rows[versus(TRANSFER, CONTROL)].empty:
        lines.append(f"- The control ({label(CONTROL)}) has no runs: transfer cannot be told from any prefix of "
                     "that length changing ICL.")
    if not cells:
        return Finding(INCONCLUSIVE, [f"- **Inconclusive: {label(PT)} not trained** on any source task.", *lines,
                                      *gate_lines, *_reported3(rows)])
    pooled = {k: pool(g, s.alpha, s.power) for k, g in gated.items()}
    adj = dict(zip(kinds, adjusted(list(pooled.values()))))
    status = {k: (directional(adj[k], pooled[k].estimate, s.alpha) if pooled[k] else INCONCLUSIVE) for k in kinds}
    lines += ["- Criteria, one test pooled over the transfer pairs whose source passes the gate (Holm over the two):"]
    lines += [_verdict_line(kinds[k], pooled[k], adj[k], status[k], s) for k in kinds]
    return Finding(combine(list(status.values())), lines + gate_lines + _reported3(rows), status, cells)


def _reported3(rows: dict[str, pd.DataFrame]) -> list[str]:
    out = []
    for k, r in rows.items():
        if not r.empty:
            out.append(f"- Per pair, {k} (reported, not adjusted):")
            out += [_row_line(x, f"source {x.source}") for x in r.itertuples()]
    return out


PAPER_FINDINGS = {
    1: "IPT does not always beat PT; it helps when the demonstration is semantically similar to the test input "
       "(retrieved demos help, random ones do not).",
    2: "PT is unstable across seeds and prompt lengths; adding a demonstration (IPT) reduces that variance.",
    3: "A soft prompt learned by PT on a source task transfers positively to a target task when paired with "
       "in-context demonstrations of the target task (compared with ICL on the target).",
}


def render_findings(run: str, findings: dict[int, Finding], s: Settings, n_resamples: int | None = None) -> str:
    level = f"{100 * (1 - s.alpha):g} %"
    resamples = f"{n_resamples} example resamples, " if n_resamples else ""
    out = [f"# Findings of run `{run}`", "",
           f"Each finding gets one verdict: **{SUPPORTED}**, **{CONTRADICTED}** (the opposite is significant) or "
           f"**{INCONCLUSIVE}** (this run cannot tell; it prints the minimum detectable effect, MDE, at "
           f"{int(s.power * 100)} % power and the size of run that would resolve it). A criterion is one two-sided "
           f"test at {s.alpha:g} pooled over its cells, Holm-adjusted over the criteria of the finding. Seeds and "
           f"test examples are both random ({resamples}studentized two-level bootstrap; tables/comparisons.csv): "
           f"a difference is its {level} interval in brackets. Findings 1 and 3 read only the cells where "
           f"{label(PT)} is trained (the regime gate).", ""]
    for i, f in sorted(findings.items()):
        out += [f"## Finding {i}: **{f.status}**", "", f"Paper: {PAPER_FINDINGS[i]}", ""] + f.lines + [""]
    return "\n".join(out)
