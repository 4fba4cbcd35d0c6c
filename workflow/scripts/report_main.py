"""Thin adapter: E1 main table (CSV, Markdown, LaTeX)."""

from iclpt.io import logged, write_text_atomic
from iclpt.reporting import main_table, read_runs_csv, render_main_md, render_main_tex, write_csv

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_main") as log:
    runs = read_runs_csv(sm.input.runs)
    methods = list(sm.params.methods)
    main = main_table(runs, int(sm.params.main_len), methods)
    write_csv(main, sm.output.csv)
    write_text_atomic(sm.output.md, render_main_md(main, methods))
    write_text_atomic(sm.output.tex, render_main_tex(main, methods))
    log.info("main table: %d rows", len(main))
