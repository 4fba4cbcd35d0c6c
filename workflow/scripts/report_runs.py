"""Thin adapter: every metrics.json -> tables/all_runs.csv (one row per run x metric)."""

from iclpt.io import logged
from iclpt.reporting import load_runs, write_csv

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_runs") as log:
    runs = load_runs(list(sm.input.metrics))
    write_csv(runs, sm.output.runs)
    log.info("%d metric files -> %d rows", len(sm.input.metrics), len(runs))
