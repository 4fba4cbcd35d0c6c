"""Thin adapter: every metrics.json -> tables/all_runs.csv (one row per run x metric)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report_common import setup_log  # noqa: E402

from iclpt.reporting import load_runs, write_csv  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_log(sm, "report_runs")
try:
    runs = load_runs(list(sm.input.metrics))
    write_csv(runs, sm.output.runs)
    log.info("%d metric files -> %d rows", len(sm.input.metrics), len(runs))
except Exception:
    log.exception("report_runs failed")
    raise
