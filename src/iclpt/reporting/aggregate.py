"""From metrics.json / scores.jsonl files to the tables of E1-E4 (pandas DataFrames)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iclpt.evaluation.metrics import PRIMARY_PREFERENCE
from iclpt.io import DataError, PathLike, read_json, read_jsonl
from iclpt.orchestration.layout import METRICS, PREDICTIONS, RUN_FIELDS, SCORES, run_path
from iclpt.orchestration.methods import (
    METHODS,
    REPORT_ORDER,
    ROLE_DEMOS_ONLY,
    ROLE_PROMPT_AND_DEMOS,
    ROLE_PROMPT_ONLY,
    ROLE_SOURCE_PROMPT_AND_DEMOS,
    get_method,
    label,
    method_with_role,
    split_name,
)
from iclpt.orchestration.runs import Run

#: the methods the reports list by default: every non-family method, in the registry's report order
DEFAULT_METHODS: tuple[str, ...] = tuple(n for n in REPORT_ORDER if not METHODS[n].family)
#: the baselines (zero-shot): shown next to the other methods in E2 and E4 when they were run
BASELINES: tuple[str, ...] = tuple(n for n in DEFAULT_METHODS if METHODS[n].baseline)
#: the methods E2 runs with retrieved and with random demos (ICL, IPT)
E2_METHODS: tuple[str, ...] = tuple(n for n in DEFAULT_METHODS if "random" in METHODS[n].demos)
#: the methods the findings are about, by their registry role: E2b pairs IPT with PT; E4's beats_* columns compare
#: TRANSFER (the family) with ICL and PT
ICL, PT, IPT, TRANSFER = (method_with_role(r) for r in (ROLE_DEMOS_ONLY, ROLE_PROMPT_ONLY, ROLE_PROMPT_AND_DEMOS,
                                                         ROLE_SOURCE_PROMPT_AND_DEMOS))
#: the kind of the E4 reference rows (the other rows' kind is their family's name)
REFERENCE = "reference"

# PRIMARY_PREFERENCE (imported): when a metrics.json names no primary metric, the first of these it has is used


def versus(a: str, b: str) -> str:
    """The name of the comparison of method a with method b in comparisons.csv and findings.md, e.g. 'ipt_vs_pt'."""
    return f"{a}_vs_{b}"

RUN_KEYS = list(RUN_FIELDS)
SUMMARY_COLS = ["n_seeds", "mean", "std", "min", "max"]


def read_metrics(path: PathLike) -> tuple[Run, dict[str, Any]]:
    """(the run, the document) of a metrics.json: the score rule writes the run's identity in it (RUN_KEYS)."""
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise DataError(f"{path}: expected an object with a 'metrics' object")
    missing = [k for k in RUN_KEYS if doc.get(k) is None]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} (a metrics.json names its run; rerun the score rule)")
    run = Run(str(doc["task"]), str(doc["model"]), str(doc["method"]), int(doc["length"]), str(doc["demos"]),
              int(doc["seed"]))
    return run, doc


def check_one_file_per_run(named: Iterable[tuple[Run, PathLike]]) -> None:
    """Each run named by one metrics.json only: two that name the same run (one copied or moved from another run's
    folder) would count it twice and leave the other run out. DataError naming both files."""
    seen: dict[Run, PathLike] = {}
    for run, path in named:
        if run in seen and Path(seen[run]).resolve() != Path(path).resolve():
            raise DataError(f"{path}: names the run {run_path(run)}, as {seen[run]} does (a metrics.json copied or "
                            "moved from another run's folder?); delete the one that is not in its run's folder so "
                            "that score reruns")
        seen[run] = path


def run_beside(path: PathLike) -> Run:
    """The run of a file in a predictions folder (scores.jsonl, predictions.jsonl): the one its metrics.json names
    (the score rule writes metrics.json and scores.jsonl together)."""
    return read_metrics(Path(path).with_name(METRICS))[0]


def _primary(doc: dict[str, Any]) -> str | None:
    if doc.get("primary_metric"):
        return doc["primary_metric"]
    names = doc.get("metric_names") or list(doc.get("metrics", {}))
    for p in PRIMARY_PREFERENCE:
        if p in names:
            return p
    return names[0] if names else None


def _budget(doc: dict[str, Any]) -> dict[str, float]:
    """n_refs and n_unreachable_refs of a metrics.json's decoding budget (NaN where it has none)."""
    b = doc.get("decoding_budget") or {}
    return {k: float(b[k]) if b.get(k) is not None else math.nan for k in ("n_refs", "n_unreachable_refs")}


