"""The calibration: sample each task's workload, get each model, measure it, and estimate every rule."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from iclpt.orchestration.calibrate import estimate as est_
from iclpt.orchestration.calibrate.estimate import Guess, ModelCalibration, RuleEstimate
from iclpt.orchestration.calibrate.models import model_source
from iclpt.orchestration.calibrate.rules import (
    DECODE,
    ENCODER,
    MAKES_MODEL,
    NETWORK,
    NO_WORK,
    STARTUP,
    TRAIN,
    RuleFacts,
    job_kind,
    rule_threads,
    rules_of_kind,
    slots,
)
from iclpt.orchestration.calibrate.startup import concurrency_factor, embed_probe, model_startup, script_startup
from iclpt.orchestration.calibrate.throughput import measure_decode, measure_train
from iclpt.orchestration.calibrate.workload import TaskSample, Workload, eval_tokens, step_tokens, task_sample
from iclpt.orchestration.methods import get_method


@dataclass
class Setting:
    """What every measurement of one calibration shares."""

    config: Mapping[str, Any]
    rules: Mapping[str, RuleFacts]
    cores: int
    device: Any
    precision: str
    steps: int
    batches: int
    say: Callable[[str], None]

    def threads(self, kind: str) -> int:
        """Threads of the jobs of ``kind`` (the first such rule's, scaled to the cores)."""
        found = rules_of_kind(self.rules, kind)
        return rule_threads(found[0], self.cores) if found else 1

    def modules(self, *kinds: str) -> list[str]:
        """The iclpt modules the scripts of ``kinds`` import (what a model job's start-up imports)."""
        from iclpt.orchestration.codeversion import script_modules

        return sorted({m for k in kinds for r in rules_of_kind(self.rules, k) for m in script_modules(str(r.script))})


def _demo_layout(config: Mapping[str, Any], run: Any) -> tuple[int, str]:
    return get_method(run.method).n_demos(run.demos, int(config["demos"]["n_demos"])), run.demos


def calibrate_model(s: Setting, src: Any, train_runs: Sequence[Any], predict_runs: Sequence[Any],
                    samples: Mapping[str, TaskSample]) -> ModelCalibration:
    """Load the model once; measure training and decoding per task and layout; the seconds of every run."""
    import torch

    from iclpt.models.loading import load_model, max_positions

    assert src.path is not None
    cal = ModelCalibration(src)
    cal.startup_s = model_startup(s.modules(TRAIN, DECODE), src.path, str(s.config["device"]),
                                  str(s.config["precision"]), s.threads(TRAIN))
    s.say(f"  {src.name}: job start-up (python, imports, model load) {cal.startup_s:.1f}s")
    model, tok = load_model(src.path, device=s.device, precision=s.precision)
    old_threads = torch.get_num_threads()
    try:
        for task in samples:
            work = Workload(s.config, samples[task], tok, max_positions(model))
            torch.set_num_threads(s.threads(TRAIN))
            _train_task(s, cal, model, tok, work, task, [r for r in train_runs if r.task == task])
            torch.set_num_threads(s.threads(DECODE))
            _decode_task(s, cal, model, tok, work, task, [r for r in predict_runs if r.task == task])
    finally:
        torch.set_num_threads(old_threads)
        del model
    return cal


def _train_task(s: Setting, cal: ModelCalibration, model: Any, tok: Any, work: Workload, task: str,
                runs: Sequence[Any]) -> None:
    """Training rates of the task's layouts (at the main prompt length) and the seconds of each training run."""
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.engine.training import TrainConfig, TrainRun

    cfg = TrainConfig.from_dict(s.config["train"])
    main_len = int(s.config["prompt"]["length"])
    layouts = [_demo_layout(s.config, r) for r in runs]
    for nd in sorted({n for n, _ in layouts}):
        kinds = {d for n, d in layouts if n == nd}
        demos = "retrieved" if "retrieved" in kinds else sorted(kinds)[0]
        run = TrainRun(model, work.rows("train", nd, demos, main_len), work.rows("dev", nd, demos, main_len), cfg,
                       tok.pad_token_id, s.device, s.precision)
        rate = measure_train(run, init_prompt(model, main_len, "vocab", seed=0), s.steps, main_len)
        cal.train[f"{task}/{'demos' if nd else 'no demos'}"] = rate
        s.say(f"  {cal.source.name} {task} train ({'demos' if nd else 'no demos'}): "
              f"{rate.padded_tokens_per_s:.0f} padded tok/s, dev {rate.eval_tokens_per_s:.0f} tok/s")
    for r, (nd, demos) in zip(runs, layouts, strict=True):
        rate = cal.train[f"{task}/{'demos' if nd else 'no demos'}"]
        steps = get_method(r.method).train_steps  # a method's own step count (the untrained control: 0)
        rcfg = cfg if steps is None else dataclasses.replace(cfg, max_steps=steps)
        per_step = rcfg.grad_accum * step_tokens(work.lengths("train", nd, demos, r.length), rcfg.batch_size,
                                                 r.length, rcfg.bucket_by_length)
        dev_tok = eval_tokens(work.lengths("dev", nd, demos, r.length), rcfg.batch_size, r.length)
        cal.train_seconds[r] = est_.train_run_seconds(cal.startup_s or 0.0, rcfg, per_step, dev_tok, rate)
        cal.train_tokens += rcfg.max_steps * per_step + est_.n_dev_passes(rcfg) * dev_tok


def _decode_task(s: Setting, cal: ModelCalibration, model: Any, tok: Any, work: Workload, task: str,
                 runs: Sequence[Any]) -> None:
    """Decoding rates of the task's layouts (at the main prompt length) and the seconds of each decoding run."""
    from iclpt.engine.generation import Decoder
    from iclpt.engine.soft_prompt import init_prompt

    bs = int(s.config["predict"]["batch_size"])
    main_len = int(s.config["prompt"]["length"])
    for r in runs:
        nd, demos = _demo_layout(s.config, r)
        name = est_.layout_name(nd, r.length > 0)
        key = f"{task}/{name}"
        if key not in cal.decode:
            n_virtual = main_len if r.length > 0 else 0
            prompt = init_prompt(model, n_virtual, "vocab", seed=0) if n_virtual else None
            decoder = Decoder(model, tok, prompt, s.device, s.precision)
            rate = measure_decode(decoder, [e.ids for e in work.rows("test", nd, demos, n_virtual)], bs,
                                  work.max_new, s.batches)
            cal.decode[key] = rate
            s.say(f"  {cal.source.name} {task} decode ({name}): {rate.seconds_per_batch:.1f}s per batch of {bs}, "
                  f"{rate.new_tokens_per_s:.0f} new tok/s")
        rate = cal.decode[key]
        cal.predict_seconds[r] = (cal.startup_s or 0.0) + math.ceil(work.n_test / bs) * rate.seconds_per_batch
        prefill = sum(work.lengths("test", nd, demos, r.length)) / max(1, len(work.splits["test"]))
        cal.predict_tokens += work.n_test * (prefill + r.length + rate.new_tokens_per_row)


def calibrate(config: Mapping[str, Any], counts: Mapping[str, int], rules: Mapping[str, RuleFacts], workdir: Path,
              cores: int, guess: Guess, *, gpus: int | None = None, dag_seconds: float = 0.0, steps: int = 2,
              batches: int = 1, cache_dir: str | Path | None = None, probe_seconds: float = 3.0,
              say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Estimate every rule of ``counts`` (jobs per rule, from the dry run) on this device (package docstring).

    ``config`` is the validated config (schema defaults filled); ``rules`` the workflow's facts of every rule
    (:class:`RuleFacts`); ``guess(rule)`` the hand-set hours per job and where they come from (used where a
    model cannot be loaded or a rule cannot be measured).
    """
    from iclpt.models.loading import resolve_device, resolve_precision
    from iclpt.orchestration import runs as runs_mod

    device = resolve_device(config["device"])
    s = Setting(config, rules, cores, device, resolve_precision(config["precision"], device), steps, batches,
                say or (lambda m: None))
    s.say(f"calibrating on {device} ({s.precision}), {cores} cores")
    samples = {t: task_sample(config, t, Path(workdir)) for t in config["tasks"]}
    for t, smp in samples.items():
        s.say(f"  {t}: {smp.source}; jobs read {smp.counts}")
    plan = runs_mod.plan(config)
    models = _calibrate_models(s, plan, samples, Path(workdir), cache_dir)
    measured = _Measured(s, plan, models, samples, guess, {})
    estimates, factors = _estimate_rules(s, counts, measured, gpus, probe_seconds)
    total_job = sum(r.job_hours for r in estimates)
    return {
        "device": str(device), "precision": s.precision, "cores": int(cores), "gpus": gpus,
        "load_average": list(os.getloadavg()), "dag_seconds": dag_seconds,
        "concurrency": {f"{k[0]} jobs x {k[1]} threads": v for k, v in factors.items()},
        "tasks": {t: {"source": smp.source, "counts": smp.counts} for t, smp in samples.items()},
        "models": {n: _model_summary(m) for n, m in models.items()},
        "rules": [r.as_dict() for r in estimates],
        "total_job_hours": total_job, "total_wall_hours": sum(r.wall_hours for r in estimates) + dag_seconds / 3600,
        "guessed_rules": [r.rule for r in estimates if r.guessed_jobs],
    }


def _calibrate_models(s: Setting, plan: Any, samples: Mapping[str, TaskSample], workdir: Path,
                      cache_dir: str | Path | None) -> dict[str, ModelCalibration]:
    models: dict[str, ModelCalibration] = {}
    with tempfile.TemporaryDirectory(prefix="iclpt-calibrate-") as tmp:
        def texts() -> list[str]:
            return [x for smp in samples.values() for r in smp.records["train"] for x in (r["input"], r["target"])]

        for name in s.config["models"]:
            src = model_source(s.config, name, workdir, texts, Path(tmp), cache_dir)
            s.say(f"  model {name}: {src.how}" + (f" ({src.error})" if src.error else f" at {src.path}"))
            if src.path is None:
                models[name] = ModelCalibration(src)
                continue
            models[name] = calibrate_model(s, src, [r for r in plan.train if r.model == name],
                                           [r for r in plan.predict if r.model == name], samples)
    return models


@dataclass
class _Measured:
    """What the rule estimates draw on: the setting, the runs, each model's and task's measurements, the
    config's guesses, and the start-ups measured so far."""

    s: Setting
    plan: Any
    models: Mapping[str, ModelCalibration]
    samples: Mapping[str, TaskSample]
    guess: Guess
    startups: dict[str, float]

    def train(self, est: RuleEstimate, rule: RuleFacts) -> None:
        est_.model_jobs(est, self.plan.train, self.models, True, self.guess(rule.name))

    def decode(self, est: RuleEstimate, rule: RuleFacts) -> None:
        est_.model_jobs(est, self.plan.predict, self.models, False, self.guess(rule.name))

    def makes_model(self, est: RuleEstimate, rule: RuleFacts) -> None:
        est_.made_models(est, rule, self.models, self.guess(rule.name))

    def no_work(self, est: RuleEstimate, rule: RuleFacts) -> None:
        est.measured(est.jobs, 0.0, "no work")

    def network(self, est: RuleEstimate, rule: RuleFacts) -> None:
        est_.network_jobs(est, self.guess(rule.name))

    def startup(self, est: RuleEstimate, rule: RuleFacts, note: str = "") -> None:
        """Measured start-up of the rule's script job (cached per rule)."""
        from iclpt.orchestration.codeversion import script_modules

        if rule.name not in self.startups:
            self.startups[rule.name] = script_startup(script_modules(str(rule.script)))
        est_.startup_jobs(est, self.startups[rule.name], note)

    def encoder(self, est: RuleEstimate, rule: RuleFacts) -> None:
        texts = [r["input"] for smp in self.samples.values() for r in smp.records["train"][:128]]
        try:
            startup, rate = embed_probe(str(self.s.config["retrieval"]["encoder_path"]), texts, est.threads,
                                        str(self.s.device))
        except Exception as e:  # noqa: BLE001 - encoder unavailable: start-up of the script only
            self.startup(est, rule, f"encoder not loadable ({type(e).__name__})")
            return
        per_split = [c for smp in self.samples.values() for c in smp.counts.values()]
        est_.encoder_jobs(est, startup, rate, sum(per_split) / max(1, len(per_split)))


#: how the jobs of each kind (:func:`iclpt.orchestration.calibrate.rules.job_kind`) are estimated
ESTIMATORS: dict[str, Callable[[_Measured, RuleEstimate, RuleFacts], None]] = {
    TRAIN: _Measured.train, DECODE: _Measured.decode, MAKES_MODEL: _Measured.makes_model,
    NO_WORK: _Measured.no_work, NETWORK: _Measured.network, ENCODER: _Measured.encoder, STARTUP: _Measured.startup,
}


def _estimate_rules(s: Setting, counts: Mapping[str, int], measured: _Measured, gpus: int | None,
                    probe_seconds: float) -> tuple[list[RuleEstimate], dict[tuple[int, int], float]]:
    """Each rule's estimate by the kind of its jobs, times the measured slowdown of its slots sharing the CPU."""
    out: list[RuleEstimate] = []
    factors: dict[tuple[int, int], float] = {}
    for name, n in counts.items():
        rule = s.rules[name]
        est = RuleEstimate(name, n, rule_threads(rule, s.cores), slots(rule, s.cores, gpus))
        ESTIMATORS[job_kind(rule)](measured, est, rule)
        if not (rule.loads_model and s.device.type == "cuda"):  # GPU jobs: no CPU slowdown
            key = (est.slots, est.threads)
            if key not in factors:
                factors[key] = concurrency_factor(est.slots, est.threads, s.precision, probe_seconds)
                if factors[key] > 1.0:
                    s.say(f"  {est.slots} jobs x {est.threads} threads at once: each {factors[key]:.2f}x slower")
            est_.slowed(est, factors[key])
        out.append(est)
    return out, factors


def _model_summary(m: ModelCalibration) -> dict[str, Any]:
    return {
        "source": asdict(m.source), "startup_s": m.startup_s,
        "train": {k: asdict(v) for k, v in m.train.items()},
        "decode": {k: asdict(v) for k, v in m.decode.items()},
        "train_tokens": m.train_tokens, "predict_tokens": m.predict_tokens,
        "train_runs": {"/".join(map(str, r)): v for r, v in m.train_seconds.items()},
        "predict_runs": {"/".join(map(str, r)): v for r, v in m.predict_seconds.items()},
    }
