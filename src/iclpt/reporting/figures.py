"""Figures of E2-E4 (matplotlib, Agg). Each function returns a Figure; save_figure writes PNG + PDF atomically.

Every figure plots each task's primary metric (0-100). When there is nothing to plot, the axes still get their
labels and title and a centred message says why (so the report shows the gap instead of failing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from iclpt.io import PathLike, atomic_open  # noqa: E402
from iclpt.orchestration.methods import color, label  # noqa: E402
from iclpt.reporting.aggregate import (  # noqa: E402
    BASELINES,
    DEFAULT_METHODS,
    E2_METHODS,
    IPT,
    PT,
    REFERENCE,
    reference_label,
    stability_runs,
)


def save_figure(fig: plt.Figure, paths: Sequence[PathLike], dpi: int = 150) -> None:
    """Write the figure to every path (format from the suffix), each atomically; close it."""
    for p in paths:
        fmt = Path(p).suffix.lstrip(".") or "png"
        with atomic_open(p, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight",
                        metadata={"CreationDate": None} if fmt == "pdf" else None)
    plt.close(fig)


def _no_data(ax: plt.Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _primary_only(df: pd.DataFrame, primary: dict[str, str], task_col: str = "task") -> pd.DataFrame:
    if df.empty or not primary:
        return df
    keep = df[task_col].map(primary) == df["metric"]
    return df[keep]


# ---- E2 -----------------------------------------------------------------------------------------------------------
def _panel_row(n: int, figsize: tuple[float, float], *, empty: bool, title: str, xlabel: str, ylabel: str,
               message: str) -> tuple[plt.Figure, list[plt.Axes]]:
    """A row of n panels; with nothing to plot, the first panel is labelled and says why it is empty."""
    fig, axes = plt.subplots(1, n, figsize=figsize, squeeze=False)
    axes = list(axes[0])
    if empty:
        ax = axes[0]
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _no_data(ax, message)
    return fig, axes


def _baseline_marks(ax: plt.Axes, table: pd.DataFrame, cells: list[tuple], x: np.ndarray, span: float) -> None:
    """A dashed horizontal segment across each cell's bar group at every baseline's score ('<baseline>_mean')."""
    for name in BASELINES:
        col = f"{name}_mean"
        if col not in table.columns:
            continue
        vals = table.groupby(["task", "model", "metric"], sort=False)[col].first()
        first = True
        for xi, cell in zip(x, cells):
            v = vals.get(cell, np.nan)
            if v is None or math.isnan(float(v)):
                continue
            ax.plot([xi - span / 2, xi + span / 2], [v, v], color=color(name), linestyle="--", linewidth=1.6,
                    zorder=4, label=label(name) if first else None)
            first = False


def _demo_bars(ax: plt.Axes, s: pd.DataFrame) -> None:
    """Grouped bars: each E2 method with retrieved and random demos (mean ± std) per task x model cell."""
    cells = list(dict.fromkeys(zip(s["task"], s["model"], s["metric"])))
    series = [(method, demos) for method in E2_METHODS for demos in ("retrieved", "random")]
    width = 0.8 / len(series)
    x = np.arange(len(cells))
    for i, (method, demos) in enumerate(series):
        sub = s[s["method"] == method].set_index(["task", "model", "metric"])
        means = [sub.loc[c, f"{demos}_mean"] if c in sub.index else np.nan for c in cells]
        stds = [sub.loc[c, f"{demos}_std"] if c in sub.index else np.nan for c in cells]
        stds = [0 if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in stds]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=f"{label(method)} {demos}", color=color(method), alpha=1.0 if demos == "retrieved" else 0.45,
               hatch=None if demos == "retrieved" else "//", edgecolor="black", linewidth=0.4)
    _baseline_marks(ax, s, cells, x, 0.8)
    ax.set_xticks(x, [f"{t}\n{m}\n({me})" for t, m, me in cells], fontsize=8)
    ax.legend(fontsize=8)


def fig_similarity(sim: pd.DataFrame, buckets: pd.DataFrame, primary: dict[str, str],
                   note: str = "") -> plt.Figure:
    """Left: retrieved vs random demos for ICL and IPT (mean ± std; a dashed 'Zero-shot' segment per group when
    the baseline was run). Right: IPT - PT gain per similarity bucket."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    s = _primary_only(sim, primary)
    ax1.set_title("E2: retrieved vs random demonstrations")
    ax1.set_xlabel("task / model (primary metric)")
    ax1.set_ylabel("score (0–100), mean ± std over seeds")
    if s.empty:
        names = "/".join(label(n) for n in E2_METHODS)
        _no_data(ax1, note or f"no {names} runs with retrieved and random demos")
    else:
        _demo_bars(ax1, s)
    b = _primary_only(buckets, primary)
    ax2.set_title("E2: IPT − PT gain by top-demo similarity bucket")
    ax2.set_xlabel("similarity quantile bucket of the test example's top demo (1 = least similar)")
    ax2.set_ylabel("IPT − PT (per-example score), mean over seeds")
    if b.empty:
        _no_data(ax2, "no paired IPT/PT per-example scores with demo similarities")
    else:
        for (task, model), sub in b.groupby(["task", "model"], sort=True):
            sub = sub.sort_values("bucket")
            yerr = sub["gain_std"].fillna(0).to_numpy()
            ax2.errorbar(sub["bucket"], sub["gain_mean"], yerr=yerr, marker="o", capsize=3, label=f"{task} / {model}")
        ax2.axhline(0, color="black", linewidth=0.8, linestyle=":")
        ax2.set_xticks(sorted(b["bucket"].unique()))
        ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- E3 -----------------------------------------------------------------------------------------------------------
