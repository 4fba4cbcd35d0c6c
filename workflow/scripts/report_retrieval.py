"""Thin adapter: retrieval summary.json files -> tables/retrieval.csv."""

from iclpt.io import logged
from iclpt.reporting import retrieval_summary_table, write_csv

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_retrieval") as log:
    table = retrieval_summary_table(list(sm.input.summaries))
    write_csv(table, sm.output.csv)
    log.info("%d summaries", len(table))
