"""Thin adapter: tables/training.csv and figures/training.{png,pdf} from the main-setting prompt folders."""

from pathlib import Path

from iclpt.io import logged
from iclpt.reporting import save_figure, write_csv
from iclpt.reporting.figures import fig_training
from iclpt.reporting.training import training_curves, training_rows

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_training") as log:
    dirs = [Path(p).parent for p in sm.input.meta]
    table = training_rows(dirs, float(sm.params.tail), float(sm.params.tolerance))
    write_csv(table, sm.output.csv)
    save_figure(fig_training(training_curves(dirs)), [sm.output.png, sm.output.pdf])
    log.info("%d train runs, %d levelled off", len(table), int(table["levelled"].fillna(False).astype(bool).sum()))
