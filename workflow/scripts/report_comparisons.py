"""Thin adapter: every comparison findings.md draws, as paired bootstrap tests over test examples."""

from pathlib import Path

from iclpt.io import logged
from iclpt.reporting import comparisons_table, load_per_example, load_scores, write_csv
from iclpt.reporting.stats import Bootstrap

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_comparisons") as log:
    boot = Bootstrap(**dict(sm.params.bootstrap))
    per_example = load_per_example([Path(p).parent for p in sm.input.bucket_scores])
    table = comparisons_table(load_scores(list(sm.input.scores)), per_example, int(sm.params.main_len), boot,
                              int(sm.params.n_buckets), int(sm.params.min_per_bucket))
    write_csv(table, sm.output.csv)
    log.info("%d comparisons, %d within noise (alpha %s)", len(table), int(table["within_noise"].sum()), boot.alpha)
