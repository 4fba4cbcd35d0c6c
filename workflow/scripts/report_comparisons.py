"""Thin adapter: every comparison findings.md draws (seeds and test examples random) into tables/comparisons.csv."""

from pathlib import Path

from iclpt.io import logged
from iclpt.reporting import load_per_example, load_scores, write_csv
from iclpt.reporting.comparisons import comparisons_table, read_duplicates
from iclpt.reporting.stats import Bootstrap

sm = snakemake  # noqa: F821
with logged(sm.log[0] if sm.log else None, "report_comparisons") as log:
    boot = Bootstrap(**dict(sm.params.bootstrap))
    per_example = load_per_example([Path(p).parent for p in sm.input.bucket_scores])
    table = comparisons_table(load_scores(list(sm.input.scores)), per_example, int(sm.params.main_len), boot,
                              read_duplicates(list(sm.input.duplicates)))
    write_csv(table, sm.output.csv)
    log.info("%d comparisons, %d within noise (alpha %s)", len(table), int(table["within_noise"].sum()), boot.alpha)
