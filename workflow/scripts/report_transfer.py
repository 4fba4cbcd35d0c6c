"""Thin adapter: E4 prompt transfer (table with bootstrap intervals and paired tests + heatmap)."""

from iclpt.io import logged
from iclpt.reporting import (
    fig_transfer,
    load_scores,
    primary_metrics,
    read_runs_csv,
    save_figure,
    transfer_table,
    with_transfer_ci,
    write_csv,
)
from iclpt.reporting.stats import Bootstrap

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_transfer") as log:
    boot = Bootstrap(**dict(sm.params.bootstrap))
    main_len = int(sm.params.main_len)
    runs = read_runs_csv(sm.input.runs)
    table = with_transfer_ci(transfer_table(runs, main_len), load_scores(list(sm.input.scores)), main_len, boot)
    write_csv(table, sm.output.csv)
    save_figure(fig_transfer(table, primary_metrics(runs)), [sm.output.png, sm.output.pdf])
    log.info("transfer rows %d", len(table))
