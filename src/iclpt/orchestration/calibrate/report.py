"""The calibrated plan as a table (``plan.py --calibrate``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _human(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 2 else f"{hours:.1f} h"


def format_calibrated(result: Mapping[str, Any], title: str) -> str:
    """Per rule: jobs, threads / slots, seconds per job, hours, what it rests on; then the totals, the sources
    of the tokens and models, the guesses and the concurrency measured."""
    la = result["load_average"]
    lines = [title,
             f"calibrated on {result['device']} ({result['precision']}), --cores {result['cores']}; "
             f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}",
             f"{'rule':<22}{'jobs':>6}{'thr':>4}{'slots':>6}{'s/job':>9}{'job-h':>9}{'wall-h':>9}  kind: basis"]
    for r in result["rules"]:
        lines.append(f"{r['rule']:<22}{r['jobs']:>6}{r['threads']:>4}{r['slots']:>6}{r['seconds_per_job']:>9.1f}"
                     f"{r['job_hours']:>9.3f}{r['wall_hours']:>9.3f}  {r['kind']}: {'; '.join(r['basis'])}")
    lines.append(f"{'DAG build':<22}{'':>25}{'':>9}{result['dag_seconds'] / 3600:>9.3f}")
    lines.append(f"{'total':<22}{sum(r['jobs'] for r in result['rules']):>6}{'':>19}"
                 f"{result['total_job_hours']:>9.3f}{result['total_wall_hours']:>9.3f}"
                 f"  = {_human(result['total_wall_hours'])} wall")
    for t, s in result["tasks"].items():
        lines.append(f"  tokens of {t}: {s['source']}; split sizes {s['counts']}")
    for n, m in result["models"].items():
        if m["source"]["path"] is None:
            lines.append(f"  model {n}: not loadable, its jobs use the config's guesses ({m['source']['error']})")
        else:
            lines.append(f"  model {n}: {m['source']['how']}; {m['train_tokens'] / 1e6:.2f}M training tokens, "
                         f"{m['predict_tokens'] / 1e6:.2f}M decoding tokens (prefill + new)")
    if result["guessed_rules"]:
        lines.append(f"GUESSES (not measured): {', '.join(result['guessed_rules'])} "
                     "(resources.<rule>.gpu_hours_per_job / gpu x runtime from the config)")
    conc = ", ".join(f"{k}: each {v:.2f}x slower" for k, v in result.get("concurrency", {}).items() if v > 1)
    lines.append("job-hours include the measured slowdown of jobs sharing the machine"
                 + (f" ({conc})" if conc else " (none measured)")
                 + "; wall = job-hours / slots (slots = cores // threads, kept full), plus the DAG build")
    return "\n".join(lines)
