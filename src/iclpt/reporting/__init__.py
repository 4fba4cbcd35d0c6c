"""Aggregation over seeds, the four experiments' tables (with bootstrap intervals), figures and the findings.

No Snakemake imports: workflow/scripts/report_*.py read snakemake.input/params and call these functions.
"""

from iclpt.reporting.aggregate import (
    PRIMARY_PREFERENCE,
    bucket_cells,
    gain_by_bucket,
    load_per_example,
    load_runs,
    main_table,
    primary_metrics,
    read_metrics,
    read_runs_csv,
    retrieval_summary_table,
    similarity_table,
    stability_table,
    summarize,
    transfer_table,
)
from iclpt.reporting.comparisons import COMPARISON_COLS, comparisons_table
from iclpt.reporting.figures import (
    fig_similarity,
    fig_stability_length,
    fig_stability_seeds,
    fig_transfer,
    save_figure,
)
from iclpt.reporting.findings import finding1, finding2, finding3, render_findings
from iclpt.reporting.tables import render_main_md, render_main_tex, write_csv
from iclpt.reporting.uncertainty import (
    RunScores,
    cell_interval,
    compare,
    load_scores,
    with_bucket_ci,
    with_main_ci,
    with_similarity_ci,
    with_transfer_ci,
)

__all__ = [
    "COMPARISON_COLS",
    "PRIMARY_PREFERENCE",
    "RunScores",
    "bucket_cells",
    "cell_interval",
    "compare",
    "comparisons_table",
    "fig_similarity",
    "fig_stability_length",
    "fig_stability_seeds",
    "fig_transfer",
    "finding1",
    "finding2",
    "finding3",
    "gain_by_bucket",
    "load_per_example",
    "load_scores",
    "load_runs",
    "main_table",
    "primary_metrics",
    "read_metrics",
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
    "with_bucket_ci",
    "with_main_ci",
    "with_similarity_ci",
    "with_transfer_ci",
    "write_csv",
]
