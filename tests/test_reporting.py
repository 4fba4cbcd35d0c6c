"""Aggregation math, E1-E4 tables, figures (written, labelled), findings both ways, on synthetic runs."""

import json
import math
import random
from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from iclpt.evaluation.metrics import score_predictions, task_metrics
from iclpt.io import DataError
from iclpt.orchestration.methods import REPORT_ORDER, UnknownMethodError, color
from iclpt.reporting import (
    cell_interval,
    comparisons_table,
    fig_similarity,
    fig_stability_length,
    fig_stability_seeds,
    fig_transfer,
    finding1,
    finding2,
    finding3,
    gain_by_bucket,
    load_per_example,
    load_runs,
    load_scores,
    main_table,
    primary_metrics,
    read_metrics,
    read_runs_csv,
    render_findings,
    render_main_md,
    render_main_tex,
    retrieval_summary_table,
    save_figure,
    similarity_table,
    stability_table,
    summarize,
    transfer_table,
    with_bucket_ci,
    with_main_ci,
    with_similarity_ci,
    with_transfer_ci,
    write_csv,
)
from iclpt.reporting.findings import Settings
from iclpt.reporting.stats import Bootstrap

MAIN_LEN = 4


def _identity(task, model, method, length, demos, seed):
    """The run fields a metrics.json carries (the score rule's params.run)."""
    return {"task": task, "model": model, "method": method, "length": length, "demos": demos, "seed": seed}


def _metrics_file(root, task, model, method, length, demos, seed, metrics, primary=None):
    d = Path(root) / "predictions" / task / model / method / f"L{length}" / demos / f"s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    names = list(metrics)
    doc = {**_identity(task, model, method, length, demos, seed), "metrics": metrics, "metric_names": names,
           "primary_metric": primary or names[0], "n_evaluated": {k: 3 for k in names},
           "n_skipped": {k: 0 for k in names}}
    (d / "metrics.json").write_text(json.dumps(doc))
    return d / "metrics.json"


def _runs_frame(rows):
    """rows: (task, model, method, length, demos, seed, value) with metric 'bleu'."""
    df = pd.DataFrame(rows, columns=["task", "model", "method", "length", "demos", "seed", "value"])
    df["metric"] = "bleu"
    df["primary"] = True
    return df


# ---- aggregation ----------------------------------------------------------------------------------------------
def test_summarize_known_numbers():
    df = pd.DataFrame({"g": ["a"] * 4 + ["b"], "value": [1.0, 2.0, 3.0, 4.0, 7.0]})
    s = summarize(df, ["g"]).set_index("g")
    assert s.loc["a", "n_seeds"] == 4
    assert s.loc["a", "mean"] == pytest.approx(2.5)
    assert s.loc["a", "std"] == pytest.approx(math.sqrt(5 / 3))  # sample std: sum sq dev 5, / (n-1)
    assert (s.loc["a", "min"], s.loc["a", "max"]) == (1.0, 4.0)
    assert s.loc["b", "n_seeds"] == 1 and math.isnan(s.loc["b", "std"])


def test_run_identity_comes_from_metrics_json_not_its_path(tmp_path):
    d = tmp_path / "anywhere"
    d.mkdir()
    ident = _identity("dart", "tiny-gpt2", "transfer_mtop", 25, "retrieved", 3)
    (d / "metrics.json").write_text(json.dumps({**ident, "metrics": {"bleu": 7.0}, "primary_metric": "bleu"}))
    (d / "scores.jsonl").write_text(json.dumps({"id": "e0", "bleu": 7.0}) + "\n")
    run, _ = read_metrics(d / "metrics.json")
    assert run._asdict() == ident
    assert load_runs([d / "metrics.json"]).iloc[0][list(ident)].to_dict() == ident
    assert list(load_scores([d / "scores.jsonl"])) == [tuple(ident.values())]
    assert load_per_example([d], need_demo_scores=False).iloc[0][list(ident)].to_dict() == ident
    for drop in ("length", "demos"):  # a metrics.json that does not name its run is refused, whatever its path
        (d / "metrics.json").write_text(json.dumps({k: v for k, v in {**ident, "metrics": {}}.items() if k != drop}))
        with pytest.raises(DataError, match=drop):
            read_metrics(d / "metrics.json")


def test_load_runs_and_main_table(tmp_path):
    files = []
    for seed, (pt, ipt) in enumerate([(10.0, 20.0), (14.0, 22.0), (12.0, 24.0)]):
        files.append(_metrics_file(tmp_path, "dart", "m", "pt", MAIN_LEN, "none", seed, {"bleu": pt}))
        files.append(_metrics_file(tmp_path, "dart", "m", "ipt", MAIN_LEN, "retrieved", seed, {"bleu": ipt}))
        files.append(_metrics_file(tmp_path, "dart", "m", "pt", 1, "none", seed, {"bleu": 99.0}))  # not main
        files.append(_metrics_file(tmp_path, "dart", "m", "ipt", MAIN_LEN, "random", seed, {"bleu": 99.0}))
    files.append(_metrics_file(tmp_path, "dart", "m", "icl", 0, "retrieved", 0, {"bleu": 5.0}))
    files.append(_metrics_file(tmp_path, "spider", "m", "icl", 0, "retrieved", 0,
                               {"exact_match": 50.0, "execution_accuracy": None}))
    runs = load_runs(files)
    assert len(runs) == 3 * 4 + 1 + 2
    assert primary_metrics(runs) == {"dart": "bleu", "spider": "exact_match"}
    # CSV round trip keeps types
    write_csv(runs, tmp_path / "all_runs.csv")
    back = read_runs_csv(tmp_path / "all_runs.csv")
    assert back["primary"].dtype == bool and back["seed"].dtype.kind == "i"
    main = main_table(back, MAIN_LEN).set_index(["task", "method", "metric"])
    assert list(main.columns) == ["model", "n_seeds", "mean", "std", "min", "max"]
    pt = main.loc[("dart", "pt", "bleu")]
    assert (pt["n_seeds"], pt["mean"], pt["min"], pt["max"]) == (3, 12.0, 10.0, 14.0)
    assert pt["std"] == pytest.approx(2.0)
    assert main.loc[("dart", "ipt", "bleu")]["mean"] == pytest.approx(22.0)
    assert main.loc[("dart", "icl", "bleu")]["n_seeds"] == 1
    assert main.loc[("spider", "icl", "execution_accuracy")]["n_seeds"] == 0
    md = render_main_md(main_table(back, MAIN_LEN))
    assert "| model | method | dart (BLEU) | spider (EM) | spider (execution accuracy) |" in md
    assert "12.0 ± 2.0" in md and "| m | ICL | 5.0 |" in md
    tex = render_main_tex(main_table(back, MAIN_LEN))
    assert "\\begin{tabular}{llccc}" in tex and "12.0 $\\pm$ 2.0" in tex and "EM & execution accuracy" in tex