def budget_notes(runs: pd.DataFrame) -> list[str]:
    """One line per task whose decoding budget cannot reach some test references (no method can match them)."""
    if runs.empty or "n_unreachable_refs" not in runs.columns:
        return []
    out = []
    for task, g in runs.dropna(subset=["n_unreachable_refs"]).groupby("task", sort=True):
        worst = g.loc[g["n_unreachable_refs"].idxmax()]
        if worst["n_unreachable_refs"] > 0:
            out.append(f"{task}: {int(worst['n_unreachable_refs'])} of {int(worst['n_refs'])} references "
                       f"({100 * worst['n_unreachable_refs'] / worst['n_refs']:.1f} %) are longer than the decoding "
                       "budget (max_new_tokens): no method can produce them.")
    return out


def load_runs(metric_files: Iterable[PathLike]) -> pd.DataFrame:
    """Long table of every run: RUN_KEYS + metric, value, n_evaluated, n_skipped, primary."""
    rows = []
    docs = [(f, *read_metrics(f)) for f in metric_files]
    check_one_file_per_run((run, f) for f, run, _ in docs)
    for _, run, doc in docs:
        keys = run._asdict()
        primary = _primary(doc)
        for name, value in doc["metrics"].items():
            rows.append(
                {
                    **keys,
                    "metric": name,
                    "value": float(value) if value is not None else math.nan,
                    "n_evaluated": (doc.get("n_evaluated") or {}).get(name),
                    "n_skipped": (doc.get("n_skipped") or {}).get(name),
                    "primary": name == primary,
                    **_budget(doc),
                }
            )
    cols = RUN_KEYS + ["metric", "value", "n_evaluated", "n_skipped", "primary", "n_refs", "n_unreachable_refs"]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df
    return df.sort_values(RUN_KEYS + ["metric"], kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """n_seeds (non-missing values), mean, sample std (ddof=1; NaN for one seed), min, max per group."""
    by = list(by)
    if df.empty:
        return pd.DataFrame(columns=by + SUMMARY_COLS)
    g = df.dropna(subset=[value]).groupby(by, sort=True)[value]
    out = g.agg(n_seeds="count", mean="mean", std=lambda s: s.std(ddof=1), min="min", max="max").reset_index()
    # groups whose every value is missing still get a row (n_seeds 0)
    allg = df[by].drop_duplicates()
    out = allg.merge(out, on=by, how="left")
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    return out.sort_values(by, kind="stable").reset_index(drop=True)


def read_runs_csv(path: PathLike) -> pd.DataFrame:
    """all_runs.csv back into the load_runs() frame (typed columns)."""
    df = pd.read_csv(path, dtype={"task": str, "model": str, "method": str, "demos": str, "metric": str})
    if df.empty:
        return df
    df["length"] = df["length"].astype(int)
    df["seed"] = df["seed"].astype(int)
    df["value"] = df["value"].astype(float)
    df["primary"] = df["primary"].astype(str).str.lower().isin(["true", "1"])
    return df


def primary_metrics(runs: pd.DataFrame) -> dict[str, str]:
    """task -> its primary metric (the first metric the task declares)."""
    out: dict[str, str] = {}
    if runs.empty:
        return out
    for task, sub in runs.groupby("task"):
        p = sub.loc[sub["primary"].astype(bool), "metric"]
        out[task] = p.iloc[0] if len(p) else sub["metric"].iloc[0]
    return out


def _select(runs: pd.DataFrame, method: str, length: int | None, demos: str) -> pd.DataFrame:
    m = (runs["method"] == method) & (runs["demos"] == demos)
    if length is not None:
        m &= runs["length"] == length
    return runs[m]


def main_setting(name: str, main_len: int) -> tuple[int, str]:
    """(prompt length, demo source) of a method's main setting; UnknownMethodError for an unknown name."""
    m = get_method(name)
    return m.length(main_len), m.main_demos


def select_main(runs: pd.DataFrame, name: str, main_len: int) -> pd.DataFrame:
    """The runs of one method in its main setting (the registry's length and first demo source)."""
    length, demos = main_setting(name, main_len)
    return _select(runs, name, length, demos)


def main_runs(runs: pd.DataFrame, main_len: int, methods: Sequence[str] = DEFAULT_METHODS) -> pd.DataFrame:
    """The E1 selection: each method in its main setting (e.g. ICL L0 retrieved, PT L=main none)."""
    settings = {name: main_setting(name, main_len) for name in methods}  # unknown names raise first
    if runs.empty:
        return runs
    parts = [_select(runs, name, length, demos) for name, (length, demos) in settings.items()]
    return pd.concat(parts, ignore_index=True) if parts else runs.iloc[0:0]


def main_table(runs: pd.DataFrame, main_len: int, methods: Sequence[str] = DEFAULT_METHODS) -> pd.DataFrame:
    """E1: task, model, method, metric, n_seeds, mean, std, min, max (methods in the given order)."""
    cols = ["task", "model", "method", "metric"]
    sel = main_runs(runs, main_len, methods)
    if sel.empty:
        return pd.DataFrame(columns=cols + SUMMARY_COLS)
    out = summarize(sel, cols)
    order = {m: i for i, m in enumerate(methods)}
    out["_o"] = out["method"].map(order)
    return out.sort_values(["task", "model", "_o", "metric"]).drop(columns="_o").reset_index(drop=True)


def baseline_means(runs: pd.DataFrame, main_len: int) -> dict[str, pd.DataFrame]:
    """{baseline: task, model, metric, <baseline>_mean} of each baseline that has runs (mean over seeds)."""
    out = {}
    for name in BASELINES:
        sel = select_main(runs, name, main_len)
        if not sel.empty:
            s = summarize(sel, ["task", "model", "metric"])
            out[name] = s[["task", "model", "metric", "mean"]].rename(columns={"mean": f"{name}_mean"})
    return out


def _with_baselines(res: pd.DataFrame, runs: pd.DataFrame, main_len: int, key: Sequence[str]) -> list[str]:
    """Add each present baseline's mean to res (in place, matched on key); the added column names."""
    added = []
    for name, b in baseline_means(runs, main_len).items():
        col = f"{name}_mean"
        b = b.rename(columns={"task": key[0]})
        res[col] = res[list(key)].merge(b, on=list(key), how="left")[col].to_numpy()
        added.append(col)
    return added


# ---- E2 -----------------------------------------------------------------------------------------------------
def similarity_table(runs: pd.DataFrame, main_len: int) -> pd.DataFrame:
    """E2a: the methods run with retrieved and random demos (ICL, IPT), per task x model x metric.

    Columns: task, model, method, metric, {retrieved,random}_{n_seeds,mean,std}, diff (retrieved - random), note.
    When a baseline (zero-shot: no prompt, no demos) was run, a `zeroshot_mean` column after random_std gives its
    score on the row's task x model x metric (the same on the ICL and the IPT row); without it the columns are
    exactly the ones above.
    """
    cols = ["task", "model", "method", "metric"]
    out_cols = cols + [f"{s}_{c}" for s in ("retrieved", "random") for c in ("n_seeds", "mean", "std")]
    if runs.empty:
        return pd.DataFrame(columns=out_cols + ["diff", "note"])
    long = _demo_summaries(runs, main_len, cols)
    if long.empty:
        return pd.DataFrame(columns=out_cols + ["diff", "note"])
    res = long[cols].drop_duplicates().reset_index(drop=True)
    for s in ("retrieved", "random"):
        part = long[long["demos"] == s][cols + ["n_seeds", "mean", "std"]]
        part = part.rename(columns={c: f"{s}_{c}" for c in ("n_seeds", "mean", "std")})
        res = res.merge(part, on=cols, how="left")
    out_cols += _with_baselines(res, runs, main_len, cols[:2] + cols[3:])
    res["diff"] = res["retrieved_mean"] - res["random_mean"]
    res["note"] = ""
    res.loc[res["random_mean"].isna(), "note"] = "no random-demo runs"
    res.loc[res["retrieved_mean"].isna(), "note"] = "no retrieved-demo runs"
    for c in ("retrieved_n_seeds", "random_n_seeds"):
        res[c] = res[c].fillna(0).astype(int)
    return res[out_cols + ["diff", "note"]].sort_values(cols).reset_index(drop=True)


def _demo_summaries(runs: pd.DataFrame, main_len: int, cols: list[str]) -> pd.DataFrame:
    """Seed summaries of each E2 method with retrieved and with random demos (long: + 'demos')."""
    parts = []
    for name in E2_METHODS:
        for demos in ("retrieved", "random"):
            sel = _select(runs, name, METHODS[name].length(main_len), demos)
            if sel.empty:
                continue
            s = summarize(sel, cols)
            s["demos"] = demos
            parts.append(s)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def load_per_example(pred_dirs: Iterable[PathLike], need_demo_scores: bool = True) -> pd.DataFrame:
    """Per-example scores of runs (prediction folders, each with its metrics.json and scores.jsonl): RUN_KEYS + id,
    metric, value, top_demo_score (demo_scores[0] of predictions.jsonl, or NaN)."""
    rows = []
    pred_dirs = [Path(d) for d in pred_dirs]
    runs = [read_metrics(d / METRICS)[0] for d in pred_dirs]
    check_one_file_per_run((run, d / METRICS) for run, d in zip(runs, pred_dirs))
    for d, run in zip(pred_dirs, runs):
        keys = run._asdict()
        top: dict[str, float] = {}
        if need_demo_scores and (d / PREDICTIONS).is_file():
            for p in read_jsonl(d / PREDICTIONS, required=("id", "demo_scores")):
                ds = p["demo_scores"] or []
                top[str(p["id"])] = float(ds[0]) if ds and ds[0] is not None else math.nan
        for s in read_jsonl(d / SCORES, required=("id",)):
            sid = str(s["id"])
            for name, v in s.items():
                if name in ("id", "stats"):  # "stats": BLEU sufficient statistics (iclpt.reporting.uncertainty)
                    continue
                rows.append({**keys, "id": sid, "metric": name, "value": float(v) if v is not None else math.nan,
                             "top_demo_score": top.get(sid, math.nan)})
    return pd.DataFrame(rows, columns=RUN_KEYS + ["id", "metric", "value", "top_demo_score"])


BUCKET_COLS = ["task", "model", "metric", "bucket", "n_buckets", "sim_min", "sim_max", "n_examples", "n_seeds",
               f"{IPT}_mean", f"{PT}_mean", "gain_mean", "gain_std"]


def bucket_cells(per_example: pd.DataFrame, main_len: int, n_buckets: int = 4, min_per_bucket: int = 2):
    """Yield (task, model, metric, sim, bucket, merged) of each task x model x metric with paired IPT/PT scores.

    sim: the top demo similarity per test example (IPT run, mean over seeds); bucket: its quantile bucket
    (0 = least similar) per example id; merged: seed, id, value_a (IPT), value_b (PT), bucket, gain (IPT - PT)
    of the examples with both scores."""
    if per_example.empty:
        return
    ipt = select_main(per_example, IPT, main_len)
    pt = select_main(per_example, PT, main_len)
    for (task, model, metric), ipt_c in ipt.groupby(["task", "model", "metric"], sort=True):
        pt_c = pt[(pt["task"] == task) & (pt["model"] == model) & (pt["metric"] == metric)]
        if pt_c.empty:
            continue
        sim = ipt_c.groupby("id")["top_demo_score"].mean().dropna()
        sim = sim[sim.index.isin(set(pt_c["id"]))]
        n_b = min(n_buckets, len(sim) // max(1, min_per_bucket))
        if n_b < 1:
            continue
        if n_b == 1:
            bucket = pd.Series(0, index=sim.index)
        else:
            bucket = pd.qcut(sim, n_b, labels=False, duplicates="drop")
        merged = ipt_c[["seed", "id", "value"]].merge(pt_c[["seed", "id", "value"]], on=["seed", "id"],
                                                      suffixes=("_a", "_b"))
        merged = merged[merged["id"].isin(sim.index)].dropna(subset=["value_a", "value_b"])
        merged["bucket"] = merged["id"].map(bucket)
        merged["gain"] = merged["value_a"] - merged["value_b"]
        yield task, model, metric, sim, bucket, merged


def gain_by_bucket(per_example: pd.DataFrame, main_len: int, n_buckets: int = 4,
                   min_per_bucket: int = 2) -> pd.DataFrame:
    """E2b: IPT - PT gain per quantile bucket of the test example's top (retrieved) demo similarity.

    Buckets (1 = least similar) are quantiles of the IPT run's demo_scores[0] per task x model; fewer than
    n_buckets when there are fewer than n_buckets * min_per_bucket examples or tied similarities. Per seed the
    gain is the mean over the bucket's examples of (IPT score - PT score) of the same seed; then mean and sample
    std over seeds. Scores are per-example (sentence BLEU for BLEU tasks, 0/100 for exact match).
    """
    out = []
    for task, model, metric, sim, bucket, merged in bucket_cells(per_example, main_len, n_buckets, min_per_bucket):
        n_eff = int(bucket.nunique())
        per_seed = merged.groupby(["bucket", "seed"]).agg(gain=("gain", "mean"), a=("value_a", "mean"),
                                                          b=("value_b", "mean")).reset_index()
        for b in sorted(bucket.unique()):
            ids = bucket.index[bucket == b]
            ps = per_seed[per_seed["bucket"] == b]
            out.append({
                "task": task, "model": model, "metric": metric, "bucket": int(b) + 1, "n_buckets": n_eff,
                "sim_min": float(sim[ids].min()), "sim_max": float(sim[ids].max()), "n_examples": int(len(ids)),
                "n_seeds": int(ps["seed"].nunique()), f"{IPT}_mean": float(ps["a"].mean()) if len(ps) else math.nan,
                f"{PT}_mean": float(ps["b"].mean()) if len(ps) else math.nan,
                "gain_mean": float(ps["gain"].mean()) if len(ps) else math.nan,
                "gain_std": float(ps["gain"].std(ddof=1)) if len(ps) > 1 else math.nan,
            })
    return pd.DataFrame(out, columns=BUCKET_COLS)


# ---- E3 -----------------------------------------------------------------------------------------------------
def stability_runs(runs: pd.DataFrame, length: int | None = None) -> pd.DataFrame:
    """The trained methods (PT, IPT) with their main demo source, at every length (or only at `length`).

    Rows keep the order of `runs`."""
    keep = pd.Series(False, index=runs.index)
    for name in (PT, IPT):
        keep |= (runs["method"] == name) & (runs["demos"] == METHODS[name].main_demos)
    if length is not None:
        keep &= runs["length"] == length
    return runs[keep]


def stability_table(runs: pd.DataFrame, main_len: int) -> pd.DataFrame:
    """E3: PT (demos none) and IPT (retrieved) at every prompt length: seed summary; `main` marks L = main."""
    cols = ["task", "model", "method", "length", "metric"]
    if runs.empty:
        return pd.DataFrame(columns=cols + SUMMARY_COLS + ["main"])
    sel = stability_runs(runs)
    if sel.empty:
        return pd.DataFrame(columns=cols + SUMMARY_COLS + ["main"])
    out = summarize(sel, cols)
    out["main"] = out["length"] == main_len
    return out


# ---- E4 -----------------------------------------------------------------------------------------------------
#: the '<method>_mean' columns of every non-baseline method (icl_mean, pt_mean, ipt_mean), then beats_icl, beats_pt
TRANSFER_COLS = (["model", "target", "metric", "source", "kind", "n_seeds", "mean", "std"]
                 + [f"{n}_mean" for n in DEFAULT_METHODS if not (METHODS[n].baseline or METHODS[n].control)]
                 + [f"beats_{ICL}", f"beats_{PT}"])
_KEY = ["model", "target", "metric"]


def reference_label(name: str) -> str:
    """The E4 reference row of a method run on the target, e.g. 'ICL (target)'."""
    return f"{label(name)} (target)"


def _family_runs(runs: pd.DataFrame, main_len: int) -> pd.DataFrame:
    """Runs of a method family (a source task's PT prompt on the target) in its main setting, + 'source' and
    'kind' (the family's name)."""
    split = runs["method"].map(split_name)  # an unknown method raises UnknownMethodError
    fam = split.map(lambda ms: ms[1] is not None)
    sel = runs[fam.astype(bool)]
    if sel.empty:
        return sel.assign(source=pd.Series(dtype=str))
    setting = sel["method"].map(lambda n: main_setting(n, main_len))
    keep = (sel["length"] == setting.str[0]) & (sel["demos"] == setting.str[1])
    parts = split[fam.astype(bool)][keep]
    return sel[keep].assign(source=parts.str[1], kind=parts.map(lambda ms: ms[0].name)).rename(
        columns={"task": "target"})


def _references(runs: pd.DataFrame, main_len: int) -> pd.DataFrame:
    """Reference rows: each non-family method in its main setting on the target ('<label> (target)')."""
    refs = []
    for name in DEFAULT_METHODS:
        sel = select_main(runs, name, main_len).rename(columns={"task": "target"})
        if sel.empty:
            continue
        r = summarize(sel, _KEY)
        r["source"], r["kind"], r["_method"] = reference_label(name), REFERENCE, name
        refs.append(r)
    return pd.concat(refs, ignore_index=True) if refs else pd.DataFrame(columns=_KEY + SUMMARY_COLS + [
        "source", "kind", "_method"])


def _mean_columns(ref: pd.DataFrame) -> list[str]:
    """'<method>_mean' of each non-family method: baselines and controls only when run, the others always."""
    present = set(ref["_method"])
    return [f"{n}_mean" for n in DEFAULT_METHODS if n in present or not (METHODS[n].baseline or METHODS[n].control)]


def _beats(out: pd.DataFrame, col: str) -> np.ndarray:
    ok = out[col].notna() & out["mean"].notna() & (out["kind"] != REFERENCE)
    return np.where(ok, (out["mean"] > out[col]).astype(object), None)


def transfer_table(runs: pd.DataFrame, main_len: int) -> pd.DataFrame:
    """E4: [P_source][demo_target][input_target] per (source, target, model), with reference rows.

    Reference rows (kind = reference): '<label> (target)' of every non-family method run on the target: 'ICL
    (target)', 'PT (target)', 'IPT (target)' and, when run, the baseline 'Zero-shot (target)'. The '<method>_mean'
    columns repeat those means on every row: icl_mean, pt_mean, ipt_mean always, zeroshot_mean (before icl_mean)
    and untrained_mean (finding 3's control, after ipt_mean) only when run. beats_* compare a transfer row's mean
    over seeds with the ICL / PT means (empty when a reference is missing).
    """
    if runs.empty:
        return pd.DataFrame(columns=TRANSFER_COLS)
    tr = _family_runs(runs, main_len)
    if tr.empty:
        return pd.DataFrame(columns=TRANSFER_COLS)
    s = summarize(tr, _KEY + ["source", "kind"])
    ref = _references(runs, main_len)
    ref = ref[ref.set_index(_KEY).index.isin(s.set_index(_KEY).index)]
    out = pd.concat([s, ref.drop(columns="_method")], ignore_index=True)
    mean_cols = _mean_columns(ref)
    for col in mean_cols:
        m = ref[ref["_method"] == col[: -len("_mean")]][_KEY + ["mean"]].rename(columns={"mean": col})
        out = out.merge(m, on=_KEY, how="left") if not m.empty else out.assign(**{col: np.nan})
    for ref_method in (ICL, PT):
        out[f"beats_{ref_method}"] = _beats(out, f"{ref_method}_mean")
    out["_k"] = (out["kind"] == REFERENCE).astype(int)
    out = out.sort_values(_KEY + ["_k", "source"]).drop(columns="_k")
    return out[TRANSFER_COLS[:8] + mean_cols + TRANSFER_COLS[-2:]].reset_index(drop=True)


# ---- retrieval summaries --------------------------------------------------------------------------------------
def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, list):
            out[key] = " ".join(map(str, v))
        else:
            out[key] = v
    return out


def retrieval_summary_table(summary_files: Iterable[PathLike]) -> pd.DataFrame:
    """One row per task x retriever x split of the retrieval summary.json files (provenance and notes left out).

    Each summary names its task and retriever. A summary with a ``splits`` object ({split: stats}) gives a row per
    split, with the flattened stats (e.g. ``first_demo_score.q50``) and ``config.*``; any other summary is
    flattened into one row.
    """
    rows = []
    for f in summary_files:
        doc = read_json(f)
        if not isinstance(doc, dict) or not doc.get("task") or not doc.get("retriever"):
            raise DataError(f"{f}: expected a JSON object naming its 'task' and 'retriever'")
        task, retriever = str(doc["task"]), str(doc["retriever"])
        doc = {k: v for k, v in doc.items() if k not in ("provenance", "note", "task", "retriever")}
        cfg = _flat(doc.pop("config", {}) or {}, "config.")
        splits = doc.pop("splits", None)
        if isinstance(splits, dict) and splits:
            for split, stats in splits.items():
                stats = {k: v for k, v in stats.items() if not k.endswith("_ids")} if isinstance(stats, dict) \
                    else {"value": stats}  # the id lists feed the comparisons, not this table
                rows.append({"task": task, "retriever": retriever, "split": split, **_flat(stats), **_flat(doc), **cfg})
        else:
            rows.append({"task": task, "retriever": retriever, **_flat(doc), **cfg})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["task", "retriever", "split"])
    keys = [c for c in ("task", "retriever", "split") if c in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)
