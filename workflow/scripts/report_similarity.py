"""Thin adapter: E2 retrieved vs random demos + IPT - PT gain by similarity bucket (tables with bootstrap
intervals + figure)."""

from pathlib import Path

import pandas as pd

from iclpt.io import logged
from iclpt.reporting import (
    fig_similarity,
    gain_by_bucket,
    load_per_example,
    load_scores,
    primary_metrics,
    read_runs_csv,
    save_figure,
    similarity_table,
    with_bucket_ci,
    with_similarity_ci,
    write_csv,
)
from iclpt.reporting.stats import Bootstrap

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_similarity") as log:
    boot = Bootstrap(**dict(sm.params.bootstrap))
    main_len = int(sm.params.main_len)
    n_buckets, min_per_bucket = int(sm.params.n_buckets), int(sm.params.min_per_bucket)
    runs = read_runs_csv(sm.input.runs)
    primary = primary_metrics(runs)
    sim = with_similarity_ci(similarity_table(runs, main_len), load_scores(list(sm.input.ci_scores)), main_len, boot)
    note = ""
    if not sm.params.control_run:
        note = "random-demo control not run (experiments.similarity false or 'random' not in demos.sources)"
    if sim.empty:
        sim = pd.DataFrame([{c: None for c in sim.columns} | {"note": note or "no ICL/IPT runs"}],
                           columns=sim.columns)
    elif note:
        sim["note"] = note
    write_csv(sim, sm.output.csv)
    per_example = load_per_example([Path(p).parent for p in sm.input.scores])
    buckets = gain_by_bucket(per_example, main_len, n_buckets, min_per_bucket)
    buckets = with_bucket_ci(buckets, per_example, main_len, boot, n_buckets, min_per_bucket)
    write_csv(buckets, sm.output.buckets)
    fig = fig_similarity(sim.dropna(subset=["task"]), buckets, primary, note=note)
    save_figure(fig, [sm.output.png, sm.output.pdf])
    log.info("similarity rows %d, bucket rows %d", len(sim), len(buckets))