def test_similarity_table_with_and_without_random():
    rows = [("mtop", "m", "icl", 0, "retrieved", 0, 30.0)]
    rows += [("mtop", "m", "icl", 0, "random", s, v) for s, v in enumerate([10.0, 20.0])]
    rows += [("mtop", "m", "ipt", MAIN_LEN, "retrieved", s, v) for s, v in enumerate([40.0, 44.0])]
    t = similarity_table(_runs_frame(rows), MAIN_LEN).set_index("method")
    assert t.loc["icl", "diff"] == pytest.approx(15.0) and t.loc["icl", "random_n_seeds"] == 2
    assert math.isnan(t.loc["ipt", "random_mean"]) and t.loc["ipt", "note"] == "no random-demo runs"


def _per_example(tmp_path, sims, ipt_vals, pt_vals, seeds=(0, 1)):
    dirs = []
    for seed in seeds:
        for method, demos, vals in (("ipt", "retrieved", ipt_vals), ("pt", "none", pt_vals)):
            d = tmp_path / "predictions" / "mtop" / "m" / method / f"L{MAIN_LEN}" / demos / f"s{seed}"
            d.mkdir(parents=True, exist_ok=True)
            preds, scores = [], []
            for i, (sim, v) in enumerate(zip(sims, vals)):
                preds.append({"id": f"e{i}", "demo_scores": [sim, sim / 2] if method == "ipt" else []})
                scores.append({"id": f"e{i}", "exact_match": v + seed})
            (d / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
            (d / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
            ident = _identity("mtop", "m", method, MAIN_LEN, demos, seed)
            (d / "metrics.json").write_text(json.dumps({**ident, "metrics": {"exact_match": 0.0}}))
            dirs.append(d)
    return load_per_example(dirs)


def test_gain_by_bucket(tmp_path):
    sims = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    ipt = [0, 0, 0, 0, 100, 100, 100, 0]
    pt = [0, 0, 0, 0, 0, 0, 0, 0]
    per = _per_example(tmp_path, sims, ipt, pt)
    b = gain_by_bucket(per, MAIN_LEN, n_buckets=2, min_per_bucket=2)
    assert list(b["bucket"]) == [1, 2] and list(b["n_examples"]) == [4, 4]
    assert list(b["gain_mean"]) == pytest.approx([0.0, 75.0])
    assert list(b["n_seeds"]) == [2, 2]
    assert (b.loc[0, "sim_min"], b.loc[1, "sim_max"]) == (0.1, 0.8)
    # few examples: 3 examples with min 2 per bucket -> a single bucket
    b1 = gain_by_bucket(per[per["id"].isin(["e0", "e1", "e2"])], MAIN_LEN, n_buckets=4, min_per_bucket=2)
    assert list(b1["bucket"]) == [1] and b1.loc[0, "n_buckets"] == 1
    assert gain_by_bucket(per.iloc[0:0], MAIN_LEN).empty


def test_stability_and_transfer_tables():
    rows = []
    for s, (a, b) in enumerate([(10.0, 20.0), (30.0, 22.0)]):
        rows += [("dart", "m", "pt", MAIN_LEN, "none", s, a), ("dart", "m", "ipt", MAIN_LEN, "retrieved", s, b),
                 ("dart", "m", "pt", 1, "none", s, a / 2), ("dart", "m", "ipt", 1, "retrieved", s, b - 1)]
        rows += [("dart", "m", "transfer_mtop", MAIN_LEN, "retrieved", s, 15.0 + s),
                 ("dart", "m", "transfer_totto", MAIN_LEN, "retrieved", s, 5.0)]
    rows.append(("dart", "m", "icl", 0, "retrieved", 0, 12.0))
    runs = _runs_frame(rows)
    st = stability_table(runs, MAIN_LEN).set_index(["method", "length"])
    assert st.loc[("pt", MAIN_LEN), "std"] == pytest.approx(math.sqrt(200))
    assert bool(st.loc[("pt", MAIN_LEN), "main"]) and not bool(st.loc[("pt", 1), "main"])
    tr = transfer_table(runs, MAIN_LEN).set_index("source")
    assert tr.loc["mtop", "mean"] == pytest.approx(15.5)
    assert tr.loc["mtop", "beats_icl"] is True and tr.loc["totto", "beats_icl"] is False
    assert tr.loc["mtop", "beats_pt"] is False  # PT on target: mean 20
    assert tr.loc["ICL (target)", "kind"] == "reference" and tr.loc["ICL (target)", "beats_icl"] is None


def test_retrieval_summary_table(tmp_path):
    p = tmp_path / "retrieval" / "dart" / "dense"
    p.mkdir(parents=True)
    doc = {"task": "dart", "retriever": "dense", "config": {"k": 4, "encoder": "minilm"},
           "splits": {"test": {"n_queries": 3, "k": 4, "first_demo_score": {"q50": 0.5},
                               "first_demo_identical_input": 1},
                      "train": {"n_queries": 9, "k": [3, 4], "first_demo_score": {"q50": 0.7},
                                "first_demo_identical_input": 0}},
           "note": "x", "provenance": {"versions": {"numpy": "2"}}}
    (p / "summary.json").write_text(json.dumps(doc))
    q = tmp_path / "retrieval" / "dart" / "bm25"
    q.mkdir(parents=True)
    (q / "summary.json").write_text(json.dumps({"task": "dart", "retriever": "bm25", "test": {"top1": {"q50": 0.25}},
                                                "duplicates": 2}))
    t = retrieval_summary_table([p / "summary.json", q / "summary.json"])
    dense = t[t["retriever"] == "dense"].set_index("split")
    assert dense.loc["test", "first_demo_score.q50"] == 0.5 and dense.loc["train", "k"] == "3 4"
    assert dense.loc["test", "config.encoder"] == "minilm"
    assert not any(c.startswith("provenance") for c in t.columns) and "note" not in t.columns
    bm25 = t[t["retriever"] == "bm25"].iloc[0]
    assert bm25["test.top1.q50"] == 0.25 and bm25["duplicates"] == 2


# ---- zero-shot baseline, unknown methods, unchanged output --------------------------------------------------
def _golden_rows():
    """Two tasks, one model: ICL (retrieved, random), PT, IPT (retrieved, random), transfer both ways."""
    rows = []
    for s in range(2):
        rows += [("dart", "m", "pt", MAIN_LEN, "none", s, 10.0 + 3 * s),
                 ("dart", "m", "ipt", MAIN_LEN, "retrieved", s, 20.0 + s),
                 ("dart", "m", "ipt", MAIN_LEN, "random", s, 15.0 - s), ("dart", "m", "icl", 0, "random", s, 5.0 + s),
                 ("dart", "m", "transfer_mtop", MAIN_LEN, "retrieved", s, 12.5 + s),
                 ("mtop", "m", "transfer_dart", MAIN_LEN, "retrieved", s, 30.0 + s),
                 ("mtop", "m", "pt", MAIN_LEN, "none", s, 25.0)]
    rows += [("dart", "m", "icl", 0, "retrieved", 0, 8.0), ("mtop", "m", "icl", 0, "retrieved", 0, 40.0)]
    return rows


ZEROSHOT_ROWS = [("dart", "m", "zeroshot", 0, "none", 0, 3.0), ("mtop", "m", "zeroshot", 0, "none", 0, 7.0)]

# the tables of _golden_rows() as written before the method registry (no zero-shot run: must stay byte-identical)
GOLDEN = {
    "main": """task,model,method,metric,n_seeds,mean,std,min,max
dart,m,icl,bleu,1,8.0000,,8.0000,8.0000
dart,m,pt,bleu,2,11.5000,2.1213,10.0000,13.0000
dart,m,ipt,bleu,2,20.5000,0.7071,20.0000,21.0000
mtop,m,icl,bleu,1,40.0000,,40.0000,40.0000
mtop,m,pt,bleu,2,25.0000,0.0000,25.0000,25.0000
""",
    "similarity": """task,model,method,metric,retrieved_n_seeds,retrieved_mean,retrieved_std,random_n_seeds,\
random_mean,random_std,diff,note
dart,m,icl,bleu,1,8.0000,,2,5.5000,0.7071,2.5000,
dart,m,ipt,bleu,2,20.5000,0.7071,2,14.5000,0.7071,6.0000,
mtop,m,icl,bleu,1,40.0000,,0,,,,no random-demo runs
""",
    "transfer": """model,target,metric,source,kind,n_seeds,mean,std,icl_mean,pt_mean,ipt_mean,beats_icl,beats_pt
m,dart,bleu,mtop,transfer,2,13.0000,0.7071,8.0000,11.5000,20.5000,True,True
m,dart,bleu,ICL (target),reference,1,8.0000,,8.0000,11.5000,20.5000,,
m,dart,bleu,IPT (target),reference,2,20.5000,0.7071,8.0000,11.5000,20.5000,,
m,dart,bleu,PT (target),reference,2,11.5000,2.1213,8.0000,11.5000,20.5000,,
m,mtop,bleu,dart,transfer,2,30.5000,0.7071,40.0000,25.0000,,False,True
m,mtop,bleu,ICL (target),reference,1,40.0000,,40.0000,25.0000,,,
m,mtop,bleu,PT (target),reference,2,25.0000,0.0000,40.0000,25.0000,,,
""",
    "stability": """task,model,method,length,metric,n_seeds,mean,std,min,max,main
dart,m,ipt,4,bleu,2,20.5000,0.7071,20.0000,21.0000,True
dart,m,pt,4,bleu,2,11.5000,2.1213,10.0000,13.0000,True
mtop,m,pt,4,bleu,2,25.0000,0.0000,25.0000,25.0000,True
""",
    "main.md": """# E1 main results

Mean ± sample std over seeds (a single number: one seed). Scores are 0–100.

| model | method | dart (BLEU) | mtop (BLEU) |
|---|---|---|---|
| m | ICL | 8.0 | 40.0 |
| m | PT | 11.5 ± 2.1 | 25.0 ± 0.0 |
| m | IPT | 20.5 ± 0.7 | – |

Seeds per cell: 1, 2.
""",
    "main.tex": r"""% E1 main results: mean $\pm$ sample std over seeds (generated by iclpt.reporting)
\begin{tabular}{llcc}
\toprule
Model & Method & dart & mtop \\
 &  & BLEU & BLEU \\
\midrule
m & ICL & 8.0 & 40.0 \\
 & PT & 11.5 $\pm$ 2.1 & 25.0 $\pm$ 0.0 \\
 & IPT & 20.5 $\pm$ 0.7 & – \\
\bottomrule
\end{tabular}
""",
}


def _csv_text(df, tmp_path, name):
    write_csv(df, tmp_path / f"{name}.csv")
    return (tmp_path / f"{name}.csv").read_text()


def _tables(runs):
    return {"main": main_table(runs, MAIN_LEN), "similarity": similarity_table(runs, MAIN_LEN),
            "transfer": transfer_table(runs, MAIN_LEN), "stability": stability_table(runs, MAIN_LEN)}


def test_tables_without_zeroshot_unchanged(tmp_path):
    runs = _runs_frame(_golden_rows())
    for name, df in _tables(runs).items():
        assert _csv_text(df, tmp_path, name) == GOLDEN[name], name
    main = main_table(runs, MAIN_LEN)
    assert render_main_md(main) == GOLDEN["main.md"]
    assert render_main_tex(main) == GOLDEN["main.tex"]
    # the report rule's explicit list today gives the same table as the registry default
    assert main_table(runs, MAIN_LEN, ["icl", "pt", "ipt"]).equals(main)


def test_zeroshot_in_main_table(tmp_path):
    runs = _runs_frame(_golden_rows() + ZEROSHOT_ROWS)
    main = main_table(runs, MAIN_LEN)
    assert list(main["method"]) == ["zeroshot", "icl", "pt", "ipt", "zeroshot", "icl", "pt"]
    zs = main[main["method"] == "zeroshot"].set_index("task")
    assert zs.loc["dart", "mean"] == 3.0 and zs.loc["mtop", "mean"] == 7.0 and (zs["n_seeds"] == 1).all()
    text = _csv_text(main, tmp_path, "main")
    assert text.splitlines()[1] == "dart,m,zeroshot,bleu,1,3.0000,,3.0000,3.0000"
    assert text.replace("dart,m,zeroshot,bleu,1,3.0000,,3.0000,3.0000\n", "").replace(
        "mtop,m,zeroshot,bleu,1,7.0000,,7.0000,7.0000\n", "") == GOLDEN["main"]
    md = render_main_md(main)
    assert "| m | Zero-shot | 3.0 | 7.0 |\n| m | ICL | 8.0 | 40.0 |" in md
    tex = render_main_tex(main)
    assert "m & Zero-shot & 3.0 & 7.0 \\\\\n & ICL & 8.0 & 40.0 \\\\" in tex
    # a method list without zero-shot leaves it out
    assert "zeroshot" not in set(main_table(runs, MAIN_LEN, ["icl", "pt", "ipt"])["method"])


def test_zeroshot_in_similarity_and_transfer_tables(tmp_path):
    runs = _runs_frame(_golden_rows() + ZEROSHOT_ROWS)
    sim = similarity_table(runs, MAIN_LEN)
    assert list(sim.columns) == GOLDEN["similarity"].splitlines()[0].replace(
        "random_std,", "random_std,zeroshot_mean,").split(",")
    assert list(sim["zeroshot_mean"]) == [3.0, 3.0, 7.0]
    assert _csv_text(sim.drop(columns="zeroshot_mean"), tmp_path, "sim") == GOLDEN["similarity"]
    tr = transfer_table(runs, MAIN_LEN)
    assert list(tr.columns).index("zeroshot_mean") == list(tr.columns).index("icl_mean") - 1
    assert list(tr.drop_duplicates("target")["zeroshot_mean"]) == [3.0, 7.0]
    ref = tr[tr["source"] == "Zero-shot (target)"].set_index("target")
    assert list(ref["kind"]) == ["reference", "reference"] and ref.loc["mtop", "mean"] == 7.0
    assert ref["beats_icl"].isna().all()
    old = tr[tr["source"] != "Zero-shot (target)"].drop(columns="zeroshot_mean")
    assert _csv_text(old, tmp_path, "tr") == GOLDEN["transfer"]  # the verdict columns do not change


def test_unknown_method_is_an_error():
    runs = _runs_frame(_golden_rows())
    with pytest.raises(UnknownMethodError, match="'bogus'"):
        main_table(runs, MAIN_LEN, ["icl", "bogus"])
    with pytest.raises(UnknownMethodError, match="'bogus'"):
        main_table(runs.iloc[0:0], MAIN_LEN, ["bogus"])
    with pytest.raises(UnknownMethodError, match="'transfer'"):
        transfer_table(_runs_frame(_golden_rows() + [("dart", "m", "transfer", MAIN_LEN, "retrieved", 0, 1.0)]),
                       MAIN_LEN)


# ---- figures ------------------------------------------------------------------------------------------------
def _labelled(fig):
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def _saved(fig, tmp_path, name):
    """Written as a PNG and a PDF that decode to a non-blank image."""
    paths = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    save_figure(fig, paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    _not_blank(paths[0])


def _not_blank(png):
    img = matplotlib.image.imread(png)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # something is drawn on the white canvas


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _bars(ax):
    """{label: [bar heights]} of the bar series."""
    return {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers if isinstance(c, BarContainer)}


def _same(a, b):
    assert len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


def _baseline_segments(ax):
    return [list(line.get_ydata()) for line in ax.lines
            if line.get_color() == color("zeroshot") and line.get_linestyle() == "--"]


def _heatmap(ax):
    """(row labels, {(row, column): text}) of a transfer heatmap panel."""
    rows = [t.get_text() for t in ax.get_yticklabels()]
    n_cols = len(ax.get_xticklabels())
    texts = [t.get_text() for t in ax.texts]
    return rows, {(rows[i // n_cols], i % n_cols): txt for i, txt in enumerate(texts)}


def _figure_runs(zeroshot=False):
    rows = []
    for s in range(3):
        rows += [("dart", "m", "pt", L, "none", s, 10.0 + s * L) for L in (1, MAIN_LEN)]
        rows += [("dart", "m", "ipt", L, "retrieved", s, 20.0 + s) for L in (1, MAIN_LEN)]
        rows += [("dart", "m", "ipt", MAIN_LEN, "random", s, 15.0 + s), ("dart", "m", "icl", 0, "random", s, 5.0)]
        rows += [("dart", "m", "transfer_mtop", MAIN_LEN, "retrieved", s, 12.0)]
        rows += [("mtop", "m", "transfer_dart", MAIN_LEN, "retrieved", s, 30.0 + s),
                 ("mtop", "m", "pt", MAIN_LEN, "none", s, 25.0)]
    rows.append(("dart", "m", "icl", 0, "retrieved", 0, 8.0))
    return _runs_frame(rows + (ZEROSHOT_ROWS if zeroshot else []))


def test_similarity_figure_plots_the_tables(tmp_path):
    runs = _figure_runs()
    primary = primary_metrics(runs)
    sim = similarity_table(runs, MAIN_LEN)
    per = _per_example(tmp_path, [0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4], [0, 0, 0, 0])
    buckets = gain_by_bucket(per, MAIN_LEN, 2, 2)
    fig = fig_similarity(sim, buckets, primary | {"mtop": "exact_match"})
    _labelled(fig)
    ax1, ax2 = fig.axes
    bars = _bars(ax1)
    assert list(bars) == ["ICL retrieved", "ICL random", "IPT retrieved", "IPT random"] == _legend(ax1)
    s = sim.set_index("method")  # one cell: dart / m
    for name, heights in bars.items():
        method, demos = name.split()
        _same(heights, [s.loc[method.lower(), f"{demos}_mean"]])
    assert _baseline_segments(ax1) == []
    (eb,) = [c for c in ax2.containers if isinstance(c, ErrorbarContainer)]
    b = buckets.sort_values("bucket")
    _same(list(eb.lines[0].get_xdata()), list(b["bucket"]))
    _same(list(eb.lines[0].get_ydata()), list(b["gain_mean"]))
    assert _legend(ax2) == ["mtop / m"]
    _saved(fig, tmp_path, "similarity")


def test_similarity_figure_shows_zeroshot(tmp_path):
    runs = _runs_frame(_golden_rows() + ZEROSHOT_ROWS)
    sim = similarity_table(runs, MAIN_LEN)
    fig = fig_similarity(sim, gain_by_bucket(pd.DataFrame(), MAIN_LEN), primary_metrics(runs))
    ax = fig.axes[0]
    assert "Zero-shot" in _legend(ax)
    assert _baseline_segments(ax) == [[3.0, 3.0], [7.0, 7.0]]  # one per task x model group, at the table's value
    _same(_bars(ax)["ICL retrieved"], list(sim[sim["method"] == "icl"]["retrieved_mean"]))
    _saved(fig, tmp_path, "similarity_zs")


def test_stability_figures_plot_the_runs(tmp_path):
    runs = _figure_runs()
    primary = primary_metrics(runs)
    fig = fig_stability_seeds(runs, MAIN_LEN, primary)
    _labelled(fig)
    ax = fig.axes[0]
    assert _legend(ax) == ["PT", "IPT"]
    points = sorted((tuple(sorted(c.get_offsets()[:, 1])), tuple(c.get_facecolor()[0][:3])) for c in ax.collections)
    expect = []
    for (_task, method), sub in runs[(runs["length"] == MAIN_LEN) & (
            ((runs["method"] == "pt") & (runs["demos"] == "none"))
            | ((runs["method"] == "ipt") & (runs["demos"] == "retrieved")))].groupby(["task", "method"]):
        expect.append((tuple(sorted(sub["value"])), matplotlib.colors.to_rgb(color(method))))
    assert points == sorted(expect)
    boxes = sorted(v for p in ax.patches for v in (p.get_path().vertices[:, 1].min(),
                                                   p.get_path().vertices[:, 1].max()))
    assert boxes == pytest.approx(sorted(q for v, _ in expect for q in np.percentile(v, [25, 75])))  # quartiles
    _saved(fig, tmp_path, "stability_seeds")

    stab = stability_table(runs, MAIN_LEN)
    fig = fig_stability_length(stab, primary)
    _labelled(fig)
    plotted = {(task, line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
               for task, ax in zip(("dart", "mtop"), fig.axes) for line in ax.lines}
    assert set(plotted) == {("dart", "PT m"), ("dart", "IPT m"), ("mtop", "PT m")}
    for (task, label_), (x, y) in plotted.items():
        d = stab[(stab["task"] == task) & (stab["method"] == label_.split()[0].lower())].sort_values("length")
        assert x == list(d["length"]) and y == pytest.approx(list(d["mean"]))
    _saved(fig, tmp_path, "stability_length")


def test_transfer_figure_plots_the_table(tmp_path):
    for zeroshot in (False, True):
        runs = _figure_runs(zeroshot)
        table = transfer_table(runs, MAIN_LEN)
        fig = fig_transfer(table, primary_metrics(runs))
        _labelled(fig)
        rows, cells = _heatmap(fig.axes[0])
        refs = (["Zero-shot (target)"] if zeroshot else []) + ["ICL (target)", "PT (target)", "IPT (target)"]
        assert rows == ["dart", "mtop"] + refs
        targets = ["dart", "mtop"]
        for r in table.itertuples():
            assert cells[(r.source, targets.index(r.target))] == f"{r.mean:.1f}"
        assert cells[("mtop", 0)] == f"{12.0:.1f}" and cells[("dart", 0)] == "–"
        if zeroshot:
            assert (cells[("Zero-shot (target)", 0)], cells[("Zero-shot (target)", 1)]) == ("3.0", "7.0")
        _saved(fig, tmp_path, f"transfer{int(zeroshot)}")


def test_figures_without_data_still_labelled(tmp_path):
    empty = _runs_frame([])
    figs = [fig_similarity(similarity_table(empty, MAIN_LEN), gain_by_bucket(pd.DataFrame(), MAIN_LEN), {},
                           note="random-demo control not run"),
            fig_stability_seeds(empty, MAIN_LEN, {}), fig_stability_length(stability_table(empty, MAIN_LEN), {}),
            fig_transfer(transfer_table(empty, MAIN_LEN), {})]
    messages = [["random-demo control not run", "no paired IPT/PT per-example scores with demo similarities"],
                ["no PT/IPT runs at the main prompt length"], ["no PT/IPT runs"], ["no transfer runs"]]
    for i, (fig, msg) in enumerate(zip(figs, messages)):
        _labelled(fig)
        assert [t.get_text() for ax in fig.axes for t in ax.texts] == msg
        assert not any(ax.lines or ax.patches or ax.collections or ax.images for ax in fig.axes)
        _saved(fig, tmp_path, f"empty{i}")


# ---- bootstrap intervals in the tables, paired tests behind the findings ------------------------------------
BOOT = Bootstrap(n_resamples=400, alpha=0.05, seed=0)
N_TEST = 40
_WORDS = "the cat sat on a mat dog ran far away big small red river flows to sea".split()
_REFS = {"dart": [" ".join(random.Random(i).choice(_WORDS) for _ in range(7)) for i in range(N_TEST)],
         "mtop": [f"[IN:X{i} [SL:Y v{i} ] ]" for i in range(N_TEST)]}


def _prediction(task, i, skill, rng):
    gold = _REFS[task][i]
    if task == "mtop":
        return gold if rng.random() < skill else "[IN:WRONG ]"
    return " ".join(w if rng.random() < skill else rng.choice(_WORDS) for w in gold.split())


def _scored_run(root, task, method, length, demos, seed, skill, noise_seed=None):
    """A run folder with predictions.jsonl, metrics.json and scores.jsonl as the score rule writes them."""
    d = Path(root) / "predictions" / task / "m" / method / f"L{length}" / demos / f"s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{task}/{method}/{demos}/{seed}" if noise_seed is None else noise_seed)
    rows = [{"id": f"{task}-{i}", "task": task, "model": "m", "method": method, "seed": seed, "prompt_length": length,
             "demo_source": demos, "demo_ids": [] if demos == "none" else ["t0"],
             "demo_scores": [] if demos == "none" else [i / N_TEST], "input_text": "x",
             "prediction": _prediction(task, i, skill, rng), "references": [_REFS[task][i]], "meta": {}}
            for i in range(N_TEST)]
    body, scores = score_predictions(rows, task_metrics(task), task)
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
    (d / "metrics.json").write_text(json.dumps({**_identity(task, "m", method, length, demos, seed), **body}))
    return d


def _scored_study(root, tie=False):
    """dart (BLEU) and mtop (exact match): every method of E1, E2 and E4, two seeds where a method has seeds.

    tie: IPT predicts exactly what PT predicts (same noise), and transfer exactly what ICL does."""
    dirs = []
    for task, other in (("dart", "mtop"), ("mtop", "dart")):
        dirs.append(_scored_run(root, task, "zeroshot", 0, "none", 0, 0.2))
        dirs.append(_scored_run(root, task, "icl", 0, "retrieved", 0, 0.5, noise_seed=7 if tie else None))
        for s in (0, 1):
            dirs.append(_scored_run(root, task, "pt", MAIN_LEN, "none", s, 0.5, noise_seed=s if tie else None))
            dirs.append(_scored_run(root, task, "ipt", MAIN_LEN, "retrieved", s, 0.5 if tie else 0.95,
                                    noise_seed=s if tie else None))
            dirs.append(_scored_run(root, task, "ipt", MAIN_LEN, "random", s, 0.6))
            dirs.append(_scored_run(root, task, "icl", 0, "random", s, 0.4))
            dirs.append(_scored_run(root, task, f"transfer_{other}", MAIN_LEN, "retrieved", s, 0.5 if tie else 0.95,
                                    noise_seed=7 if tie else None))
    return dirs


def _brackets(df, mean, low, high):
    d = df.dropna(subset=[mean])
    assert len(d) and d[low].notna().all() and d[high].notna().all()
    assert ((d[low] <= d[mean] + 1e-9) & (d[mean] <= d[high] + 1e-9)).all(), d[[mean, low, high]]
    assert (d[low] < d[high]).any()


def test_tables_carry_bootstrap_intervals_that_bracket_the_cells(tmp_path):
    dirs = _scored_study(tmp_path)
    runs = load_runs([d / "metrics.json" for d in dirs])
    scores = load_scores([d / "scores.jsonl" for d in dirs])
    main = with_main_ci(main_table(runs, MAIN_LEN), scores, MAIN_LEN, BOOT)
    assert list(main.columns) == ["task", "model", "method", "metric", "n_seeds", "mean", "ci_low", "ci_high", "std",
                                  "min", "max"]
    _brackets(main, "mean", "ci_low", "ci_high")
    assert (main["ci_low"] >= 0).all() and (main["ci_high"] <= 100).all()  # kept in the scores' range
    assert main.drop(columns=["ci_low", "ci_high"]).equals(main_table(runs, MAIN_LEN))  # the rest unchanged
    for r in main.itertuples():  # the interval's own estimate is the cell (seed mean over the same examples)
        keys = [k for k in scores if k[:3] == (r.task, r.model, r.method) and k[4] == ("none" if r.method in (
            "pt", "zeroshot") else "retrieved")]
        assert cell_interval([scores[k] for k in keys], r.metric, BOOT).estimate == pytest.approx(r.mean)
    pt = main[(main["task"] == "dart") & (main["method"] == "pt")].iloc[0]
    md = render_main_md(main)
    assert f"{pt['mean']:.1f} ± {pt['std']:.1f} [{pt['ci_low']:.1f}, {pt['ci_high']:.1f}]" in md
    assert "95 % bootstrap confidence interval" in md
    assert f"[{pt['ci_low']:.1f}, {pt['ci_high']:.1f}]" in render_main_tex(main)

    sim = with_similarity_ci(similarity_table(runs, MAIN_LEN), scores, MAIN_LEN, BOOT)
    for side in ("retrieved", "random"):
        _brackets(sim, f"{side}_mean", f"{side}_ci_low", f"{side}_ci_high")
        i = list(sim.columns).index(f"{side}_mean")
        assert list(sim.columns)[i + 1:i + 3] == [f"{side}_ci_low", f"{side}_ci_high"]
    _brackets(sim, "diff", "diff_ci_low", "diff_ci_high")
    assert sim["diff_p"].between(0, 1).all() and (sim["diff_p"] < 1e-6).any()  # two-sided t, not bounded by 1/(B+1)

    tr = with_transfer_ci(transfer_table(runs, MAIN_LEN), scores, MAIN_LEN, BOOT)
    _brackets(tr, "mean", "ci_low", "ci_high")
    moves = tr["kind"] == "transfer"
    assert tr.loc[moves, "p_icl"].notna().all() and tr.loc[~moves, "p_icl"].isna().all()
    assert (tr.loc[moves, "p_icl"] < 0.05).all()  # skill 0.95 vs 0.5 on 40 examples

    per = load_per_example(dirs)
    b = with_bucket_ci(gain_by_bucket(per, MAIN_LEN, 2, 2), per, MAIN_LEN, BOOT, 2, 2)
    assert len(b) == 4
    _brackets(b, "gain_mean", "gain_ci_low", "gain_ci_high")
    # a CSV round trip keeps the columns
    write_csv(main, tmp_path / "main.csv")
    assert {"ci_low", "ci_high"} <= set(pd.read_csv(tmp_path / "main.csv").columns)


def test_comparisons_say_within_noise_on_a_tie_and_not_on_a_clear_win(tmp_path):
    verdicts = {}
    for name, tie in (("win", False), ("tie", True)):
        dirs = _scored_study(tmp_path / name, tie=tie)
        runs = load_runs([d / "metrics.json" for d in dirs])
        scores = load_scores([d / "scores.jsonl" for d in dirs])
        per = load_per_example(dirs)
        cmp_ = comparisons_table(scores, per, MAIN_LEN, BOOT)
        assert set(cmp_["comparison"]) == {"pt_vs_zeroshot", "ipt_vs_pt", "retrieved_vs_random",
                                           "similarity_interaction", "random_demos_vs_pt", "similarity_slope",
                                           "transfer_vs_icl", "transfer_vs_pt"}  # no control runs here
        ivp = cmp_[cmp_["comparison"] == "ipt_vs_pt"].set_index("task")
        main = main_table(runs, MAIN_LEN).set_index(["task", "method"])
        for task in ("dart", "mtop"):  # the compared numbers are the main table's cells
            assert ivp.loc[task, "mean_a"] == pytest.approx(main.loc[(task, "ipt"), "mean"])
            assert ivp.loc[task, "mean_b"] == pytest.approx(main.loc[(task, "pt"), "mean"])
            assert ivp.loc[task, "diff"] == pytest.approx(ivp.loc[task, "mean_a"] - ivp.loc[task, "mean_b"])
        primary = primary_metrics(runs)
        s = Settings()
        found = {1: finding1(cmp_, primary, None, MAIN_LEN, s), 2: finding2(runs, cmp_, primary, MAIN_LEN, s, False),
                 3: finding3(cmp_, primary, None, MAIN_LEN, s)}
        verdicts[name] = (cmp_, found, render_findings("x", found, s))
    win, tie = verdicts["win"], verdicts["tie"]
    for kind in ("ipt_vs_pt", "transfer_vs_icl"):
        w = win[0][win[0]["comparison"] == kind]
        t = tie[0][tie[0]["comparison"] == kind]
        assert (w["diff"] > 10).all() and (w["p_value"] < 0.05).all() and not w["within_noise"].any()
        assert (t["diff"] == 0).all() and (t["p_value"] == 1).all() and t["within_noise"].all()
        assert (w["mde"] > 0).all() and (w["diff_ci_low"] < w["diff"]).all() and (w["diff"] < w["diff_ci_high"]).all()
    # without a training table no cell passes the regime gate: findings 1 and 3 interpret nothing
    for _, found, text in (win, tie):
        assert found[1].status == found[3].status == "inconclusive"
        assert "PT not trained" in text
        assert "The control (Untrained prompt + ICL) has no runs" in text and "not supported" not in text
    assert "cannot tell whether PT's dev loss levelled off" in win[2]  # mtop's PT beats zero-shot, no curve


# ---- the score + report rules end to end (fake predictions, no model) -----------------------------------------
HARNESS = r'''
import json, random
from snakemake.utils import validate

validate(config, "{repo}/workflow/schemas/config.schema.yaml")

include: "{repo}/workflow/rules/common.smk"
include: "{repo}/workflow/rules/score.smk"
include: "{repo}/workflow/rules/report.smk"

GOLD = {{"dart": ["the cat sat on the mat", "john lives in paris", "the river flows to the sea",
                  "alice wrote a book", "the team won the cup", "bob is tall"],
         "mtop": ["[IN:A [SL:B x ] ]", "[IN:C ]", "[IN:D [SL:E y ] ]", "[IN:F ]", "[IN:G ]", "[IN:H ]"]}}


rule fake_predict:
    output:
        LAYOUT.predictions(WC),
    run:
        rng = random.Random(len(output[0]) + int(wildcards.seed))
        with open(output[0], "w") as fh:
            for i, gold in enumerate(GOLD[wildcards.task]):
                pred = gold if rng.random() < 0.5 else "nothing"
                demos = wildcards.demos != "none"
                fh.write(json.dumps({{"id": f"e{{i}}", "task": wildcards.task, "model": wildcards.model,
                    "method": wildcards.method, "seed": int(wildcards.seed), "prompt_length": int(wildcards.length),
                    "demo_source": wildcards.demos, "demo_ids": ["t0"] if demos else [],
                    "demo_scores": [0.1 * i] if demos else [], "input_text": "x", "prediction": pred,
                    "references": [gold], "meta": {{}}}}) + "\n")


rule fake_test_split:
    output:
        LAYOUT.data("{{task}}", "test"),
    run:
        with open(output[0], "w") as fh:
            for i, gold in enumerate(GOLD[wildcards.task]):
                fh.write(json.dumps({{"id": f"e{{i}}", "input": "x", "target": gold, "references": [gold]}}) + "\n")


rule fake_train:
    output:
        meta=LAYOUT.prompt_dir(WC) + "/meta.json",
        log=LAYOUT.prompt_dir(WC) + "/train_log.jsonl",
    run:
        with open(output.meta, "w") as fh:
            json.dump({{"task": wildcards.task, "model": wildcards.model, "method": wildcards.method,
                       "prompt_length": int(wildcards.length), "demo_source": wildcards.demos,
                       "seed": int(wildcards.seed), "steps": 90, "initial_dev_loss": 3.0, "best_dev_loss": 1.0,
                       "best_step": 90, "final_dev_loss": 1.0}}, fh)
        with open(output.log, "w") as fh:
            for step, dev in ((30, 2.0), (60, 1.02), (90, 1.0)):
                fh.write(json.dumps({{"step": step, "loss": dev, "dev_loss": dev}}) + "\n")


rule fake_summary:
    output:
        LAYOUT.retrieval_summary("{{task}}", "{{retriever}}"),
    run:
        with open(output[0], "w") as fh:
            json.dump({{"task": wildcards.task, "retriever": wildcards.retriever,
                       "splits": {{"test": {{"n_queries": 6, "first_demo_score": {{"q50": 0.3}},
                                            "first_demo_identical_input_ids": ["e0"],
                                            "first_demo_identical_pair_ids": []}}}}}}, fh)


rule all_report:
    input:
        report_targets(),
    default_target: True
'''

HARNESS_CONFIG = """
run: fake
tasks:
  dart: {files: {train: a, dev: b, test: c}}
  mtop: {files: {train: a, dev: b, test: c}}
models:
  tiny: {build: {architecture: gpt2}}
seeds: [0, 1]
demos: {sources: [retrieved]}
prompt: {length: 2, lengths: [2]}
experiments: {main: true, similarity: true, stability: true, transfer: false}
"""


@pytest.mark.slow
def test_score_and_report_rules_end_to_end(tmp_path):
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "Snakefile").write_text(HARNESS.format(repo=repo))
    (tmp_path / "config.yaml").write_text(HARNESS_CONFIG)
    smk = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    base = [smk, "-s", str(tmp_path / "Snakefile"), "--configfile", str(tmp_path / "config.yaml"),
            "--directory", str(tmp_path), "--cores", "2", "--quiet"]
    run = subprocess.run(base, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    res = tmp_path / "results" / "fake"
    main = pd.read_csv(res / "tables" / "main.csv")
    core = main[main["method"] != "zeroshot"]  # zero-shot joins when the rule's methods list names it
    assert set(zip(core["task"], core["method"])) == {(t, m) for t in ("dart", "mtop") for m in ("icl", "pt", "ipt")}
    assert (main[main["method"].isin(["pt", "ipt"])]["n_seeds"] == 2).all()
    for _, g in main.groupby(["task", "model"]):  # rows in the registry's report order
        order = [REPORT_ORDER.index(m) for m in dict.fromkeys(g["method"])]
        assert order == sorted(order)
    runs = read_runs_csv(res / "tables" / "all_runs.csv")
    for _, r in main.iterrows():  # every main cell is the mean over its runs in all_runs.csv
        v = runs[(runs["task"] == r["task"]) & (runs["method"] == r["method"]) & (runs["metric"] == r["metric"])
                 & (runs["demos"] == ("none" if r["method"] in ("pt", "zeroshot") else "retrieved"))]["value"]
        assert r["mean"] == pytest.approx(v.mean(), abs=1e-4)
    sim = pd.read_csv(res / "tables" / "similarity.csv")
    zs = runs[runs["method"] == "zeroshot"].set_index(["task", "metric"])["value"]  # the schema default runs it
    assert len(zs) > 0 and "zeroshot_mean" in sim.columns
    for _, r in sim.iterrows():
        assert r["zeroshot_mean"] == pytest.approx(zs.loc[(r["task"], r["metric"])], abs=1e-4)
    for f in ("similarity", "stability_seeds", "stability_length"):
        _not_blank(res / "figures" / f"{f}.png")
        assert (res / "figures" / f"{f}.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (res / "tables" / "transfer.csv").exists()
    _brackets(main, "mean", "ci_low", "ci_high")  # every cell carries its bootstrap interval
    _brackets(sim, "retrieved_mean", "retrieved_ci_low", "retrieved_ci_high")
    assert " [" in (res / "tables" / "main.md").read_text()
    buckets = pd.read_csv(res / "tables" / "similarity_buckets.csv")
    assert {"gain_ci_low", "gain_ci_high"} <= set(buckets.columns)
    cmp_ = pd.read_csv(res / "tables" / "comparisons.csv")
    # no random demos, no transfer in this config: the gate, IPT vs PT and the slope, with and without duplicates
    assert set(cmp_["comparison"]) == {"pt_vs_zeroshot", "ipt_vs_pt", "similarity_slope"}
    assert set(cmp_.loc[cmp_["comparison"] == "ipt_vs_pt", "subset"]) == {"all", "no_duplicates"}
    dedup = cmp_[(cmp_["comparison"] == "ipt_vs_pt") & (cmp_["subset"] == "no_duplicates")]
    assert (dedup["n_examples"] == 5).all()  # e0's top demo repeats its input
    assert cmp_["p_value"].between(0, 1).all() and cmp_["within_noise"].dtype == bool
    training = pd.read_csv(res / "tables" / "training.csv")
    assert set(training["method"]) == {"pt", "ipt"} and training["levelled"].all()  # 2 % of the gain in the last third
    findings = (res / "findings.md").read_text()
    assert "## Finding 3: **not run**" in findings and "studentized two-level bootstrap" in findings
    assert "identical input: dart / tiny 16.7 % (1 of 6; identical target too: 0.0 %)" in findings
    assert "random-demo control not run" in pd.read_csv(res / "tables" / "similarity.csv")["note"].iloc[0]
    scores = (res / "predictions" / "mtop" / "tiny" / "pt" / "L2" / "none" / "s0" / "scores.jsonl").read_text()
    assert scores.count("\n") == 6 and '"exact_match"' in scores
    # the bootstrap settings reach exactly the reports that resample (and findings.md, which reads them)
    from workflow_helpers import planned_jobs

    (tmp_path / "alpha.yaml").write_text(HARNESS_CONFIG + "report: {alpha: 0.1, bootstrap_resamples: 500}\n")
    dry = subprocess.run([a if a != str(tmp_path / "config.yaml") else str(tmp_path / "alpha.yaml") for a in base
                          if a != "--quiet"] + ["-n"], capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert {r for r, _ in planned_jobs(dry.stdout + dry.stderr)} == {
        "report_main", "report_similarity", "report_comparisons", "report_findings", "all_report"}
    rep = subprocess.run(base + ["--report", str(res / "report.html")], capture_output=True, text=True, timeout=600)
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (res / "report.html").read_text(errors="replace")
    for name in ("E1 main table", "E2 demo similarity", "E3 stability", "Findings", "main.csv", "similarity.png"):
        assert name in html, name


def test_main_table_says_how_many_references_the_decoding_budget_cannot_reach(tmp_path):
    from iclpt.reporting.aggregate import budget_notes

    f = _metrics_file(tmp_path, "mtop", "m", "pt", MAIN_LEN, "none", 0, {"exact_match": 10.0})
    doc = json.loads(f.read_text())
    doc["decoding_budget"] = {"max_new_tokens": 48, "n_refs": 160, "n_unreachable_refs": 22, "ref_tokens_p99": 71}
    f.write_text(json.dumps(doc))
    g = _metrics_file(tmp_path, "dart", "m", "pt", MAIN_LEN, "none", 0, {"bleu": 10.0})
    runs = load_runs([f, g])
    notes = budget_notes(runs)
    assert notes == ["mtop: 22 of 160 references (13.8 %) are longer than the decoding budget (max_new_tokens): no "
                     "method can produce them."]
    md = render_main_md(main_table(runs, MAIN_LEN), ["pt"], notes=notes)
    assert md.rstrip().endswith("no method can produce them.")
    write_csv(runs, tmp_path / "all_runs.csv")
    assert budget_notes(read_runs_csv(tmp_path / "all_runs.csv")) == notes  # survives the CSV round trip
