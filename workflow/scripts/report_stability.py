"""Thin adapter: E3 spread over seeds and prompt lengths (table + two figures)."""

from iclpt.io import logged
from iclpt.reporting import (
    fig_stability_length,
    fig_stability_seeds,
    primary_metrics,
    read_runs_csv,
    save_figure,
    stability_table,
    write_csv,
)

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_stability") as log:
    main_len = int(sm.params.main_len)
    runs = read_runs_csv(sm.input.runs)
    primary = primary_metrics(runs)
    stab = stability_table(runs, main_len)
    write_csv(stab, sm.output.csv)
    save_figure(fig_stability_seeds(runs, main_len, primary), [sm.output.seeds_png, sm.output.seeds_pdf])
    save_figure(fig_stability_length(stab, primary), [sm.output.length_png, sm.output.length_pdf])
    log.info("stability rows %d", len(stab))
