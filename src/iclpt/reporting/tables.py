"""Rendering of the tables: CSV (atomic), Markdown and LaTeX in the paper's layout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from iclpt.evaluation.metrics import metric_label
from iclpt.io import PathLike, atomic_open
from iclpt.orchestration.methods import label
from iclpt.reporting.aggregate import DEFAULT_METHODS


def write_csv(df: pd.DataFrame, path: PathLike, float_format: str = "%.4f") -> None:
    with atomic_open(path) as fh:
        df.to_csv(fh, index=False, float_format=float_format, lineterminator="\n")


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _cell(cell: tuple, digits: int, pm: str) -> str:
    """(mean, std, n[, low, high]) -> 'mean ± std' (std only with 2+ seeds), then ' [low, high]' when the cell
    has a bootstrap interval."""
    mean, std, n = cell[:3]
    low, high = cell[3:5] if len(cell) >= 5 else (None, None)
    if _missing(mean):
        return "–"
    text = f"{mean:.{digits}f}" if _missing(std) or n < 2 else f"{mean:.{digits}f}{pm}{std:.{digits}f}"
    if not (_missing(low) or _missing(high)):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def _layout(main: pd.DataFrame, methods: Sequence[str]):
    """(column keys [(task, metric)], row keys [(model, method)], {(row, col): (mean, std, n[, low, high])}).

    Rows follow `methods` (the registry's report order by default: the zero-shot baseline first); low / high
    when the table has ci_low / ci_high (iclpt.reporting.uncertainty.with_main_ci)."""
    cols = list(dict.fromkeys(zip(main["task"], main["metric"])))
    models = list(dict.fromkeys(main["model"]))
    order = {m: i for i, m in enumerate(methods)}
    present = sorted(set(main["method"]), key=lambda m: (order.get(m, len(order)), m))
    rows = [(mo, me) for mo in models for me in present if ((main["model"] == mo) & (main["method"] == me)).any()]
    ci = _has_ci(main)
    cells = {((r.model, r.method), (r.task, r.metric)): (r.mean, r.std, int(r.n_seeds))
             + ((r.ci_low, r.ci_high) if ci else ()) for r in main.itertuples()}
    return cols, rows, cells


def _has_ci(main: pd.DataFrame) -> bool:
    return {"ci_low", "ci_high"} <= set(main.columns)


def _col_label(task: str, metric: str) -> str:
    """Every column names its task and its metric, e.g. "dart (BLEU)"."""
    return f"{task} ({metric_label(metric)})"


def _level(alpha: float) -> str:
    return f"{100 * (1 - alpha):g} %"


def render_main_md(main: pd.DataFrame, methods: Sequence[str] = DEFAULT_METHODS, digits: int = 1,
                   alpha: float = 0.05, notes: Sequence[str] = ()) -> str:
    """Tasks as columns, model x method as rows, 'mean ± std' over seeds (one seed: mean only), followed by
    ' [low, high]', the (1 − alpha) interval, when the table has ci_low / ci_high; ``notes`` close the table (e.g.
    references the decoding budget cannot reach)."""
    if main.empty:
        return "# E1 main results\n\nNo runs of the main configuration were found.\n"
    cols, rows, cells = _layout(main, methods)
    header = ["model", "method"] + [_col_label(t, m) for t, m in cols]
    note = "Mean ± sample std over seeds (a single number: one seed). Scores are 0–100."
    if _has_ci(main):
        note += (f" In brackets: the {_level(alpha)} bootstrap confidence interval of the seed mean with seeds and "
                 "test examples both random (studentized two-level bootstrap; BLEU rescored from its sufficient "
                 "statistics, as sacrebleu does; a 0/100 metric at least its Wilson interval).")
    lines = ["# E1 main results", "", note, "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for mo, me in rows:
        vals = [_cell(cells.get(((mo, me), c), (math.nan, math.nan, 0)), digits, " ± ") for c in cols]
        lines.append("| " + " | ".join([mo, label(me)] + vals) + " |")
    ns = sorted(set(int(n) for n in main["n_seeds"]))
    lines += ["", f"Seeds per cell: {', '.join(map(str, ns))}.", ""]
    lines += [f"{n}" for n in notes] + ([""] if notes else [])
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def render_main_tex(main: pd.DataFrame, methods: Sequence[str] = DEFAULT_METHODS, digits: int = 1,
                    alpha: float = 0.05) -> str:
    """A booktabs tabular: tasks (and metric) as columns, model x method rows, mean $\\pm$ std."""
    if main.empty:
        return "% E1 main results: no runs of the main configuration were found.\n"
    cols, rows, cells = _layout(main, methods)
    spec = "ll" + "c" * len(cols)
    head1 = ["Model", "Method"] + [_tex_escape(t) for t, _ in cols]
    head2 = ["", ""] + [_tex_escape(metric_label(m)) for _, m in cols]
    head = "% E1 main results: mean $\\pm$ sample std over seeds"
    if _has_ci(main):
        head += f" [{_level(alpha)} bootstrap confidence interval of the seed mean, seeds and examples random]"
    out = [
        head + " (generated by iclpt.reporting)",
        "\\begin{tabular}{" + spec + "}",
        "\\toprule",
        " & ".join(head1) + " \\\\",
        " & ".join(head2) + " \\\\",
        "\\midrule",
    ]
    prev = None
    for mo, me in rows:
        if prev is not None and mo != prev:
            out.append("\\midrule")
        vals = [_cell(cells.get(((mo, me), c), (math.nan, math.nan, 0)), digits, " $\\pm$ ") for c in cols]
        out.append(" & ".join([_tex_escape(mo) if mo != prev else "", _tex_escape(label(me))] + vals) + " \\\\")
        prev = mo
    out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)