def fig_stability_seeds(runs: pd.DataFrame, main_len: int, primary: dict[str, str]) -> plt.Figure:
    """Per task x model: per-seed scores of PT and IPT at the main prompt length (box + points)."""
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * max(1, runs["task"].nunique() if not runs.empty else 1)), 4.5))
    ax.set_title(f"E3: spread over seeds, PT vs IPT (prompt length {main_len})")
    ax.set_xlabel("task / model (primary metric)")
    ax.set_ylabel("score (0–100), one point per seed")
    sel = runs
    if not runs.empty:
        sel = _primary_only(stability_runs(runs, main_len), primary).dropna(subset=["value"])
    if sel.empty:
        _no_data(ax, "no PT/IPT runs at the main prompt length")
        fig.tight_layout()
        return fig
    cells = list(dict.fromkeys(zip(sel["task"], sel["model"], sel["metric"])))
    rng = np.random.default_rng(0)  # jitter only
    for i, cell in enumerate(cells):
        for j, method in enumerate((PT, IPT)):
            v = sel[(sel["task"] == cell[0]) & (sel["model"] == cell[1]) & (sel["method"] == method)]["value"]
            if v.empty:
                continue
            pos = i + (j - 0.5) * 0.35
            ax.boxplot([v.to_numpy()], positions=[pos], widths=0.28, showfliers=False,
                       patch_artist=True, boxprops={"facecolor": color(method), "alpha": 0.35},
                       medianprops={"color": "black"})
            ax.scatter(pos + rng.uniform(-0.06, 0.06, len(v)), v, color=color(method), s=14, zorder=3,
                       label=label(method) if i == 0 else None)
    ax.set_xticks(range(len(cells)), [f"{t}\n{m}\n({me})" for t, m, me in cells], fontsize=8)
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_stability_length(stab: pd.DataFrame, primary: dict[str, str]) -> plt.Figure:
    """One panel per task: mean over seeds vs prompt length, band = ± sample std, for PT and IPT per model."""
    s = _primary_only(stab, primary)
    tasks = sorted(s["task"].unique()) if not s.empty else []
    n = max(1, len(tasks))
    fig, axes = _panel_row(n, (4.2 * n, 3.8), empty=not tasks, title="E3: score vs soft-prompt length",
                           xlabel="soft-prompt length (virtual tokens)",
                           ylabel="score (0–100), mean ± std over seeds", message="no PT/IPT runs")
    styles = ["-", "--", ":", "-."]
    for ax, task in zip(axes, tasks):
        sub = s[s["task"] == task]
        for k, model in enumerate(sorted(sub["model"].unique())):
            for method in (PT, IPT):
                d = sub[(sub["model"] == model) & (sub["method"] == method)].sort_values("length")
                if d.empty:
                    continue
                x, m, sd = d["length"].to_numpy(), d["mean"].to_numpy(float), d["std"].fillna(0).to_numpy(float)
                ax.plot(x, m, marker="o", linestyle=styles[k % len(styles)], color=color(method),
                        label=f"{label(method)} {model}")
                ax.fill_between(x, m - sd, m + sd, color=color(method), alpha=0.18)
        if sub["length"].nunique() > 1 and sub["length"].min() > 0:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(sorted(sub["length"].unique()), [str(v) for v in sorted(sub["length"].unique())])
        ax.set_title(f"E3: {task} ({primary.get(task, '')}) vs prompt length")
        ax.set_xlabel("soft-prompt length (virtual tokens)")
        ax.set_ylabel("score (0–100), mean ± std over seeds")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---- E4 -----------------------------------------------------------------------------------------------------------
