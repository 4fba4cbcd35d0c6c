"""Thin adapter: E4 prompt transfer (table + heatmap)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report_common import setup_log  # noqa: E402

from iclpt.reporting import fig_transfer, primary_metrics, read_runs_csv, save_figure, transfer_table, write_csv  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_log(sm, "report_transfer")
try:
    runs = read_runs_csv(sm.input.runs)
    table = transfer_table(runs, int(sm.params.main_len))
    write_csv(table, sm.output.csv)
    save_figure(fig_transfer(table, primary_metrics(runs)), [sm.output.png, sm.output.pdf])
    log.info("transfer rows %d", len(table))
except Exception:
    log.exception("report_transfer failed")
    raise
