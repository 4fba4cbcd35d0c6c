"""How far each soft prompt trained: its dev-loss curve summarised, and whether it levelled off (tables/training.csv).

Findings 1 and 3 are about prompts *trained* in the paper's regime. A prompt whose dev loss is still falling at the
end of training, or that was never evaluated often enough to tell, is not in that regime, and the findings say so
(``iclpt.reporting.findings``' regime gate). The curve is the dev loss of the initial prompt (step 0) and of every
evaluated step (train_log.jsonl's ``dev_loss``). With I = initial − best (the whole improvement) and L = (best up to
the last ``tail`` of the steps) − best (the improvement made in that last part), the run has *levelled off* when
L ≤ ``tolerance`` · I, i.e. the last third of training (default) bought at most 10 % (default) of what training
bought. Fewer than ``min_evals`` evaluations after step 0, or no improvement at all, give None (cannot tell).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from iclpt.io import PathLike, read_json, read_jsonl

TRAINING_COLS = ["task", "model", "method", "length", "demos", "seed", "steps", "n_evals", "initial_dev_loss",
                 "best_dev_loss", "best_step", "final_dev_loss", "late_share", "levelled"]


def dev_curve(log_rows: Sequence[dict], initial: float) -> list[tuple[int, float]]:
    """[(step, dev loss)] with the initial prompt's at step 0 (when known), in step order."""
    curve = [(0, float(initial))] if initial is not None and math.isfinite(float(initial)) else []
    curve += [(int(r["step"]), float(r["dev_loss"])) for r in log_rows
              if r.get("dev_loss") is not None and math.isfinite(float(r["dev_loss"]))]
    return sorted(curve)


def late_share(curve: Sequence[tuple[int, float]], steps: int, tail: float = 1 / 3,
               min_evals: int = 2) -> float | None:
    """The share of the whole dev-loss improvement made in the last ``tail`` of the steps (module doc)."""
    after = [d for s, d in curve if s > 0]
    if len(after) < min_evals or not curve or curve[0][0] != 0:
        return None
    best = min(d for _, d in curve)
    whole = curve[0][1] - best
    if whole <= 0:
        return None
    cut = (1 - tail) * steps
    early = min(d for s, d in curve if s <= cut)
    return (early - best) / whole


CURVE_COLS = ["task", "model", "method", "length", "demos", "seed", "step", "dev_loss"]


def training_curves(prompt_dirs: Iterable[PathLike]) -> pd.DataFrame:
    """The dev curve of every train run (long format): its identity, step and dev loss, step 0 the initial prompt."""
    rows = []
    for d in map(Path, prompt_dirs):
        meta = read_json(d / "meta.json")
        ident = {"task": meta["task"], "model": meta["model"], "method": meta["method"],
                 "length": int(meta["prompt_length"]), "demos": meta["demo_source"], "seed": int(meta["seed"])}
        for step, dev in dev_curve(read_jsonl(d / "train_log.jsonl"), meta.get("initial_dev_loss")):
            rows.append({**ident, "step": step, "dev_loss": dev})
    return pd.DataFrame(rows, columns=CURVE_COLS)


def training_rows(prompt_dirs: Iterable[PathLike], tail: float = 1 / 3, tolerance: float = 0.1) -> pd.DataFrame:
    """One row per train run (its folder's meta.json and train_log.jsonl): the summary of its dev curve."""
    rows = []
    for d in map(Path, prompt_dirs):
        meta = read_json(d / "meta.json")
        curve = dev_curve(read_jsonl(d / "train_log.jsonl"), meta.get("initial_dev_loss"))
        steps = int(meta.get("steps") or 0)
        share = late_share(curve, steps, tail)
        rows.append({"task": meta["task"], "model": meta["model"], "method": meta["method"],
                     "length": int(meta["prompt_length"]), "demos": meta["demo_source"], "seed": int(meta["seed"]),
                     "steps": steps, "n_evals": sum(1 for s, _ in curve if s > 0),
                     "initial_dev_loss": meta.get("initial_dev_loss"), "best_dev_loss": meta.get("best_dev_loss"),
                     "best_step": meta.get("best_step"), "final_dev_loss": meta.get("final_dev_loss"),
                     "late_share": share, "levelled": None if share is None else bool(share <= tolerance)})
    df = pd.DataFrame(rows, columns=TRAINING_COLS)
    return df.sort_values(["task", "model", "method", "length", "demos", "seed"], kind="stable").reset_index(drop=True)
