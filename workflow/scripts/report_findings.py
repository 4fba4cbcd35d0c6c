"""Thin adapter: findings.md (three verdicts) from the runs, the comparisons and the training table."""

import pandas as pd

from iclpt.io import logged, write_text_atomic
from iclpt.reporting import finding1, finding2, finding3, primary_metrics, read_runs_csv, render_findings
from iclpt.reporting.findings import Settings

sm = snakemake  # noqa: F821


def _csv(name):
    return pd.read_csv(sm.input[name]) if name in sm.input.keys() else None


with logged(sm.log[0] if sm.log else None, "report_findings") as log:
    exp, boot, f = dict(sm.params.experiments), dict(sm.params.bootstrap), dict(sm.params.findings)
    s = Settings(alpha=float(boot["alpha"]), power=f["power"], margin=f["findings_margin"],
                 levelled_tail=f["levelled_tail"], levelled_tolerance=f["levelled_tolerance"])
    runs = read_runs_csv(sm.input.runs)
    primary, main_len = primary_metrics(runs), int(sm.params.main_len)
    comparisons, training = _csv("comparisons"), _csv("training")
    found = {
        1: finding1(comparisons, primary, training, main_len, s, similarity_run=bool(exp["similarity_control"])),
        2: finding2(runs, comparisons, primary, main_len, s, stability_run=bool(exp["stability"])),
        3: finding3(comparisons, primary, training, main_len, s, transfer_run=bool(exp["transfer"])),
    }
    write_text_atomic(sm.output.md, render_findings(str(sm.params.run), found, s, int(boot["n_resamples"])))
    log.info("findings: %s", " / ".join(x.status for x in found.values()))
