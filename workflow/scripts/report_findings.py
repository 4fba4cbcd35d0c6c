"""Thin adapter: findings.md from the experiment tables and the paired tests (tables/comparisons.csv)."""

import pandas as pd

from iclpt.io import logged, write_text_atomic
from iclpt.reporting import finding1, finding2, finding3, primary_metrics, read_runs_csv, render_findings

sm = snakemake  # noqa: F821


def _csv(name):
    return pd.read_csv(sm.input[name]) if name in sm.input.keys() else None


with logged(sm.log[0] if sm.log else None, "report_findings") as log:
    exp = dict(sm.params.experiments)
    boot = dict(sm.params.bootstrap)
    thr, mc, alpha = float(sm.params.threshold), int(sm.params.min_cells), float(boot["alpha"])
    primary = primary_metrics(read_runs_csv(sm.input.runs))
    comparisons = _csv("comparisons")
    sim = _csv("similarity")
    if sim is not None:
        sim = sim.dropna(subset=["task"])
    f1 = finding1(comparisons, primary, mc, thr, alpha, similarity_run=bool(exp["similarity_control"]),
                  similarity=sim)
    f2 = finding2(_csv("stability"), primary, mc, thr, stability_run=bool(exp["stability"]))
    f3 = finding3(comparisons, primary, mc, thr, alpha, transfer_run=bool(exp["transfer"]), transfer=_csv("transfer"))
    write_text_atomic(sm.output.md, render_findings(str(sm.params.run), f1, f2, f3, mc, thr, alpha,
                                                    int(boot["n_resamples"])))
    log.info("findings: %s / %s / %s", f1["status"], f2["status"], f3["status"])
