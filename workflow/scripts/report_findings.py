"""Thin adapter: findings.md from the experiment tables."""

import pandas as pd

from iclpt.io import logged, write_text_atomic
from iclpt.reporting import (
    finding1,
    finding2,
    finding3,
    main_table,
    primary_metrics,
    read_runs_csv,
    render_findings,
)

sm = snakemake  # noqa: F821


def _csv(name):
    return pd.read_csv(sm.input[name]) if name in sm.input.keys() else None


with logged(sm.log[0] if sm.log else None, "report_findings") as log:
    exp = dict(sm.params.experiments)
    thr, mc = float(sm.params.threshold), int(sm.params.min_cells)
    runs = read_runs_csv(sm.input.runs)
    primary = primary_metrics(runs)
    main = _csv("main")
    if main is None:  # E1 disabled: the IPT vs PT comparison still needs the main selection
        main = main_table(runs, int(sm.params.main_len))
    sim, buckets = _csv("similarity"), _csv("buckets")
    if sim is not None:
        sim = sim.dropna(subset=["task"])
    f1 = finding1(main, sim, buckets, primary, mc, thr, similarity_run=bool(exp["similarity_control"]))
    f2 = finding2(_csv("stability"), primary, mc, thr, stability_run=bool(exp["stability"]))
    f3 = finding3(_csv("transfer"), primary, mc, thr, transfer_run=bool(exp["transfer"]))
    write_text_atomic(sm.output.md, render_findings(str(sm.params.run), f1, f2, f3, mc, thr))
    log.info("findings: %s / %s / %s", f1["status"], f2["status"], f3["status"])
