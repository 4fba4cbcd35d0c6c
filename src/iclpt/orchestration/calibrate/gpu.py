"""The GPU model of a job: FLOPs and bytes of every training, decoding and embedding job of a config, turned into
minutes per GPU kind; the resource requests (``runtime``, ``mem_mb``, ``gpu_hours_per_job``) that follow.

Where no GPU can be measured (the paper's models are hub ids, and no GPU was available where this was written),
``make plan`` estimates from arithmetic and states every assumption (:data:`ASSUMPTIONS`):

- a job's tokens: each task's records (prepared data, else the configured files, else the adapter over
  ``resources/demo_data`` with the published split sizes; :func:`iclpt.orchestration.calibrate.workload.task_sample`)
  at :data:`CHARS_PER_TOKEN` characters a token, the template's labels, ``n_demos`` demos a row, the soft prompt,
  capped at ``max_length``;
- a model's shape: its ``config.json`` where readable (a fetched, built or local folder), else the published shape
  of the hub id (:data:`PUBLISHED_SHAPES`);
- training (frozen base, gradients to the prompt only): per token ``4 N`` (forward ``2 N``, backward to the inputs
  ``2 N``; no weight gradients), attention ``6 L T d`` per token (forward ``2 L T d``, backward twice that), the LM
  head on the target tokens only (``4 V d`` each); a dev pass of ``dev_examples`` rows every ``eval_every`` steps and
  at step 0 (forward only). At :data:`TRAIN_MFU` of the GPU's dense bf16 / fp16 peak (the math attention kernel of
  deterministic training included);
- decoding (batch ``predict.batch_size``, the budget ``max_new_tokens`` every row): the prefill at
  :data:`TRAIN_MFU` of peak, each new-token step the larger of its FLOPs and one read of the weights at
  :data:`BANDWIDTH_EFFICIENCY` of the GPU's memory bandwidth;
- :data:`JOB_OVERHEAD_S` seconds a job for start-up (python, CUDA, the model read from local disk).

``make test-gpu`` prints the measured seconds of a paper-size training step: where it differs from this model's
(:func:`train_step_seconds`), the MFU assumption is the one to revise.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: dense bf16 (fp16 where the GPU has no bf16) tensor-core peak, TFLOP/s, and memory bandwidth, TB/s (vendor specs)
GPU_KINDS: dict[str, tuple[float, float]] = {
    "H100-SXM": (989.0, 3.35),
    "A100-80GB": (312.0, 2.04),
    "L40S": (362.0, 0.86),
    "V100": (125.0, 0.90),  # fp16 (no native bf16: precision auto picks fp16 there)
}
#: the GPU kind the paper config's resource requests are computed for (a common cluster GPU; H100s are ~3x faster)
REQUEST_KIND = "A100-80GB"
CHARS_PER_TOKEN = 3.5
TRAIN_MFU = 0.30
BANDWIDTH_EFFICIENCY = 0.5
JOB_OVERHEAD_S = 60.0
#: runtime request = ceil to 5 min of (SAFETY x the longest a job of the rule can take + 5 min): its rows all at
#: max_length, whatever the data (the lengths above come from whatever data are present when the plan runs)
SAFETY = 2.0
#: host memory of a GPU job besides the mapped checkpoint: python, torch, CUDA libraries and context, the data
HOST_BASE_MB = 5000
ASSUMPTIONS = (f"{CHARS_PER_TOKEN} characters a token; training at {TRAIN_MFU:.0%} of the GPU's dense bf16/fp16 "
               f"peak, forward 2N + input-gradient backward 2N FLOPs a token (frozen weights) + attention; decoding "
               f"steps at the larger of their FLOPs and a read of the weights at {BANDWIDTH_EFFICIENCY:.0%} of the "
               f"memory bandwidth, every row decoding its whole budget; {JOB_OVERHEAD_S:.0f} s start-up a job; "
               f"requests: runtime {SAFETY:g}x the longest a job can take (every row at max_length) + 5 min on "
               f"{REQUEST_KIND}, mem_mb {HOST_BASE_MB} MB + the checkpoint file (mapped while it loads onto the GPU)")


@dataclass(frozen=True)
class Shape:
    """What the FLOPs depend on: layers, width, vocabulary, parameters of the blocks (without embeddings), the
    checkpoint's size on disk (bytes), where the shape came from."""

    layers: int
    hidden: int
    vocab: int
    body_params: float
    checkpoint_bytes: float
    source: str

    @property
    def weight_bytes(self) -> float:
        """The weights a decoding step reads (2 bytes a parameter: bf16 / fp16 matmuls)."""
        return 2.0 * (self.body_params + self.vocab * self.hidden)


