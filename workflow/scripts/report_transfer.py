"""Thin adapter: E4 prompt transfer (table + heatmap)."""

from iclpt.io import logged
from iclpt.reporting import fig_transfer, primary_metrics, read_runs_csv, save_figure, transfer_table, write_csv

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_transfer") as log:
    runs = read_runs_csv(sm.input.runs)
    table = transfer_table(runs, int(sm.params.main_len))
    write_csv(table, sm.output.csv)
    save_figure(fig_transfer(table, primary_metrics(runs)), [sm.output.png, sm.output.pdf])
    log.info("transfer rows %d", len(table))
