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
- Dev loss every ``eval_every`` steps and at the last step; the prompt with the lowest dev loss is kept.
- Checkpoints every ``checkpoint_every`` steps in ``<checkpoint_root>/<key>/state.pt`` (prompt, best prompt,
  optimiser, scheduler, RNG states, data position, log so far); ``key`` hashes the job's parameters and input
  data, so a rerun of the same job resumes and a changed job starts afresh (:mod:`iclpt.engine.checkpoint`). The
  folder is removed once the outputs are written.
- The job (:func:`train_job`) is load (:func:`load_train_inputs`) -> run (:func:`run_training`) -> write
  (:func:`write_train_outputs`); the input layout comes from ``params["n_demos"]`` alone (0: ``[P] query``,
  > 0: ``[P] demos query``), never from the method name.
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

from iclpt.engine.checkpoint import _rng_state, _set_rng_state, checkpoint_key, load_checkpoint, save_checkpoint
from iclpt.models.loading import autocast, target_logits
from iclpt.engine.prompting import (IGNORE, Batch, Encoded, build_examples, demo_count, index_by_id, load_retrieval,
                             make_batch)
from iclpt.engine.soft_prompt import assemble_inputs

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
    def from_dict(cls, d: dict[str, Any] | None) -> "TrainConfig":
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
    loss = F.cross_entropy(logits.float(), gold, reduction="sum")
    return loss, int(gold.numel())


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
@dataclass
class _Loop:
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


