"""Thin adapter: E1 main table (CSV, Markdown, LaTeX)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report_common import setup_log  # noqa: E402

from iclpt.io import write_text_atomic  # noqa: E402
from iclpt.reporting import main_table, read_runs_csv, render_main_md, render_main_tex, write_csv  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_log(sm, "report_main")
try:
    runs = read_runs_csv(sm.input.runs)
    methods = list(sm.params.methods)
    main = main_table(runs, int(sm.params.main_len), methods)
    write_csv(main, sm.output.csv)
    write_text_atomic(sm.output.md, render_main_md(main, methods))
    write_text_atomic(sm.output.tex, render_main_tex(main, methods))
    log.info("main table: %d rows", len(main))
except Exception:
    log.exception("report_main failed")
    raise
