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
  data, so a rerun of the same job resumes and a changed job starts afresh. The folder is removed once the
  outputs are written.
"""

from __future__ import annotations

import hashlib
import json
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

from iclpt.modeling import autocast, target_logits
from iclpt.prompting import IGNORE, Batch, Encoded, make_batch
from iclpt.soft_prompt import assemble_inputs

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


# ---- checkpoints --------------------------------------------------------------------------------
def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 of a data file; for model folders / weights: name, size and mtime of each file (cheap)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    if not p.exists():
        return f"absent:{p}"
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_key(params: dict[str, Any], files: Sequence[str | os.PathLike[str]]) -> str:
    """Hash of the job's parameters and its input files: the name of its checkpoint folder."""
    payload = {"params": params, "files": {str(f): file_fingerprint(f) for f in files}}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


# ---- the loop -----------------------------------------------------------------------------------
def train_prompt(model: torch.nn.Module, init_prompt: torch.Tensor, train_examples: Sequence[Encoded],
                 dev_examples: Sequence[Encoded], cfg: TrainConfig, seed: int, pad_id: int,
                 device: torch.device, precision: str = "fp32", checkpoint_dir: str | os.PathLike[str] | None = None,
                 log: Callable[[str], None] | None = None, stop_after: int | None = None) -> TrainResult:
    """Train the soft prompt on a frozen ``model``; returns the best (by dev loss) and final prompts."""
    say = log or (lambda s: None)
    t0 = time.time()
    for p in model.parameters():
        if p.requires_grad:
            raise ValueError("the base model must be frozen (iclpt.soft_prompt.freeze)")
    prompt = torch.nn.Parameter(init_prompt.detach().clone().float().to(device))
    opt = make_optimizer([prompt], cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    stream = DataStream([len(e.ids) for e in train_examples], cfg.batch_size, seed, cfg.bucket_by_length)

    step = 0
    best_prompt = prompt.detach().clone()
    best_step, best_dev = 0, math.inf
    rows: list[dict[str, Any]] = []
    tokens_seen = 0
    ckpt_path = Path(checkpoint_dir) / "state.pt" if checkpoint_dir else None
    resumed_from = 0
    state = load_checkpoint(ckpt_path) if ckpt_path else None
    if state is not None:
        with torch.no_grad():
            prompt.copy_(state["prompt"].to(device))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        stream.load(state["data"])
        _set_rng_state(state["rng"])
        step = resumed_from = int(state["step"])
        best_prompt = state["best_prompt"].to(device)
        best_step, best_dev = int(state["best_step"]), float(state["best_dev_loss"])
        rows = list(state["log"])
        tokens_seen = int(state.get("tokens", 0))
        say(f"resumed from {ckpt_path} at step {step}")

    model.eval()
    last_dev = rows[-1].get("dev_loss", math.nan) if rows else math.nan
    while step < cfg.max_steps:
        micro = [make_batch([train_examples[i] for i in stream.next()], pad_id) for _ in range(cfg.grad_accum)]
        n_tok = sum(b.n_target for b in micro)
        opt.zero_grad(set_to_none=True)
        loss_total = 0.0
        for b in micro:
            b = b.to(device)
            with autocast(device, precision):
                loss_sum, _ = batch_loss_sum(model, prompt, b)
            loss = loss_sum / max(n_tok, 1)
            loss.backward()
            loss_total += float(loss.detach())
        grad_norm = float(prompt.grad.norm()) if prompt.grad is not None else 0.0
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([prompt], cfg.max_grad_norm)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        step += 1
        tokens_seen += n_tok
        row: dict[str, Any] = {"step": step, "loss": loss_total, "lr": lr, "grad_norm": grad_norm,
                               "target_tokens": n_tok}
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            d = dev_loss(model, prompt.detach(), dev_examples, cfg.batch_size, pad_id, device, precision)
            row["dev_loss"] = d
            last_dev = d
            if d < best_dev or not math.isfinite(best_dev):
                best_dev, best_step = d, step
                best_prompt = prompt.detach().clone()
            say(f"step {step}: loss {loss_total:.4f} dev {d:.4f} (best {best_dev:.4f} @ {best_step})")
        rows.append(row)
        if ckpt_path and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            save_checkpoint(ckpt_path, {
                "step": step, "prompt": prompt.detach().cpu(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "data": stream.state(), "rng": _rng_state(),
                "best_prompt": best_prompt.cpu(), "best_step": best_step, "best_dev_loss": best_dev,
                "log": rows, "tokens": tokens_seen})
        if stop_after is not None and step >= stop_after and step < cfg.max_steps:
            raise TrainingInterrupted(f"stopped after step {step} (stop_after)")

    return TrainResult(best_prompt=best_prompt.detach().cpu(), final_prompt=prompt.detach().cpu(),
                       best_step=best_step, best_dev_loss=best_dev, final_dev_loss=last_dev, steps=step,
                       log=rows, resumed_from=resumed_from, seconds=time.time() - t0,
                       train_target_tokens=tokens_seen)


# ---- the whole job (what the train_prompt rule runs) --------------------------------------------
def build_examples(encoder: Any, records: Sequence[dict[str, Any]], retrieval: dict[str, dict[str, Any]] | None,
                   train_pool: dict[str, dict[str, Any]], n_demos: int, n_virtual: int, max_length: int,
                   with_target: bool = True, max_new_tokens: int = 0, exclude_self: bool = True,
                   ) -> tuple[list[Encoded], dict[str, int]]:
    """Encode records (with their first ``n_demos`` retrieved demos when ``retrieval`` is given)."""
    from iclpt.io import DataError
    from iclpt.prompting import demo_pairs

    out: list[Encoded] = []
    stats = {"n": 0, "demos_dropped": 0, "input_truncated": 0, "target_truncated": 0}
    for r in records:
        demos: list[tuple[str, str]] = []
        meta: dict[str, Any] = {"demo_ids": [], "demo_scores": []}
        if retrieval is not None and n_demos > 0:
            line = retrieval.get(r["id"])
            if line is None:
                raise DataError(f"no retrieval line for example {r['id']!r}")
            demos, ids, ranks = demo_pairs(line["demo_ids"], train_pool, n_demos,
                                           exclude=r["id"] if exclude_self else None)
            scores = line.get("scores") or []
            meta = {"demo_ids": ids, "demo_scores": [scores[k] if k < len(scores) else None for k in ranks]}
        e = encoder.encode(r["input"], demos, target=r["target"] if with_target else None, n_virtual=n_virtual,
                           max_length=max_length, max_new_tokens=max_new_tokens)
        # the demos actually used (after truncation dropped the least similar ones)
        meta = {"demo_ids": meta["demo_ids"][:e.n_demos], "demo_scores": meta["demo_scores"][:e.n_demos]}
        e.meta = meta
        out.append(e)
        stats["n"] += 1
        stats["demos_dropped"] += e.n_demos_dropped
        stats["input_truncated"] += int(e.input_truncated)
        stats["target_truncated"] += int(e.target_truncated)
    return out, stats


def index_by_id(rows: Sequence[dict[str, Any]], what: str) -> dict[str, dict[str, Any]]:
    from iclpt.io import DataError

    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["id"] in out:
            raise DataError(f"{what}: duplicate id {r['id']!r}")
        out[r["id"]] = r
    return out


def train_job(*, model_path: str, train_path: str, dev_path: str, out_dir: str | os.PathLike[str],
              params: dict[str, Any], train_retrieval: str | None = None, dev_retrieval: str | None = None,
              checkpoint_root: str | os.PathLike[str] | None = None, log: Callable[[str], None] | None = None,
              stop_after: int | None = None) -> dict[str, Any]:
    """Train one soft prompt and write ``out_dir/{prompt.safetensors, meta.json, train_log.jsonl, peft/}``.

    ``params``: task, model, method (pt|ipt), length, demos (none|retrieved|random), seed, n_demos,
    input_label, output_label, prompt {init, init_vocab_size, init_text, init_file}, train {TrainConfig},
    device, precision.
    """
    from iclpt.io import provenance, read_jsonl, write_json_atomic, write_jsonl_atomic
    from iclpt.modeling import load_model, model_info, resolve_device, resolve_precision, seed_everything
    from iclpt.prompting import Encoder, Template
    from iclpt.soft_prompt import export_peft, init_prompt, save_prompt

    say = log or (lambda s: None)
    method = params["method"]
    if method not in ("pt", "ipt"):
        raise ValueError(f"train_job: method must be pt or ipt, got {method!r}")
    use_demos = method == "ipt"
    if not use_demos and params.get("demos", "none") != "none":
        raise ValueError(f"pt trains without demos; got demos {params.get('demos')!r}")
    if use_demos and (params.get("demos") == "none" or not train_retrieval or not dev_retrieval):
        raise ValueError("ipt needs demos (retrieved|random) and the train/dev retrieval files")
    cfg = TrainConfig.from_dict(params.get("train"))
    seed = int(params["seed"])
    length = int(params["length"])
    n_demos = int(params.get("n_demos", 1)) if use_demos else 0
    pcfg = dict(params.get("prompt") or {})
    device = resolve_device(params.get("device", "cpu"))
    precision = resolve_precision(params.get("precision", "fp32"), device)

    ckpt_dir = None
    if checkpoint_root:
        files = [train_path, dev_path] + [f for f in (train_retrieval, dev_retrieval) if f]
        if os.path.isdir(model_path):
            files.append(model_path)
        key = checkpoint_key({**params, "model_path": model_path}, files)
        ckpt_dir = Path(checkpoint_root) / key

    seed_everything(seed)
    model, tokenizer = load_model(model_path, device=device, precision=precision)
    info = model_info(model)
    max_length = cfg.max_length
    if info["max_positions"]:
        max_length = min(max_length, info["max_positions"])
    encoder = Encoder(tokenizer, Template(params["input_label"], params["output_label"]))

    train_recs = read_jsonl(train_path, required=("id", "input", "target"))
    dev_recs = read_jsonl(dev_path, required=("id", "input", "target"))[: cfg.dev_examples]
    pool = index_by_id(train_recs, train_path)
    tr_ret = dv_ret = None
    if use_demos:
        tr_ret = index_by_id(read_jsonl(train_retrieval, required=("id", "demo_ids")), str(train_retrieval))
        dv_ret = index_by_id(read_jsonl(dev_retrieval, required=("id", "demo_ids")), str(dev_retrieval))
    train_ex, train_stats = build_examples(encoder, train_recs, tr_ret, pool, n_demos, length, max_length)
    dev_ex, dev_stats = build_examples(encoder, dev_recs, dv_ret, pool, n_demos, length, max_length)
    say(f"{len(train_ex)} train / {len(dev_ex)} dev examples; truncation {train_stats} / {dev_stats}")

    init = init_prompt(model, length, init=pcfg.get("init", "vocab"), seed=seed,
                       init_vocab_size=int(pcfg.get("init_vocab_size", 5000)), init_text=pcfg.get("init_text"),
                       init_file=pcfg.get("init_file"), tokenizer=tokenizer)
    pad_id = tokenizer.pad_token_id
    init_dev = dev_loss(model, init.to(device), dev_ex, cfg.batch_size, pad_id, device, precision)
    say(f"dev loss of the initial prompt: {init_dev:.4f}")
    result = train_prompt(model, init, train_ex, dev_ex, cfg, seed, pad_id, device, precision,
                          checkpoint_dir=ckpt_dir, log=say, stop_after=stop_after)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "task": params.get("task"), "model": params.get("model"), "model_path": model_path, "method": method,
        "prompt_length": length, "demo_source": params.get("demos"), "seed": seed, "n_demos": n_demos,
        "steps": result.steps, "best_step": result.best_step, "best_dev_loss": result.best_dev_loss,
        "final_dev_loss": result.final_dev_loss, "initial_dev_loss": init_dev,
        "resumed_from_step": result.resumed_from, "train_seconds": result.seconds,
        "train_target_tokens": result.train_target_tokens, "device": str(device), "precision": precision,
        "max_length": max_length, "model_info": info, "n_train": len(train_ex), "n_dev": len(dev_ex),
        "truncation": {"train": train_stats, "dev": dev_stats},
        "checkpoint_key": ckpt_dir.name if ckpt_dir else None,
        "provenance": provenance(params),
    }
    save_prompt(out / "prompt.safetensors", result.best_prompt,
                {k: meta[k] for k in ("task", "model", "method", "prompt_length", "demo_source", "seed",
                                      "best_step", "best_dev_loss")})
    export_peft(out / "peft", result.best_prompt, model.config, base_model_name_or_path=model_path)
    write_jsonl_atomic(out / "train_log.jsonl", result.log)
    write_json_atomic(out / "meta.json", meta)
    if ckpt_dir is not None and ckpt_dir.exists():
        import shutil

        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return meta