#: published shapes of the paper's hub models: (layers, hidden, vocab, body parameters, checkpoint bytes)
PUBLISHED_SHAPES: dict[str, tuple[int, int, int, float, float]] = {
    "bigscience/bloom-1b1": (24, 1536, 250880, 24 * 12 * 1536**2, 2.13e9),
    "facebook/opt-1.3b": (24, 2048, 50272, 24 * 12 * 2048**2, 2.63e9),
    "openai-community/gpt2-xl": (48, 1600, 50257, 48 * 12 * 1600**2, 6.43e9),
    "gpt2-xl": (48, 1600, 50257, 48 * 12 * 1600**2, 6.43e9),
    "sentence-transformers/all-MiniLM-L6-v2": (6, 384, 30522, 6 * 12 * 384**2, 0.09e9),
}


def shape_from_config(cfg: Mapping[str, Any], checkpoint_bytes: float, source: str) -> Shape:
    c = dict(cfg.get("text_config") or cfg)
    layers = int(c.get("num_hidden_layers") or c.get("n_layer") or c.get("num_layers"))
    hidden = int(c.get("hidden_size") or c.get("n_embd") or c.get("d_model"))
    ffn = int(c.get("intermediate_size") or c.get("ffn_dim") or c.get("n_inner") or 4 * hidden)
    vocab = int(c.get("vocab_size"))
    return Shape(layers, hidden, vocab, layers * (4 * hidden**2 + 2 * hidden * ffn), checkpoint_bytes, source)


def model_shape(config: Mapping[str, Any], name: str, workdir: Path) -> Shape | None:
    """The shape of a configured model: its folder's config.json (the run's fetched / built folder, or a local
    ``path:``), else the published shape of its hub id; None when neither is known."""
    m = config["models"][name]
    folders = [workdir / "results" / str(config["run"]) / "models" / name]
    if "path" in m:
        folders.insert(0, Path(str(m["path"])).expanduser())
    for folder in folders:
        cfg = folder / "config.json"
        if cfg.is_file():
            size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) or sum(
                f.stat().st_size for f in folder.glob("*.bin"))
            return shape_from_config(json.loads(cfg.read_text(encoding="utf-8")), size, f"{cfg}")
    if "path" in m and str(m["path"]) in PUBLISHED_SHAPES:
        layers, hidden, vocab, body, ckpt = PUBLISHED_SHAPES[str(m["path"])]
        return Shape(layers, hidden, vocab, body, ckpt, f"published shape of {m['path']}")
    return None


@dataclass(frozen=True)
class TaskTokens:
    """Mean tokens of a task's input and target (template labels included), its split sizes, decoding budget."""

    input: float
    target: float
    counts: Mapping[str, int]
    max_new: int
    source: str


def task_tokens(config: Mapping[str, Any], task: str, workdir: Path) -> TaskTokens:
    from iclpt.data.tasks import get_task
    from iclpt.orchestration.calibrate.workload import task_sample

    smp = task_sample(config, task, workdir)
    t = get_task(task)
    rows = smp.records["train"] or smp.records["test"]
    label = (len(t.input_label) + len(t.output_label) + 6) / CHARS_PER_TOKEN
    inp = sum(len(str(r["input"])) for r in rows) / max(1, len(rows)) / CHARS_PER_TOKEN + label
    tgt = sum(len(str(r["target"])) for r in rows) / max(1, len(rows)) / CHARS_PER_TOKEN + 1
    max_new = int(config["tasks"][task].get("max_new_tokens") or t.max_new_tokens)
    return TaskTokens(inp, tgt, dict(smp.counts), max_new, smp.source)


# ---- FLOPs and seconds of one job -------------------------------------------------------------------------------
def _peak(kind: str) -> tuple[float, float]:
    tflops, tbs = GPU_KINDS[kind]
    return tflops * 1e12, tbs * 1e12


def train_step_seconds(shape: Shape, batch: int, tokens: float, targets: float, kind: str) -> float:
    """One optimizer step: ``batch`` rows of ``tokens`` tokens (prompt included), ``targets`` target tokens each."""
    flops = batch * (4 * shape.body_params * tokens + 6 * shape.layers * tokens**2 * shape.hidden
                     + 4 * shape.vocab * shape.hidden * targets)
    return flops / (_peak(kind)[0] * TRAIN_MFU)


def forward_seconds(shape: Shape, rows: float, tokens: float, head_tokens: float, kind: str) -> float:
    flops = rows * (2 * shape.body_params * tokens + 2 * shape.layers * tokens**2 * shape.hidden
                    + 2 * shape.vocab * shape.hidden * head_tokens)
    return flops / (_peak(kind)[0] * TRAIN_MFU)


