"""Soft-prompt training (PT and IPT): one loop, resumable, deterministic on CPU.

- Loss: token-level cross entropy on target tokens only (mean over the target tokens of one optimizer step,
  gradient accumulation included). The LM head runs on the target positions only.
- Optimisers: AdamW (default; linear warm-up then linear decay to 0) or Adafactor (Lester et al. preset:
  no parameter scaling, no relative step, decay rate -0.8, update clipping 1.0; constant learning rate after
  the warm-up. Set ``lr: 0.3`` for the Lester-faithful run).
- Gradient clipping (``max_grad_norm``, 0 disables), ``grad_accum`` micro-batches per step.
- Batches: per epoch a seeded permutation; with ``bucket_by_length`` it is cut into windows of 50 batches, each
  window sorted by length and cut into batches, and the batch order shuffled (seeded): little padding, still
  random. The batch order of epoch ``e`` is a pure function of (seed, e), so the data position is
  ``(epoch, batch index)``.
- Checkpoint selection: the initial (step-0) prompt is the first candidate (its dev loss is computed before the
  first step), then the prompt after every ``eval_every``-th step and after the last step; the prompt with the
  lowest dev loss is kept (the earlier one on a tie), so a run whose every later dev loss is worse returns the
  initial prompt (``best_step`` 0). ``max_steps: 0`` trains nothing and runs no dev pass: the initial prompt
  is the output (``best_step`` 0, dev losses NaN, written as null in ``meta.json``), the untrained-prompt
  control.
- Checkpoints every ``checkpoint_every`` steps in ``<checkpoint_root>/<key>/state.pt`` (prompt, best prompt,
  optimiser, scheduler, loss scale (fp16), RNG states, data position, log so far); ``key`` hashes the job's
  parameters (with the device type and precision it resolved to, never ``auto``) and input data, so a rerun of
  the same job resumes and a changed job, or one on another device or precision, starts afresh
  (:mod:`iclpt.engine.checkpoint`). The folder is removed once the outputs are written.
- Precision: fp32, or bf16 / fp16 autocast with the soft prompt and its optimizer state in float32; fp16 scales
  the loss (:func:`loss_scaler`). On CUDA the training forward runs attention's math kernel
  (:func:`iclpt.models.loading.deterministic_attention`) and the loss sum avoids ``nll_loss``'s atomics
  (:func:`target_nll_sum`), so that with cuBLAS's fixed workspace a resumed run repeats the uninterrupted one.
- One step is public (:func:`start_training`, :func:`train_step` on a :class:`TrainRun`), so that the run plan
  (:mod:`iclpt.orchestration.calibrate`) and the benchmarks time the job's own step.
- The job (:func:`train_job`) is load (:func:`load_train_inputs`, through :func:`iclpt.engine.job.load_job`) ->
  run (:func:`run_training`) -> write (:func:`write_train_outputs`); the input layout comes from
  ``params["n_demos"]`` alone (0: ``[P] query``, > 0: ``[P] demos query``), never from the method name.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from iclpt.engine.checkpoint import (
    discard_checkpoint,
    job_checkpoint_dir,
    load_checkpoint,
    resolved_key_params,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from iclpt.engine.job import Job, JobInputs, SplitSpec, demo_layout, load_job
from iclpt.engine.prompting import IGNORE, Batch, Encoded, make_batch
from iclpt.engine.soft_prompt import assemble_inputs
from iclpt.models.loading import autocast, deterministic_attention, target_logits

BUCKET_WINDOW = 50  # batches per sorting window of the length-bucketed sampler


class TrainingInterrupted(RuntimeError):
    """Raised by the test-only ``stop_after`` switch: the job stops as if killed after that step."""


@dataclass
class TrainConfig:
    optimizer: str = "adamw"
    lr: float = 0.01
    weight_decay: float = 0.0
    warmup_steps: int = 50
    max_steps: int = 2000
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    eval_every: int = 200
    dev_examples: int = 200
    checkpoint_every: int = 200
    bucket_by_length: bool = True
    max_length: int = 1024

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrainConfig:
        d = dict(d or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown train settings: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class TrainResult:
    best_prompt: torch.Tensor
    final_prompt: torch.Tensor
    best_step: int
    best_dev_loss: float
    final_dev_loss: float
    steps: int
    log: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0
    train_target_tokens: int = 0
    initial_dev_loss: float = math.nan


# ---- sampler ------------------------------------------------------------------------------------
def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket: bool) -> list[list[int]]:
    """Index batches of one epoch (pure function of its arguments)."""
    rng = random.Random(f"iclpt-batches-{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not bucket:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    window = batch_size * BUCKET_WINDOW
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda i: (lengths[i], i))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class DataStream:
    """Endless stream of batches with a resumable position ``(epoch, index)``."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, bucket: bool):
        if not lengths:
            raise ValueError("no training examples")
        self.lengths, self.batch_size, self.seed, self.bucket = list(lengths), batch_size, seed, bucket
        self.epoch, self.index = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def _epoch(self, e: int) -> list[list[int]]:
        if self._cache is None or self._cache[0] != e:
            self._cache = (e, epoch_batches(self.lengths, self.batch_size, self.seed, e, self.bucket))
        return self._cache[1]

    def next(self) -> list[int]:
        batches = self._epoch(self.epoch)
        if self.index >= len(batches):
            self.epoch, self.index = self.epoch + 1, 0
            batches = self._epoch(self.epoch)
        b = batches[self.index]
        self.index += 1
        return b

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