def _start_loop(model: torch.nn.Module, init_prompt: torch.Tensor, train_examples: Sequence[Encoded],
                cfg: TrainConfig, seed: int, device: torch.device) -> _Loop:
    for p in model.parameters():
        if p.requires_grad:
            raise ValueError("the base model must be frozen (iclpt.engine.soft_prompt.freeze)")
    prompt = torch.nn.Parameter(init_prompt.detach().clone().float().to(device))
    opt = make_optimizer([prompt], cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    stream = DataStream([len(e.ids) for e in train_examples], cfg.batch_size, seed, cfg.bucket_by_length)
    return _Loop(prompt=prompt, opt=opt, sched=sched, stream=stream, best_prompt=prompt.detach().clone())


def _resume(st: _Loop, ckpt_path: Path, device: torch.device) -> bool:
    """Restore ``st`` from ``ckpt_path`` if it exists; True when it did."""
    state = load_checkpoint(ckpt_path)
    if state is None:
        return False
    with torch.no_grad():
        st.prompt.copy_(state["prompt"].to(device))
    st.opt.load_state_dict(state["optimizer"])
    st.sched.load_state_dict(state["scheduler"])
    st.stream.load(state["data"])
    _set_rng_state(state["rng"])
    st.step = st.resumed_from = int(state["step"])
    st.best_prompt = state["best_prompt"].to(device)
    st.best_step, st.best_dev = int(state["best_step"]), float(state["best_dev_loss"])
    st.rows = list(state["log"])
    st.tokens_seen = int(state.get("tokens", 0))
    return True


def _checkpoint_state(st: _Loop) -> dict[str, Any]:
    return {"step": st.step, "prompt": st.prompt.detach().cpu(), "optimizer": st.opt.state_dict(),
            "scheduler": st.sched.state_dict(), "data": st.stream.state(), "rng": _rng_state(),
            "best_prompt": st.best_prompt.cpu(), "best_step": st.best_step, "best_dev_loss": st.best_dev,
            "log": st.rows, "tokens": st.tokens_seen}


def _train_step(model: torch.nn.Module, st: _Loop, train_examples: Sequence[Encoded], cfg: TrainConfig,
                pad_id: int, device: torch.device, precision: str) -> dict[str, Any]:
    """One optimizer step (``grad_accum`` micro-batches); returns its log row."""
    micro = [make_batch([train_examples[i] for i in st.stream.next()], pad_id) for _ in range(cfg.grad_accum)]
    n_tok = sum(b.n_target for b in micro)
    st.opt.zero_grad(set_to_none=True)
    loss_total = 0.0
    for b in micro:
        b = b.to(device)
        with autocast(device, precision):
            loss_sum, _ = batch_loss_sum(model, st.prompt, b)
        loss = loss_sum / max(n_tok, 1)
        loss.backward()
        loss_total += float(loss.detach())
    grad_norm = float(st.prompt.grad.norm()) if st.prompt.grad is not None else 0.0
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([st.prompt], cfg.max_grad_norm)
    lr = st.opt.param_groups[0]["lr"]
    st.opt.step()
    st.sched.step()
    st.step += 1
    st.tokens_seen += n_tok
    return {"step": st.step, "loss": loss_total, "lr": lr, "grad_norm": grad_norm, "target_tokens": n_tok}


def _evaluate(model: torch.nn.Module, st: _Loop, row: dict[str, Any], dev_examples: Sequence[Encoded],
              cfg: TrainConfig, pad_id: int, device: torch.device, precision: str,
              say: Callable[[str], None]) -> None:
    """Dev loss of the current prompt into ``row``; keeps the best prompt."""
    d = dev_loss(model, st.prompt.detach(), dev_examples, cfg.batch_size, pad_id, device, precision)
    row["dev_loss"] = d
    st.last_dev = d
    if d < st.best_dev or not math.isfinite(st.best_dev):
        st.best_dev, st.best_step = d, st.step
        st.best_prompt = st.prompt.detach().clone()
    say(f"step {st.step}: loss {row['loss']:.4f} dev {d:.4f} (best {st.best_dev:.4f} @ {st.best_step})")


def train_prompt(model: torch.nn.Module, init_prompt: torch.Tensor, train_examples: Sequence[Encoded],
                 dev_examples: Sequence[Encoded], cfg: TrainConfig, seed: int, pad_id: int,
                 device: torch.device, precision: str = "fp32", checkpoint_dir: str | os.PathLike[str] | None = None,
                 log: Callable[[str], None] | None = None, stop_after: int | None = None) -> TrainResult:
    """Train the soft prompt on a frozen ``model``; returns the best (by dev loss) and final prompts."""
    say = log or (lambda s: None)
    t0 = time.time()
    st = _start_loop(model, init_prompt, train_examples, cfg, seed, device)
    ckpt_path = Path(checkpoint_dir) / "state.pt" if checkpoint_dir else None
    if ckpt_path and _resume(st, ckpt_path, device):
        say(f"resumed from {ckpt_path} at step {st.step}")
    model.eval()
    st.last_dev = st.rows[-1].get("dev_loss", math.nan) if st.rows else math.nan
    while st.step < cfg.max_steps:
        row = _train_step(model, st, train_examples, cfg, pad_id, device, precision)
        if st.step % cfg.eval_every == 0 or st.step == cfg.max_steps:
            _evaluate(model, st, row, dev_examples, cfg, pad_id, device, precision, say)
        st.rows.append(row)
        if ckpt_path and st.step % cfg.checkpoint_every == 0 and st.step < cfg.max_steps:
            save_checkpoint(ckpt_path, _checkpoint_state(st))
        if stop_after is not None and st.step >= stop_after and st.step < cfg.max_steps:
            raise TrainingInterrupted(f"stopped after step {st.step} (stop_after)")
    return TrainResult(best_prompt=st.best_prompt.detach().cpu(), final_prompt=st.prompt.detach().cpu(),
                       best_step=st.best_step, best_dev_loss=st.best_dev, final_dev_loss=st.last_dev, steps=st.step,
                       log=st.rows, resumed_from=st.resumed_from, seconds=time.time() - t0,
                       train_target_tokens=st.tokens_seen)


# ---- the whole job (what the train_prompt rule runs): load -> run -> write ----------------------
@dataclass
class TrainInputs:
    """A training job, loaded and encoded (:func:`load_train_inputs`)."""

    cfg: TrainConfig
    seed: int
    length: int
    n_demos: int
    device: torch.device
    precision: str
    checkpoint_dir: Path | None
    model: torch.nn.Module
    tokenizer: Any
    model_info: dict[str, Any]
    max_length: int
    train_examples: list[Encoded]
    dev_examples: list[Encoded]
    truncation: dict[str, dict[str, int]]
    init_prompt: torch.Tensor


@dataclass
class TrainOutcome:
    """What :func:`run_training` produced: the result and the dev loss of the initial prompt."""

    result: TrainResult
    initial_dev_loss: float


def train_layout(params: dict[str, Any], train_retrieval: str | None, dev_retrieval: str | None) -> int:
    """``n_demos`` of a training job: > 0 prepends demos (both retrieval files needed), 0 trains without."""
    n_demos = demo_count(params, "train_job")
    if n_demos == 0 and (train_retrieval or dev_retrieval):
        raise ValueError("train_job: n_demos 0 trains without demos; pass no train/dev retrieval files")
    if n_demos > 0 and (not train_retrieval or not dev_retrieval):
        raise ValueError(f"train_job: n_demos {n_demos} needs the train and dev retrieval files")
    return n_demos


def job_checkpoint_dir(params: dict[str, Any], model_path: str, files: Sequence[str],
                       checkpoint_root: str | os.PathLike[str] | None) -> Path | None:
    """``<checkpoint_root>/<key>`` of the job (the model folder counts among its inputs), or None."""
    if not checkpoint_root:
        return None
    files = list(files) + ([model_path] if os.path.isdir(model_path) else [])
    return Path(checkpoint_root) / checkpoint_key({**params, "model_path": model_path}, files)


def _encode_splits(encoder: Any, train_path: str, dev_path: str, train_retrieval: str | None,
                   dev_retrieval: str | None, n_demos: int, length: int, max_length: int, dev_examples: int,
                   ) -> tuple[list[Encoded], list[Encoded], dict[str, dict[str, int]]]:
    from iclpt.io import read_jsonl

    train_recs = read_jsonl(train_path, required=("id", "input", "target"))
    all_dev = read_jsonl(dev_path, required=("id", "input", "target"))
    dev_recs = all_dev[:dev_examples]
    pool = index_by_id(train_recs, train_path)
    tr_ret = dv_ret = None
    if n_demos > 0:
        tr_ret = load_retrieval(train_retrieval, train_recs, pool, n_demos, train_path, train_path)
        dv_ret = load_retrieval(dev_retrieval, all_dev, pool, n_demos, dev_path, train_path)
    train_ex, train_stats = build_examples(encoder, train_recs, tr_ret, pool, n_demos, length, max_length)
    dev_ex, dev_stats = build_examples(encoder, dev_recs, dv_ret, pool, n_demos, length, max_length)
    return train_ex, dev_ex, {"train": train_stats, "dev": dev_stats}


def load_train_inputs(*, model_path: str, train_path: str, dev_path: str, params: dict[str, Any],
                      train_retrieval: str | None = None, dev_retrieval: str | None = None,
                      checkpoint_root: str | os.PathLike[str] | None = None,
                      log: Callable[[str], None] | None = None) -> TrainInputs:
    """Check the params, load the frozen model and encode the train / dev examples."""
    from iclpt.models.loading import load_model, model_info, resolve_device, resolve_precision, seed_everything
    from iclpt.engine.prompting import Encoder, Template
    from iclpt.engine.soft_prompt import init_prompt

    say = log or (lambda s: None)
    n_demos = train_layout(params, train_retrieval, dev_retrieval)
    cfg = TrainConfig.from_dict(params.get("train"))
    seed, length = int(params["seed"]), int(params["length"])
    pcfg = dict(params.get("prompt") or {})
    device = resolve_device(params.get("device", "cpu"))
    precision = resolve_precision(params.get("precision", "fp32"), device)
    files = [train_path, dev_path] + [f for f in (train_retrieval, dev_retrieval) if f]
    ckpt_dir = job_checkpoint_dir(params, model_path, files, checkpoint_root)

    seed_everything(seed)
    model, tokenizer = load_model(model_path, device=device, precision=precision)
    info = model_info(model)
    max_length = min(cfg.max_length, info["max_positions"]) if info["max_positions"] else cfg.max_length
    encoder = Encoder(tokenizer, Template(params["input_label"], params["output_label"]))
    train_ex, dev_ex, stats = _encode_splits(encoder, train_path, dev_path, train_retrieval, dev_retrieval,
                                             n_demos, length, max_length, cfg.dev_examples)
    say(f"{len(train_ex)} train / {len(dev_ex)} dev examples; truncation {stats['train']} / {stats['dev']}")
    init = init_prompt(model, length, init=pcfg.get("init", "vocab"), seed=seed,
                       init_vocab_size=int(pcfg.get("init_vocab_size", 5000)), init_text=pcfg.get("init_text"),
                       init_file=pcfg.get("init_file"), tokenizer=tokenizer)
    return TrainInputs(cfg=cfg, seed=seed, length=length, n_demos=n_demos, device=device, precision=precision,
                       checkpoint_dir=ckpt_dir, model=model, tokenizer=tokenizer, model_info=info,
                       max_length=max_length, train_examples=train_ex, dev_examples=dev_ex, truncation=stats,
                       init_prompt=init)


def run_training(inputs: TrainInputs, log: Callable[[str], None] | None = None,
                 stop_after: int | None = None) -> TrainOutcome:
    """Dev loss of the initial prompt, then :func:`train_prompt` (resuming from the job's checkpoint)."""
    say = log or (lambda s: None)
    x = inputs
    pad_id = x.tokenizer.pad_token_id
    init_dev = dev_loss(x.model, x.init_prompt.to(x.device), x.dev_examples, x.cfg.batch_size, pad_id, x.device,
                        x.precision)
    say(f"dev loss of the initial prompt: {init_dev:.4f}")
    result = train_prompt(x.model, x.init_prompt, x.train_examples, x.dev_examples, x.cfg, x.seed, pad_id,
                          x.device, x.precision, checkpoint_dir=x.checkpoint_dir, log=say, stop_after=stop_after)
    return TrainOutcome(result=result, initial_dev_loss=init_dev)


def train_meta(inputs: TrainInputs, outcome: TrainOutcome, params: dict[str, Any], model_path: str,
               ) -> dict[str, Any]:
    """The job's ``meta.json`` (``params["method"]`` and ``params["demos"]`` are labels only)."""
    from iclpt.io import provenance

    x, r = inputs, outcome.result
    return {
        "task": params.get("task"), "model": params.get("model"), "model_path": model_path,
        "method": params["method"], "prompt_length": x.length, "demo_source": params.get("demos"),
        "seed": x.seed, "n_demos": x.n_demos, "steps": r.steps, "best_step": r.best_step,
        "best_dev_loss": r.best_dev_loss, "final_dev_loss": r.final_dev_loss,
        "initial_dev_loss": outcome.initial_dev_loss, "resumed_from_step": r.resumed_from,
        "train_seconds": r.seconds, "train_target_tokens": r.train_target_tokens, "device": str(x.device),
        "precision": x.precision, "max_length": x.max_length, "model_info": x.model_info,
        "n_train": len(x.train_examples), "n_dev": len(x.dev_examples), "truncation": x.truncation,
        "checkpoint_key": x.checkpoint_dir.name if x.checkpoint_dir else None,
        "provenance": provenance(params),
    }


def write_train_outputs(out_dir: str | os.PathLike[str], inputs: TrainInputs, outcome: TrainOutcome,
                        params: dict[str, Any], model_path: str) -> dict[str, Any]:
    """Write ``out_dir/{prompt.safetensors, peft/, train_log.jsonl, meta.json}``, drop the checkpoint."""
    from iclpt.io import write_json_atomic, write_jsonl_atomic
    from iclpt.engine.soft_prompt import export_peft, save_prompt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = train_meta(inputs, outcome, params, model_path)
    best = outcome.result.best_prompt
    save_prompt(out / "prompt.safetensors", best,
                {k: meta[k] for k in ("task", "model", "method", "prompt_length", "demo_source", "seed",
                                      "best_step", "best_dev_loss")})
    export_peft(out / "peft", best, inputs.model.config, base_model_name_or_path=model_path)
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
