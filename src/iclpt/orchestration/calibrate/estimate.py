"""Hours per rule from what was measured: per job start-up + work at the measured rates, per rule jobs x
seconds x slowdown / slots (:class:`RuleEstimate`); where nothing could be measured, the config's guesses."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from iclpt.orchestration.calibrate.models import ModelSource
from iclpt.orchestration.calibrate.rules import RuleFacts
from iclpt.orchestration.calibrate.throughput import DecodeRate, TrainRate

#: hours per job of a rule, and where that guess comes from (the config's resources)
Guess = Callable[[str], tuple[float, str]]


@dataclass
class RuleEstimate:
    """One rule's estimate: measured and guessed job-seconds, and what each figure rests on."""

    rule: str
    jobs: int
    threads: int
    slots: int
    measured_jobs: int = 0
    measured_seconds: float = 0.0
    guessed_jobs: int = 0
    guessed_seconds: float = 0.0
    basis: list[str] = field(default_factory=list)

    @property
    def job_hours(self) -> float:
        return (self.measured_seconds + self.guessed_seconds) / 3600

    @property
    def wall_hours(self) -> float:
        return self.job_hours / self.slots

    @property
    def seconds_per_job(self) -> float:
        return 3600 * self.job_hours / self.jobs if self.jobs else 0.0

    @property
    def kind(self) -> str:
        if self.jobs and not self.measured_jobs and not self.guessed_jobs:
            return "none"
        if self.guessed_jobs and self.measured_jobs:
            return "measured+guess"
        return "guess" if self.guessed_jobs else "measured"

    def measured(self, jobs: float, seconds: float, basis: str) -> None:
        self.measured_jobs += round(jobs)
        self.measured_seconds += seconds
        self.basis.append(basis)

    def guessed(self, jobs: float, seconds: float, basis: str) -> None:
        self.guessed_jobs += round(jobs)
        self.guessed_seconds += seconds
        self.basis.append(basis)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(job_hours=self.job_hours, wall_hours=self.wall_hours, seconds_per_job=self.seconds_per_job,
                 kind=self.kind)
        return d


@dataclass
class ModelCalibration:
    """What was measured for one model, and the seconds of each of its train / predict runs."""

    source: ModelSource
    startup_s: float | None = None
    train: dict[str, TrainRate] = field(default_factory=dict)
    decode: dict[str, DecodeRate] = field(default_factory=dict)
    train_seconds: dict[Any, float] = field(default_factory=dict)
    predict_seconds: dict[Any, float] = field(default_factory=dict)
    train_tokens: float = 0.0
    predict_tokens: float = 0.0


def n_dev_passes(cfg: Any) -> int:
    """Dev-loss passes of a training job: the initial prompt, every ``eval_every`` steps and the last step (none
    when it trains no step: the initialised prompt is the output)."""
    if int(cfg.max_steps) == 0:
        return 0
    every = max(1, int(cfg.eval_every))
    return 1 + cfg.max_steps // every + (1 if cfg.max_steps % every else 0)


def train_run_seconds(startup: float, cfg: Any, step_tokens: float, dev_tokens: float, rate: TrainRate) -> float:
    """Seconds of one training job: start-up, its steps at the padded rate, its dev passes at the dev rate."""
    return startup + cfg.max_steps * step_tokens / rate.padded_tokens_per_s \
        + n_dev_passes(cfg) * dev_tokens / rate.eval_tokens_per_s


def layout_name(n_demos: int, has_prompt: bool) -> str:
    """The decoding layouts: ``query`` (zero-shot), ``demos`` (ICL), ``prompt`` (PT), ``prompt+demos``."""
    if has_prompt:
        return "prompt+demos" if n_demos else "prompt"
    return "demos" if n_demos else "query"


def model_jobs(est: RuleEstimate, runs: Sequence[Any], models: Mapping[str, ModelCalibration], train: bool,
               guess: tuple[float, str]) -> None:
    """A train or decode rule: each model's runs at its measured seconds, or the guess where it is unloadable.
    ``est.jobs`` over ``len(runs)`` is the share still pending (1 unless ``--pending`` dropped some)."""
    share = est.jobs / len(runs) if runs else 0.0
    per_guess, where = guess
    for name, cal in models.items():
        mine = [r for r in runs if r.model == name]
        if not mine:
            continue
        if cal.source.path is None:
            est.guessed(len(mine) * share, len(mine) * share * per_guess * 3600,
                        f"{name}: model not loadable; " + (f"guess {per_guess:g} h/job ({where})" if per_guess
                                                            else "no guess in the config (counted 0 h)"))
            continue
        secs = cal.train_seconds if train else cal.predict_seconds
        if train:
            what = "padded tok/s " + ", ".join(f"{k} {v.padded_tokens_per_s:.0f}" for k, v in cal.train.items())
        else:
            what = "s/batch " + ", ".join(f"{k} {v.seconds_per_batch:.1f}s" for k, v in cal.decode.items())
        est.measured(len(mine) * share, share * sum(secs[r] for r in mine),
                     f"{name}: {what}; start-up {cal.startup_s:.1f}s")


def made_models(est: RuleEstimate, rule: RuleFacts, models: Mapping[str, ModelCalibration],
                guess: tuple[float, str]) -> None:
    """A rule that makes model folders: the seconds calibration's own build / fetch of each took."""
    names = rule.makes(models)
    share = est.jobs / len(names) if names else 0.0
    per_guess, where = guess
    for n in names:
        secs = models[n].source.fetch_seconds
        if secs is None:
            est.guessed(share, share * per_guess * 3600,
                        f"{n}: not timed here; " + (f"guess {per_guess:g} h ({where})" if per_guess else "no estimate"))
        else:
            est.measured(share, share * secs, f"{n}: {secs:.0f}s, measured when calibration fetched / built it")


def encoder_jobs(est: RuleEstimate, startup: float, rate: float, per_job: float) -> None:
    """An embed rule: start-up with the encoder load, then ``per_job`` sentences at ``rate`` sentences/s."""
    est.measured(est.jobs, est.jobs * (startup + per_job / rate),
                 f"start-up + encoder load {startup:.1f}s, {rate:.0f} sentences/s, {per_job:.0f} per job")


def network_jobs(est: RuleEstimate, guess: tuple[float, str]) -> None:
    """A download rule: not measured (network); the config's guess, if any."""
    per, where = guess
    est.guessed(est.jobs, est.jobs * per * 3600,
                f"not measured (network); {where}" if per else "not measured (network)")


def startup_jobs(est: RuleEstimate, startup: float, note: str = "") -> None:
    """A rule whose jobs cost their start-up (python, snakemake.script, imports)."""
    est.measured(est.jobs, est.jobs * startup,
                 f"start-up {startup:.1f}s/job" + (f"; {note}" if note else " (python, snakemake.script, imports)"))


def slowed(est: RuleEstimate, factor: float) -> None:
    """The measured seconds times the slowdown of ``est.slots`` such jobs at once."""
    if factor > 1.0 and est.measured_seconds:
        est.measured_seconds *= factor
        est.basis.append(f"x {factor:.2f}: {est.slots} such jobs at once (measured)")