# ---- loss ---------------------------------------------------------------------------------------
def batch_loss_sum(model: torch.nn.Module, prompt: torch.Tensor | None, batch: Batch) -> tuple[torch.Tensor, int]:
    """(sum of target-token cross entropy, number of target tokens) of one left-padded batch."""
    embeds, attn, pos = assemble_inputs(model, prompt, batch.input_ids, batch.token_mask)
    n = embeds.shape[1] - batch.input_ids.shape[1]
    labels = batch.labels
    if n:
        labels = torch.cat([labels.new_full((labels.shape[0], n), IGNORE), labels], dim=1)
    # position t predicts token t+1
    predict_mask = torch.zeros_like(labels, dtype=torch.bool)
    predict_mask[:, :-1] = labels[:, 1:] != IGNORE
    gold = labels[:, 1:][labels[:, 1:] != IGNORE]
    logits = target_logits(model, embeds, attn, pos, predict_mask)
    return target_nll_sum(logits, gold), int(gold.numel())


def target_nll_sum(logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Sum of the cross entropy of ``logits`` ``[N, V]`` (in float32) at the ``gold`` ids ``[N]``. On CUDA,
    ``nll_loss`` reduces with atomics (nondeterministic, torch's ``use_deterministic_algorithms`` list), so there
    the same sum is a gather and a sum, both deterministic; on the CPU it is ``F.cross_entropy``."""
    logits = logits.float()
    if logits.device.type == "cuda":
        return -torch.log_softmax(logits, dim=-1).gather(1, gold.unsqueeze(1)).sum()
    return F.cross_entropy(logits, gold, reduction="sum")


@torch.no_grad()
def dev_loss(model: torch.nn.Module, prompt: torch.Tensor | None, examples: Sequence[Encoded], batch_size: int,
             pad_id: int, device: torch.device, precision: str) -> float:
    """Mean target-token cross entropy over ``examples`` (length-sorted batches)."""
    if not examples:
        return float("nan")
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].ids), i))
    total, count = 0.0, 0
    for s in range(0, len(order), batch_size):
        batch = make_batch([examples[i] for i in order[s:s + batch_size]], pad_id).to(device)
        with autocast(device, precision):
            loss, n = batch_loss_sum(model, prompt, batch)
        total += float(loss)
        count += n
    return total / max(count, 1)


# ---- optimiser / schedule -----------------------------------------------------------------------
def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False,
                         decay_rate=-0.8, clip_threshold=1.0, beta1=None, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr before optimizer step ``step`` (0-based)."""
    w = cfg.warmup_steps
    if w > 0 and step < w:
        return (step + 1) / w
    if cfg.optimizer == "adafactor":
        return 1.0
    return max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - w))


# ---- the loop -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainRun:
    """What stays fixed while a prompt trains: the frozen model, the encoded examples, the settings."""

    model: torch.nn.Module
    train_examples: Sequence[Encoded]
    dev_examples: Sequence[Encoded]
    cfg: TrainConfig
    pad_id: int
    device: torch.device
    precision: str = "fp32"


