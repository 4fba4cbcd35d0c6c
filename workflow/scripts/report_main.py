"""Thin adapter: E1 main table (CSV, Markdown, LaTeX) with bootstrap intervals over test examples."""

from iclpt.io import logged, write_text_atomic
from iclpt.reporting import (
    load_scores,
    main_table,
    read_runs_csv,
    render_main_md,
    render_main_tex,
    with_main_ci,
    write_csv,
)
from iclpt.reporting.aggregate import budget_notes
from iclpt.reporting.stats import Bootstrap

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_main") as log:
    boot = Bootstrap(**dict(sm.params.bootstrap))
    runs = read_runs_csv(sm.input.runs)
    methods = list(sm.params.methods)
    main_len = int(sm.params.main_len)
    main = with_main_ci(main_table(runs, main_len, methods), load_scores(list(sm.input.scores)), main_len, boot)
    write_csv(main, sm.output.csv)
    write_text_atomic(sm.output.md, render_main_md(main, methods, alpha=boot.alpha, notes=budget_notes(runs)))
    write_text_atomic(sm.output.tex, render_main_tex(main, methods, alpha=boot.alpha))
    log.info("main table: %d rows (%d bootstrap resamples)", len(main), boot.n_resamples)