def row_tokens(tok: TaskTokens, n_demos: int, n_virtual: int, cap: int, with_target: bool,
               full: bool = False) -> tuple[float, float]:
    """(tokens of a row, of them target tokens) in the layout of a job; ``full``: every row at the cap."""
    target = tok.target if with_target else 0.0
    if full:
        return float(cap), target
    return min(cap, n_virtual + n_demos * (tok.input + tok.target) + tok.input + target), target


def train_job_seconds(shape: Shape, tok: TaskTokens, config: Mapping[str, Any], n_demos: int, n_virtual: int,
                      steps: int, kind: str, full: bool = False) -> float:
    t = config["train"]
    tokens, target = row_tokens(tok, n_demos, n_virtual, int(t["max_length"]), True, full)
    batch = int(t["batch_size"]) * int(t.get("grad_accum", 1))
    n_evals = (steps // int(t["eval_every"]) + 1 + (steps % int(t["eval_every"]) > 0)) if steps else 0
    dev = min(int(t["dev_examples"]), tok.counts.get("dev", int(t["dev_examples"])))
    return (JOB_OVERHEAD_S + steps * train_step_seconds(shape, batch, tokens, target, kind)
            + n_evals * forward_seconds(shape, dev, tokens, target, kind))


def predict_job_seconds(shape: Shape, tok: TaskTokens, config: Mapping[str, Any], n_demos: int, n_virtual: int,
                        kind: str, full: bool = False) -> float:
    p = config["predict"]
    rows = tok.counts["test"] if not p.get("max_examples") else min(tok.counts["test"], int(p["max_examples"]))
    tokens, _ = row_tokens(tok, n_demos, n_virtual, int(p["max_length"]) - tok.max_new, False, full)
    batch = int(p["batch_size"])
    prefill = forward_seconds(shape, rows, tokens, 1, kind)
    flops, bw = _peak(kind)
    step_flops = batch * (2 * shape.body_params + 2 * shape.vocab * shape.hidden
                          + 4 * shape.layers * (tokens + tok.max_new / 2) * shape.hidden)
    step = max(step_flops / (flops * TRAIN_MFU), shape.weight_bytes / (bw * BANDWIDTH_EFFICIENCY))
    return JOB_OVERHEAD_S + prefill + math.ceil(rows / batch) * tok.max_new * step


def embed_job_seconds(shape: Shape, tok: TaskTokens, split: str, kind: str, full: bool = False) -> float:
    tokens = 256.0 if full else min(256.0, tok.input)  # the encoder truncates at 256 word pieces
    return JOB_OVERHEAD_S + forward_seconds(shape, tok.counts.get(split, 0), tokens, 0, kind)


# ---- the plan -------------------------------------------------------------------------------------------------
@dataclass
class RuleGPU:
    """One rule's jobs on each GPU kind: jobs, seconds per job (mean, max), GPU-hours; ``bound``: the longest a job
    can take (every row at max_length), what its runtime request covers."""

    rule: str
    jobs: int
    seconds: dict[str, list[float]]
    notes: list[str]
    bound: dict[str, float] = field(default_factory=dict)

    def add(self, job: Callable[[str, bool], float]) -> None:
        self.jobs += 1
        for k in self.seconds:
            self.seconds[k].append(job(k, False))
            self.bound[k] = max(self.bound.get(k, 0.0), job(k, True))

    def hours(self, kind: str) -> float:
        return sum(self.seconds[kind]) / 3600

    def mean_minutes(self, kind: str) -> float:
        return sum(self.seconds[kind]) / max(1, len(self.seconds[kind])) / 60

    def max_minutes(self, kind: str) -> float:
        return max(self.seconds[kind], default=0.0) / 60


def gpu_plan(config: Mapping[str, Any], workdir: Path) -> dict[str, RuleGPU]:
    """Per GPU rule of the config (train_prompt, predict, embed), every job's seconds on every GPU kind."""
    from iclpt.orchestration.methods import get_method
    from iclpt.orchestration.runs import plan

    runs = plan(config)
    shapes = {m: model_shape(config, m, workdir) for m in config["models"]}
    tokens = {t: task_tokens(config, t, workdir) for t in config["tasks"]}
    n_conf = int(config["demos"]["n_demos"])
    out = {r: RuleGPU(r, 0, {k: [] for k in GPU_KINDS}, []) for r in ("train_prompt", "predict", "embed")}
    for r in runs.train:
        m, shape, tok = get_method(r.method), shapes[r.model], tokens[r.task]
        steps = int(config["train"]["max_steps"]) if m.train_steps is None else int(m.train_steps)
        if shape is not None:
            out["train_prompt"].add(functools.partial(_train, shape, tok, config, m.n_demos(r.demos, n_conf),
                                                      r.length, steps))
    for r in runs.predict:
        m, shape, tok = get_method(r.method), shapes[r.model], tokens[r.task]
        if shape is not None:
            out["predict"].add(functools.partial(_predict, shape, tok, config, m.n_demos(r.demos, n_conf),
                                                 r.length))
    enc = str(config["retrieval"]["encoder_path"])
    enc_shape = PUBLISHED_SHAPES.get(enc) or PUBLISHED_SHAPES["sentence-transformers/all-MiniLM-L6-v2"]
    es = Shape(*enc_shape, source=f"published shape of {enc}")
    for t in config["tasks"]:
        for split in ("train", "dev", "test"):
            out["embed"].add(functools.partial(_embed, es, tokens[t], split))
    for name, shape in shapes.items():
        if shape is None:
            out["train_prompt"].notes.append(f"{name}: shape unknown (its jobs are left out)")
            continue
        n = (shape.body_params + shape.vocab * shape.hidden) / 1e9
        out["train_prompt"].notes.append(f"{name}: {shape.layers} layers x {shape.hidden}, {n:.2f}B parameters "
                                         f"({shape.source})")
    for t, tok in tokens.items():
        out["predict"].notes.append(f"{t}: {tok.input:.0f} input + {tok.target:.0f} target tokens a row, "
                                    f"{tok.counts['test']} test rows, budget {tok.max_new} ({tok.source})")
    return out


def _train(shape, tok, config, n_demos, n_virtual, steps, kind, full):
    return train_job_seconds(shape, tok, config, n_demos, n_virtual, steps, kind, full)


def _predict(shape, tok, config, n_demos, n_virtual, kind, full):
    return predict_job_seconds(shape, tok, config, n_demos, n_virtual, kind, full)


def _embed(shape, tok, split, kind, full):
    return embed_job_seconds(shape, tok, split, kind, full)


def suggested_resources(config: Mapping[str, Any], rules: Mapping[str, RuleGPU], workdir: Path,
                        kind: str = REQUEST_KIND) -> dict[str, dict[str, Any]]:
    """``resources.<rule>`` requests from the model: runtime (minutes) and GPU-hours a job on ``kind``, mem_mb of
    the host (the largest checkpoint a job of the rule maps while loading)."""
    ckpt = max((s.checkpoint_bytes for s in (model_shape(config, m, workdir) for m in config["models"]) if s),
               default=0.0)
    out = {}
    for name, r in rules.items():
        if not r.jobs:
            continue
        runtime = 5 * math.ceil((SAFETY * r.bound[kind] / 60 + 5) / 5)
        mem = HOST_BASE_MB + (0 if name == "embed" else ckpt / 1e6)
        out[name] = {"runtime": int(runtime), "mem_mb": int(1000 * math.ceil(mem / 1000)),
                     "gpu_hours_per_job": round(r.mean_minutes(kind) / 60, 3)}
    return out


def format_gpu_plan(rules: Mapping[str, RuleGPU], suggested: Mapping[str, Mapping[str, Any]]) -> str:
    kinds = list(GPU_KINDS)
    lines = ["", "GPU model (arithmetic, nothing measured on a GPU): minutes a job (mean / longest) and GPU-hours",
             f"{'rule':<14}{'jobs':>6}" + "".join(f"{k:>22}" for k in kinds)]
    total = dict.fromkeys(kinds, 0.0)
    for r in rules.values():
        if not r.jobs:
            continue
        cells = "".join(f"{f'{r.mean_minutes(k):.1f}/{r.max_minutes(k):.1f} m {r.hours(k):.1f} h':>22}" for k in kinds)
        lines.append(f"{r.rule:<14}{r.jobs:>6}{cells}")
        for k in kinds:
            total[k] += r.hours(k)
    lines.append(f"{'total GPU-h':<20}" + "".join(f"{total[k]:>22.1f}" for k in kinds))
    lines.append("longest a job can take (every row at max_length), minutes: " + "; ".join(
        f"{r.rule} " + ", ".join(f"{k} {r.bound[k] / 60:.1f}" for k in kinds) for r in rules.values() if r.jobs))
    lines.append(f"requests ({REQUEST_KIND}): " + "; ".join(
        f"{n}: runtime {s['runtime']}, mem_mb {s['mem_mb']}, gpu_hours_per_job {s['gpu_hours_per_job']}"
        for n, s in suggested.items()))
    lines.append("assumptions: " + ASSUMPTIONS)
    for r in rules.values():
        lines += [f"  {note}" for note in r.notes]
    return "\n".join(lines)
