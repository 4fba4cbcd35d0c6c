"""Power calculation from a run's own variances: the minimum detectable effect of a comparison at other sizes.

Each row of tables/comparisons.csv carries the variance of its contrast split into parts (``v_seed``: seeds,
``v_interaction``: seed x example, ``v_example``: examples; ``iclpt.reporting.comparisons``) at the run's size
(``n_examples`` rows, ``n_seeds_a`` / ``n_seeds_b`` seeds). At n' rows and S' seeds per method the variance is
``v_seed · S/S' + v_interaction · S n/(S' n') + v_example · n/n'`` and the MDE of the two-sided level-alpha test with
the given power is ``(z_{1−α/2} + z_power) · sqrt(variance)``. The usage to size a run: measure a pilot, then

    python -m iclpt.reporting.power results/<pilot>/tables/comparisons.csv --kind ipt_vs_pt --rows 64 128 192 \\
        --seeds 3 5 8

prints, per task, the MDE of that comparison on its primary metric at every size.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import pandas as pd

from iclpt.io import atomic_open
from iclpt.reporting.inference import mde


def scaled_variance(row: pd.Series, rows: int, seeds: int) -> float:
    """The contrast's variance at ``rows`` test rows and ``seeds`` seeds per method (module doc)."""
    n, s = float(row["n_examples"]), float(max(row["n_seeds_a"], row["n_seeds_b"]))
    return (float(row["v_seed"]) * s / seeds + float(row["v_interaction"]) * s * n / (seeds * rows)
            + float(row["v_example"]) * n / rows)


def power_table(comparisons: pd.DataFrame, kind: str, rows: Sequence[int], seeds: Sequence[int],
                alpha: float = 0.05, power: float = 0.8, subset: str = "all") -> pd.DataFrame:
    """MDE of comparison ``kind`` per task x model x metric at every (rows, seeds) pair."""
    c = comparisons[(comparisons["comparison"] == kind) & (comparisons["subset"].fillna("all") == subset)]
    if c.empty:
        raise ValueError(f"no {kind!r} rows (subset {subset!r}) in the comparisons; kinds there: "
                         f"{', '.join(sorted(set(comparisons['comparison'])))}")
    out = []
    for r in c.itertuples(index=False):
        row = pd.Series(r._asdict())
        for n in rows:
            for s in seeds:
                out.append({"task": r.task, "model": r.model, "metric": r.metric, "rows": int(n), "seeds": int(s),
                            "mde": mde(math.sqrt(scaled_variance(row, int(n), int(s))), alpha, power),
                            "measured_rows": int(r.n_examples),
                            "measured_seeds": int(max(r.n_seeds_a, r.n_seeds_b))})
    return pd.DataFrame(out)


def render(table: pd.DataFrame, kind: str, alpha: float, power: float) -> str:
    """A Markdown table: one row per task x metric x rows, one column per seed count."""
    wide = table.pivot_table(index=["task", "model", "metric", "rows"], columns="seeds", values="mde").reset_index()
    seeds = [c for c in wide.columns if isinstance(c, int | float) and not isinstance(c, bool)]
    head = ["task", "model", "metric", "test rows"] + [f"{int(s)} seeds" for s in seeds]
    lines = [f"Minimum detectable {kind} difference (two-sided alpha {alpha:g}, power {power:g}), from the measured "
             "variance parts of each cell:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in wide.itertuples(index=False):
        vals = list(r)
        lines.append("| " + " | ".join([str(v) for v in vals[:4]] + [f"{v:.1f}" for v in vals[4:]]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("comparisons", help="a run's tables/comparisons.csv")
    ap.add_argument("--kind", default="ipt_vs_pt")
    ap.add_argument("--rows", type=int, nargs="+", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--power", type=float, default=0.8)
    ap.add_argument("--out", help="also write the table here (Markdown, atomically), e.g. <run>/tables/power.md")
    a = ap.parse_args(argv)
    cmp_ = pd.read_csv(a.comparisons)
    text = render(power_table(cmp_, a.kind, a.rows, a.seeds, a.alpha, a.power), a.kind, a.alpha, a.power)
    print(text)
    if a.out:
        with atomic_open(a.out) as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