@dataclass
class TrainState:
    """Mutable state of one training run (what a checkpoint holds)."""

    prompt: torch.nn.Parameter
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    stream: DataStream
    best_prompt: torch.Tensor
    step: int = 0
    best_step: int = 0
    best_dev: float = math.inf
    rows: list[dict[str, Any]] = field(default_factory=list)
    tokens_seen: int = 0
    resumed_from: int = 0
    last_dev: float = math.nan
    initial_dev: float = math.nan
    scaler: torch.amp.GradScaler | None = None


def start_training(run: TrainRun, init_prompt: torch.Tensor, seed: int) -> TrainState:
    """A fresh state: the prompt (float32 master copy of ``init_prompt``), optimiser, schedule, batch stream."""
    if any(p.requires_grad for p in run.model.parameters()):
        raise ValueError("the base model must be frozen (iclpt.engine.soft_prompt.freeze)")
    cfg = run.cfg
    prompt = torch.nn.Parameter(init_prompt.detach().clone().float().to(run.device))
    opt = make_optimizer([prompt], cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    stream = DataStream([len(e.ids) for e in run.train_examples], cfg.batch_size, seed, cfg.bucket_by_length)
    return TrainState(prompt=prompt, opt=opt, sched=sched, stream=stream, best_prompt=prompt.detach().clone(),
                      scaler=loss_scaler(run))


def loss_scaler(run: TrainRun) -> torch.amp.GradScaler | None:
    """fp16 only: a dynamic loss scale, so that the soft prompt's small gradients survive fp16's range (the
    prompt and its optimizer state stay float32; a step whose gradient overflowed is skipped and the scale
    halved). bf16 has float32's range and needs none."""
    return torch.amp.GradScaler(run.device.type) if run.precision == "fp16" else None


#: what a training checkpoint must hold (:func:`_checkpoint_state`); one without them is discarded
CHECKPOINT_KEYS = ("step", "prompt", "optimizer", "scheduler", "data", "rng", "best_prompt", "best_step",
                   "best_dev_loss", "log")


class CheckpointUnusable(RuntimeError):
    """A checkpoint loaded but could not be restored into the run (it was discarded)."""


def resume(st: TrainState, ckpt_path: Path, device: torch.device) -> bool:
    """Restore ``st`` from ``ckpt_path`` if it exists and is usable; True when it did. A checkpoint that does not
    load is discarded with a warning (False); one that loads but does not fit the run (a prompt of another
    shape, a broken optimizer state, ...) is discarded too and raises :class:`CheckpointUnusable` (``st`` may be
    half restored: start afresh)."""
    state = load_checkpoint(ckpt_path, CHECKPOINT_KEYS)
    if state is None:
        return False
    try:
        _restore(st, state, device)
    except Exception as exc:
        discard_checkpoint(ckpt_path, f"it does not fit this run ({type(exc).__name__}: {exc})")
        raise CheckpointUnusable(str(ckpt_path)) from exc
    return True


def _restore(st: TrainState, state: dict[str, Any], device: torch.device) -> None:
    if tuple(state["prompt"].shape) != tuple(st.prompt.shape):
        raise ValueError(f"prompt shape {tuple(state['prompt'].shape)}, this run's is {tuple(st.prompt.shape)}")
    with torch.no_grad():
        st.prompt.copy_(state["prompt"].to(device))
    st.opt.load_state_dict(state["optimizer"])
    st.sched.load_state_dict(state["scheduler"])
    if st.scaler is not None and state.get("scaler"):
        st.scaler.load_state_dict(state["scaler"])
    st.stream.load(state["data"])
    set_rng_state(state["rng"], device)
    st.step = st.resumed_from = int(state["step"])
    st.best_prompt = state["best_prompt"].to(device)
    st.best_step, st.best_dev = int(state["best_step"]), float(state["best_dev_loss"])
    st.rows = list(state["log"])
    st.tokens_seen = int(state.get("tokens", 0))
    st.initial_dev = float(state.get("initial_dev_loss", math.nan))


def _checkpoint_state(st: TrainState) -> dict[str, Any]:
    return {"step": st.step, "prompt": st.prompt.detach().cpu(), "optimizer": st.opt.state_dict(),
            "scheduler": st.sched.state_dict(), "data": st.stream.state(), "rng": rng_state(st.prompt.device),
            "scaler": st.scaler.state_dict() if st.scaler is not None else None,
            "best_prompt": st.best_prompt.cpu(), "best_step": st.best_step, "best_dev_loss": st.best_dev,
            "log": st.rows, "tokens": st.tokens_seen, "initial_dev_loss": st.initial_dev}


def draw_step(run: TrainRun, st: TrainState) -> list[Batch]:
    """The ``grad_accum`` micro-batches of the next step, drawn from the state's stream."""
    return [make_batch([run.train_examples[i] for i in st.stream.next()], run.pad_id)
            for _ in range(run.cfg.grad_accum)]


def train_step(run: TrainRun, st: TrainState, micro: Sequence[Batch] | None = None) -> dict[str, Any]:
    """One optimizer step over ``micro`` (default: :func:`draw_step`); returns its log row."""
    micro = draw_step(run, st) if micro is None else micro
    n_tok = sum(b.n_target for b in micro)
    st.opt.zero_grad(set_to_none=True)
    loss_total = 0.0
    scaler = st.scaler
    for b in micro:
        b = b.to(run.device)
        # the attention backend is chosen in the forward pass; its backward follows it
        with autocast(run.device, run.precision), deterministic_attention(run.device):
            loss_sum, _ = batch_loss_sum(run.model, st.prompt, b)
        loss = loss_sum / max(n_tok, 1)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_total += float(loss.detach())
    if scaler is not None:
        scaler.unscale_(st.opt)
    grad_norm = float(st.prompt.grad.norm()) if st.prompt.grad is not None else 0.0
    if run.cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([st.prompt], run.cfg.max_grad_norm)
    lr = st.opt.param_groups[0]["lr"]
    row: dict[str, Any] = {}
    if scaler is not None:
        row["loss_scale"] = float(scaler.get_scale())
        scaler.step(st.opt)  # skipped when the unscaled gradient is not finite
        scaler.update()
    else:
        st.opt.step()
    st.sched.step()
    st.step += 1
    st.tokens_seen += n_tok
    return {"step": st.step, "loss": loss_total, "lr": lr, "grad_norm": grad_norm, "target_tokens": n_tok, **row}


def run_dev_loss(run: TrainRun, prompt: torch.Tensor | None) -> float:
    """:func:`dev_loss` of ``prompt`` on the run's dev examples."""
    return dev_loss(run.model, prompt, run.dev_examples, run.cfg.batch_size, run.pad_id, run.device, run.precision)


def evaluate_initial(run: TrainRun, st: TrainState, initial_dev_loss: float | None,
                     say: Callable[[str], None]) -> None:
    """Make the state's (initial) prompt the first selection candidate: best step 0 at its dev loss
    (``initial_dev_loss`` when the caller computed it, else one dev pass)."""
    d = run_dev_loss(run, st.prompt.detach()) if initial_dev_loss is None else float(initial_dev_loss)
    st.initial_dev = st.best_dev = d
    st.best_step, st.best_prompt = 0, st.prompt.detach().clone()
    say(f"step 0: dev {d:.4f} (the initial prompt, the first checkpoint candidate)")


def evaluate(run: TrainRun, st: TrainState, row: dict[str, Any], say: Callable[[str], None]) -> None:
    """Dev loss of the current prompt into ``row``; keeps the best prompt."""
    d = run_dev_loss(run, st.prompt.detach())
    row["dev_loss"] = d
    st.last_dev = d
    if d < st.best_dev or not math.isfinite(st.best_dev):
        st.best_dev, st.best_step = d, st.step
        st.best_prompt = st.prompt.detach().clone()
    say(f"step {st.step}: loss {row['loss']:.4f} dev {d:.4f} (best {st.best_dev:.4f} @ {st.best_step})")


def start_or_resume(run: TrainRun, st: TrainState, ckpt_path: Path | None, init_prompt: torch.Tensor,
                    initial_dev_loss: float | None, say: Callable[[str], None]) -> None:
    """Resume ``st`` from the job's checkpoint (whose best prompt already counts the initial one), or start it
    with the initial prompt as the step-0 candidate; with ``max_steps`` 0, neither (no dev pass)."""
    if ckpt_path and resume(st, ckpt_path, run.device):
        say(f"resumed from {ckpt_path} at step {st.step}")
        if run.cfg.max_steps > 0 and math.isnan(st.initial_dev):  # a checkpoint written before it was kept
            st.initial_dev = run_dev_loss(run, init_prompt.float().to(run.device))
    elif run.cfg.max_steps > 0:
        evaluate_initial(run, st, initial_dev_loss, say)
    else:
        st.best_dev = math.nan  # nothing evaluated


def train_prompt(model: torch.nn.Module, init_prompt: torch.Tensor, train_examples: Sequence[Encoded],
                 dev_examples: Sequence[Encoded], cfg: TrainConfig, seed: int, pad_id: int,
                 device: torch.device, precision: str = "fp32", checkpoint_dir: str | os.PathLike[str] | None = None,
                 log: Callable[[str], None] | None = None, stop_after: int | None = None,
                 initial_dev_loss: float | None = None) -> TrainResult:
    """Train the soft prompt on a frozen ``model``; returns the best (by dev loss, the initial prompt included
    as step 0) and final prompts. ``initial_dev_loss``: the dev loss of ``init_prompt`` if the caller has it
    (else computed here); ``cfg.max_steps`` 0 returns ``init_prompt`` without any dev pass."""
    say = log or (lambda s: None)
    t0 = time.time()
    run = TrainRun(model, train_examples, dev_examples, cfg, pad_id, device, precision)
    rng_before = rng_state(device)
    st = start_training(run, init_prompt, seed)
    ckpt_path = Path(checkpoint_dir) / "state.pt" if checkpoint_dir else None
    model.eval()
    try:
        start_or_resume(run, st, ckpt_path, init_prompt, initial_dev_loss, say)
    except CheckpointUnusable as exc:  # discarded (warning logged): the run starts afresh, as if it had none
        say(f"checkpoint {exc} discarded; training restarts from step 0")
        set_rng_state(rng_before, device)
        st = start_training(run, init_prompt, seed)
        start_or_resume(run, st, None, init_prompt, initial_dev_loss, say)
    st.last_dev = st.rows[-1].get("dev_loss", math.nan) if st.rows else math.nan
    while st.step < cfg.max_steps:
        row = train_step(run, st)
        if st.step % cfg.eval_every == 0 or st.step == cfg.max_steps:
            evaluate(run, st, row, say)
        st.rows.append(row)
        if ckpt_path and st.step % cfg.checkpoint_every == 0 and st.step < cfg.max_steps:
            save_checkpoint(ckpt_path, _checkpoint_state(st))
        if stop_after is not None and st.step >= stop_after and st.step < cfg.max_steps:
            raise TrainingInterrupted(f"stopped after step {st.step} (stop_after)")
    return TrainResult(best_prompt=st.best_prompt.detach().cpu(), final_prompt=st.prompt.detach().cpu(),
                       best_step=st.best_step, best_dev_loss=st.best_dev, final_dev_loss=st.last_dev, steps=st.step,
                       log=st.rows, resumed_from=st.resumed_from, seconds=time.time() - t0,
                       train_target_tokens=st.tokens_seen, initial_dev_loss=st.initial_dev)


# ---- the whole job (what the train_prompt rule runs): load -> run -> write ----------------------
@dataclass
class TrainInputs:
    """A training job, loaded and encoded (:func:`load_train_inputs`): the job (splits ``train`` and ``dev``),
    its settings, seed, prompt length, checkpoint folder, initial prompt and model facts."""

    job: Job
    cfg: TrainConfig
    seed: int
    length: int
    checkpoint_dir: Path | None
    init_prompt: torch.Tensor
    model_info: dict[str, Any]
    init_vocab: dict[str, int] | None = None

    def run(self) -> TrainRun:
        j = self.job
        return TrainRun(j.model, j.examples("train"), j.examples("dev"), self.cfg, j.pad_id, j.device, j.precision)


@dataclass
class TrainOutcome:
    """What :func:`run_training` produced: the result and the dev loss of the initial prompt (NaN when
    ``max_steps`` is 0: no dev pass runs)."""

    result: TrainResult
    initial_dev_loss: float


def train_job_inputs(params: dict[str, Any], cfg: TrainConfig, train_path: str, dev_path: str,
                     train_retrieval: str | None, dev_retrieval: str | None) -> JobInputs:
    """What a training job reads: the train split (also the demo pool) and the first ``dev_examples`` of dev."""
    n_demos = demo_layout(params, "train_job", {"the train retrieval file": train_retrieval,
                                                "the dev retrieval file": dev_retrieval})
    splits = {"train": SplitSpec(train_path, train_retrieval),
              "dev": SplitSpec(dev_path, dev_retrieval, limit=cfg.dev_examples)}
    return JobInputs(splits=splits, n_demos=n_demos, train_path=train_path, n_virtual=int(params["length"]),
                     max_length=cfg.max_length)


def load_train_inputs(*, model_path: str, train_path: str, dev_path: str, params: dict[str, Any],
                      train_retrieval: str | None = None, dev_retrieval: str | None = None,
                      checkpoint_root: str | os.PathLike[str] | None = None,
                      log: Callable[[str], None] | None = None) -> TrainInputs:
    """Check the params, load the frozen model, encode the train / dev examples, initialise the prompt."""
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.models.loading import model_info

    say = log or (lambda s: None)
    cfg = TrainConfig.from_dict(params.get("train"))
    inputs = train_job_inputs(params, cfg, train_path, dev_path, train_retrieval, dev_retrieval)
    seed, length = int(params["seed"]), int(params["length"])
    pcfg = dict(params.get("prompt") or {})
    files = [train_path, dev_path] + [f for f in (train_retrieval, dev_retrieval) if f]
    job = load_job(model_path, params, inputs)
    ckpt_dir = job_checkpoint_dir(resolved_key_params(params, job.device, job.precision), model_path, files,
                                  checkpoint_root)
    info = model_info(job.model)
    stats = {s: job.splits[s].stats for s in ("train", "dev")}
    say(f"{len(job.examples('train'))} train / {len(job.examples('dev'))} dev examples; "
        f"truncation {stats['train']} / {stats['dev']}")
    kind = pcfg.get("init", "vocab")
    candidates, init_vocab = (vocab_candidates(job, int(pcfg.get("init_vocab_size", 5000)), say) if kind == "vocab"
                              else (None, None))
    init = init_prompt(job.model, length, init=kind, seed=seed, vocab_ids=candidates,
                       init_text=pcfg.get("init_text"), init_file=pcfg.get("init_file"), tokenizer=job.tokenizer)
    return TrainInputs(job=job, cfg=cfg, seed=seed, length=length, checkpoint_dir=ckpt_dir, init_prompt=init,
                       model_info=info, init_vocab=init_vocab)


def vocab_candidates(job: Job, k: int, say: Callable[[str], None]) -> tuple[list[int], dict[str, int]]:
    """The ``vocab`` init's candidates: the ``k`` most frequent non-special token ids of the job's training text
    (inputs and targets of the train split, :func:`iclpt.engine.soft_prompt.frequent_token_ids`), and the
    counts ``meta.json`` records (``requested``, ``candidates``)."""
    from iclpt.engine.soft_prompt import frequent_token_ids

    texts = [t for r in job.splits["train"].records for t in (r["input"], r["target"])]
    ids = frequent_token_ids(texts, job.tokenizer, k)
    if len(ids) < k:
        say(f"prompt init vocab: the training text has {len(ids)} distinct non-special token ids, fewer than "
            f"init_vocab_size = {k}; sampling from those {len(ids)}")
    return ids, {"requested": k, "candidates": len(ids)}


def run_training(inputs: TrainInputs, log: Callable[[str], None] | None = None,
                 stop_after: int | None = None) -> TrainOutcome:
    """:func:`train_prompt` (resuming from the job's checkpoint): the initial prompt's dev loss first (the step-0
    candidate), none at all when ``max_steps`` is 0."""
    say = log or (lambda s: None)
    x, run = inputs, inputs.run()
    if x.cfg.max_steps == 0:
        say("train.max_steps = 0: no training step and no dev pass; the initial prompt is the output")
    result = train_prompt(run.model, x.init_prompt, run.train_examples, run.dev_examples, x.cfg, x.seed, run.pad_id,
                          run.device, run.precision, checkpoint_dir=x.checkpoint_dir, log=say, stop_after=stop_after)
    return TrainOutcome(result=result, initial_dev_loss=result.initial_dev_loss)


def train_meta(inputs: TrainInputs, outcome: TrainOutcome, params: dict[str, Any], model_path: str,
               ) -> dict[str, Any]:
    """The job's ``meta.json`` (``params["method"]`` and ``params["demos"]`` are labels only)."""
    from iclpt.io import provenance

    x, j, r = inputs, inputs.job, outcome.result
    return {
        "task": params.get("task"), "model": params.get("model"), "model_path": model_path,
        "method": params["method"], "prompt_length": x.length, "demo_source": params.get("demos"),
        "seed": x.seed, "n_demos": j.inputs.n_demos, "steps": r.steps, "best_step": r.best_step,
        "best_dev_loss": _finite(r.best_dev_loss), "final_dev_loss": _finite(r.final_dev_loss),
        "initial_dev_loss": _finite(outcome.initial_dev_loss), "resumed_from_step": r.resumed_from,
        "init_vocab": x.init_vocab,
        "train_seconds": r.seconds, "train_target_tokens": r.train_target_tokens, "device": str(j.device),
        "precision": j.precision, "ran_on": j.ran_on(), "max_length": j.max_length, "model_info": x.model_info,
        "n_train": len(j.examples("train")), "n_dev": len(j.examples("dev")),
        "truncation": {s: j.splits[s].stats for s in ("train", "dev")},
        "checkpoint_key": x.checkpoint_dir.name if x.checkpoint_dir else None,
        "provenance": provenance(params),
    }


def _finite(x: float) -> float | None:
    """``x``, or None (JSON null) when it is NaN / infinite (no dev pass ran)."""
    return float(x) if math.isfinite(x) else None


def write_train_outputs(out_dir: str | os.PathLike[str], inputs: TrainInputs, outcome: TrainOutcome,
                        params: dict[str, Any], model_path: str) -> dict[str, Any]:
    """Write ``out_dir/{prompt.safetensors, peft/, train_log.jsonl, meta.json}``, drop the checkpoint."""
    from iclpt.engine.soft_prompt import export_peft, save_prompt
    from iclpt.io import write_json_atomic, write_jsonl_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = train_meta(inputs, outcome, params, model_path)
    best = outcome.result.best_prompt
    save_prompt(out / "prompt.safetensors", best,
                {k: meta[k] for k in ("task", "model", "method", "prompt_length", "demo_source", "seed",
                                      "best_step", "best_dev_loss")})
    export_peft(out / "peft", best, inputs.job.model.config, base_model_name_or_path=model_path)
    write_jsonl_atomic(out / "train_log.jsonl", outcome.result.log)
    write_json_atomic(out / "meta.json", meta)
    ckpt_dir = inputs.checkpoint_dir
    if ckpt_dir is not None and ckpt_dir.exists():
        import shutil

        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return meta


def train_job(*, model_path: str, train_path: str, dev_path: str, out_dir: str | os.PathLike[str],
              params: dict[str, Any], train_retrieval: str | None = None, dev_retrieval: str | None = None,
              checkpoint_root: str | os.PathLike[str] | None = None, log: Callable[[str], None] | None = None,
              stop_after: int | None = None) -> dict[str, Any]:
    """Train one soft prompt and write ``out_dir/{prompt.safetensors, meta.json, train_log.jsonl, peft/}``.

    ``params``: n_demos (> 0: that many retrieved demos before each input, ``train_retrieval`` and
    ``dev_retrieval`` required; 0: no demos, no retrieval files), demos (demo source label: none iff n_demos is
    0), length, seed, input_label, output_label, prompt {init, init_vocab_size, init_text, init_file},
    train {TrainConfig}, device, precision; task, model, method are labels written to the outputs.
    """
    say = log or (lambda s: None)
    inputs = load_train_inputs(model_path=model_path, train_path=train_path, dev_path=dev_path, params=params,
                               train_retrieval=train_retrieval, dev_retrieval=dev_retrieval,
                               checkpoint_root=checkpoint_root, log=say)
    outcome = run_training(inputs, log=say, stop_after=stop_after)
    return write_train_outputs(out_dir, inputs, outcome, params, model_path)