def fig_transfer(transfer: pd.DataFrame, primary: dict[str, str]) -> plt.Figure:
    """Heatmap per model: rows = source task (+ the reference methods on the target, in report order: the
    'Zero-shot (target)' baseline first when it was run, then ICL/PT/IPT), columns = target task.

    Colours are normalised per target column (targets use different metrics); numbers are the raw means.
    """
    t = _primary_only(transfer, primary, task_col="target")
    models = sorted(t["model"].unique()) if not t.empty else []
    n = max(1, len(models))
    width = 1.4 * max(3, t["target"].nunique() if not t.empty else 3) + 2.5
    fig, axes = _panel_row(n, (width, 4.8), empty=not models, title="E4: prompt transfer (source → target)",
                           xlabel="target task", ylabel="source of the soft prompt", message="no transfer runs")
    for ax, model in zip(axes, models):
        sub = t[t["model"] == model]
        targets = sorted(sub["target"].unique())
        sources = sorted(sub[sub["kind"] != REFERENCE]["source"].unique())
        refs = [r for r in map(reference_label, DEFAULT_METHODS) if r in set(sub["source"])]
        rows = sources + refs
        vals = np.full((len(rows), len(targets)), np.nan)
        for i, r in enumerate(rows):
            for j, tg in enumerate(targets):
                v = sub[(sub["source"] == r) & (sub["target"] == tg)]["mean"]
                if len(v):
                    vals[i, j] = v.iloc[0]
        norm = np.full_like(vals, np.nan)
        for j in range(vals.shape[1]):
            col = vals[:, j]
            if np.all(np.isnan(col)):
                continue
            lo, hi = np.nanmin(col), np.nanmax(col)
            norm[:, j] = (col - lo) / (hi - lo) if hi > lo else 0.5
        im = ax.imshow(np.ma.masked_invalid(norm), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(targets)):
                txt = "–" if np.isnan(vals[i, j]) else f"{vals[i, j]:.1f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="white" if (not np.isnan(norm[i, j]) and norm[i, j] < 0.5) else "black")
        if refs and sources:
            ax.axhline(len(sources) - 0.5, color="white", linewidth=2)
        ax.set_xticks(range(len(targets)), [f"{tg}\n({primary.get(tg, '')})" for tg in targets], fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("target task (metric)")
        ax.set_ylabel("source of the soft prompt / reference on target")
        ax.set_title(f"E4: prompt transfer, {model}")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="score, normalised per target column")
    fig.tight_layout()
    return fig


# ---- training curves ----------------------------------------------------------------------------------------------
def fig_training(curves: pd.DataFrame) -> plt.Figure:
    """One panel per task: the dev loss of every main-setting prompt against its step (step 0: the initial prompt),
    one line per seed, coloured by method; the regime gate of findings.md reads these curves."""
    tasks = sorted(curves["task"].unique()) if not curves.empty else []
    n = max(1, len(tasks))
    fig, axes = _panel_row(n, (4.2 * n, 3.6), empty=not tasks, title="Dev loss during training",
                           xlabel="optimizer step", ylabel="dev loss", message="no dev evaluations")
    for ax, task in zip(axes, tasks):
        sub = curves[curves["task"] == task]
        seen: set[str] = set()
        for (_model, method, _seed), d in sub.groupby(["model", "method", "seed"], sort=True):
            d = d.sort_values("step")
            ax.plot(d["step"], d["dev_loss"], marker=".", color=color(method), alpha=0.7, linewidth=1,
                    label=label(method) if method not in seen else None)
            seen.add(method)
        ax.set_title(task)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("dev loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
