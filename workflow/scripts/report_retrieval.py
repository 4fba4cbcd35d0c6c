"""Thin adapter: retrieval summary.json files -> tables/retrieval.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report_common import setup_log  # noqa: E402

from iclpt.reporting import retrieval_summary_table, write_csv  # noqa: E402

sm = snakemake  # noqa: F821
log = setup_log(sm, "report_retrieval")
try:
    table = retrieval_summary_table(list(sm.input.summaries))
    write_csv(table, sm.output.csv)
    log.info("%d summaries", len(table))
except Exception:
    log.exception("report_retrieval failed")
    raise
