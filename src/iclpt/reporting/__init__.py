"""Aggregation over seeds, the four experiments' tables, figures and the findings of one run.

No Snakemake imports: workflow/scripts/report_*.py read snakemake.input/params and call these functions.
"""

from iclpt.reporting.aggregate import (
    PRIMARY_PREFERENCE,
    gain_by_bucket,
    load_per_example,
    load_runs,
    main_table,
    parse_run_path,
    primary_metrics,
    read_runs_csv,
    retrieval_summary_table,
    similarity_table,
    stability_table,
    summarize,
    transfer_table,
)
from iclpt.reporting.figures import (
    fig_similarity,
    fig_stability_length,
    fig_stability_seeds,
    fig_transfer,
    save_figure,
)
from iclpt.reporting.findings import finding1, finding2, finding3, render_findings
from iclpt.reporting.tables import render_main_md, render_main_tex, write_csv

__all__ = [
    "PRIMARY_PREFERENCE",
    "fig_similarity",
    "fig_stability_length",
    "fig_stability_seeds",
    "fig_transfer",
    "finding1",
    "finding2",
    "finding3",
    "gain_by_bucket",
    "load_per_example",
    "load_runs",
    "main_table",
    "parse_run_path",
    "primary_metrics",
    "read_runs_csv",
    "render_findings",
    "render_main_md",
    "render_main_tex",
    "retrieval_summary_table",
    "save_figure",
    "similarity_table",
    "stability_table",
    "summarize",
    "transfer_table",
    "write_csv",
]
