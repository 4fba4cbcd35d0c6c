"""A run plan measured on this device: time a few training steps and decoding batches of each configured model
at the config's lengths, count the config's tokens, and estimate every rule's hours (``plan.py --calibrate``).

What is measured (``calibrate``):

- **Tokens.** Per task, the records the jobs will read: the prepared split files
  (``results/<run>/data/<task>/*.jsonl``) when present, else the configured official files through the task
  adapter and ``iclpt.data.prepare.prepare_task`` (the same subsample), else the adapter run over the task's example
  files in ``resources/demo_data`` (length statistics only; the job sizes then come from ``max_examples`` or
  the published split sizes, :data:`PUBLISHED_TEST_SIZES`). They are rendered exactly as the jobs render them
  (:class:`iclpt.engine.prompting.Encoder`, the model's tokenizer, the config's prompt length, ``n_demos``,
  ``max_length``); demos come from BM25 over the train split (retrieved) or a seeded draw (random), a
  stand-in for the run's own retrieval files. A training step costs the mean padded tokens of the batches the
  job's sampler cuts (:func:`iclpt.engine.training.epoch_batches`, bucketing as configured).
- **Throughput.** Per model and task, with and without demos, at the main prompt length: ``steps``
  optimizer steps of the job's own step function (:func:`iclpt.engine.training._train_step`) after one warm-up step,
  padded tokens/s; one dev-loss pass, tokens/s; ``batches`` batches of ``predict.batch_size`` test rows
  through :func:`iclpt.engine.generation.greedy_generate` for each decoding layout (bare query, demos, soft prompt,
  soft prompt + demos), seconds per batch and new tokens/s. Threads: the rule's ``threads`` (capped by cores).
- **Start-up.** Per model: a fresh ``python`` that imports ``snakemake.script`` (what a script job's preamble
  does), the train/predict modules and loads the model; per other rule: ``python`` + ``snakemake.script`` + the
  iclpt modules of its script (:func:`iclpt.orchestration.codeversion.script_modules`); ``embed`` also loads the encoder
  and encodes its split sizes at the measured rate. ``fetch_model`` / ``build_tiny_model``: the time this
  module took to fetch the packaged model into the model cache (recorded beside the cache folder, so a later
  calibration reuses it) or to build the tiny one.

Estimate per job: start-up + steps x step time + dev passes (initial, every ``eval_every`` and the last step) x
dev time (train_prompt); start-up + batches x batch time (predict). Per rule: jobs x seconds x slowdown / slots,
where slots = max(1, cores // threads) is how many such jobs Snakemake runs at once, and the slowdown is
measured (:func:`concurrency_factor`: a matmul probe alone, then ``slots`` copies at once; on a CPU whose cores
share execution units, or that others load, two jobs at once each run slower). The estimate assumes the slots
stay full (no idle time waiting on dependencies; for the demo the sum of its job times over 2 slots is within
2% of its measured wall time). GPU jobs (CUDA device) get no slowdown factor.
A model that cannot be loaded (a hub id without access) leaves its jobs to the config's
``resources.<rule>.gpu_hours_per_job`` guesses, and the output marks them as guesses.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "src"
#: rules whose jobs load a model (their start-up is measured with the model load)
MODEL_RULES = ("train_prompt", "predict")
#: default ``threads`` of each rule when the config sets none (workflow/rules/*.smk: ``res(rule, "threads", d)``)
RULE_THREADS = {"train_prompt": 2, "predict": 2, "embed": 2, "retrieve": 2, "fetch_model": 2}
#: rules whose ``threads:`` is fixed in the rule file (the config cannot change it)
FIXED_THREADS = {"score": 1, "build_tiny_model": 1, "retrieval_summary": 1, "prepare": 1, "download": 1}
#: published test-split sizes (records as the adapters emit them); used only when no data file is readable
PUBLISHED_TEST_SIZES = {"totto": 7700, "dart": 5097, "logic2text": 1092, "spider": 1034, "mtop": 4386}
#: each task's example files in its official format (resources/demo_data; the layout of config/tiny.yaml)
DEMO_FILES = {
    "totto": {"train": "totto/train.jsonl", "dev": "totto/dev.jsonl", "test": "totto/test.jsonl"},
    "dart": {"train": "dart/train.json", "dev": "dart/dev.json", "test": "dart/test.xml"},
    "logic2text": {"train": "logic2text/train_lm.json", "dev": "logic2text/valid.json",
                   "test": "logic2text/test.json"},
    "spider": {"train": "spider/train_spider.json", "dev": "spider/dev.json", "test": "spider/dev.json"},
    "mtop": {"train": "mtop/train.json", "dev": "mtop/dev.json", "test": "mtop/test.json"},
}
SPLITS = ("train", "dev", "test")
LENGTH_SAMPLE = 400  # records per split rendered for the length statistics


# ---- data: the records the jobs read ---------------------------------------------------------------------
@dataclass
class TaskSample:
    """Records of one task for the length statistics, the job sizes, and where both came from."""

    task: str
    records: dict[str, list[dict[str, Any]]]
    counts: dict[str, int]
    source: str


def configured_files(config: Mapping[str, Any], task: str, workdir: Path) -> dict[str, Path]:
    """{split: path} of the task's official files, as workflow/rules/common.smk resolves them."""
    t = config["tasks"][task]
    base = Path(config["download_dir"]) / task if t.get("source") == "download" else Path(config["data_root"])
    base = base if base.is_absolute() else workdir / base
    return {s: base / t["files"][s] for s in SPLITS}


def _subsample_counts(config: Mapping[str, Any], task: str, n_demo: Mapping[str, int]) -> dict[str, int]:
    m = config["tasks"][task].get("max_examples") or {}
    test = m.get("test") or PUBLISHED_TEST_SIZES.get(task, n_demo["test"])
    dev = m.get("dev") or int(config["train"]["dev_examples"])
    train = m.get("train") or n_demo["train"]
    return {"train": int(train), "dev": int(dev), "test": int(test)}


def task_sample(config: Mapping[str, Any], task: str, workdir: Path) -> TaskSample:
    """The task's records: prepared files, else the configured files, else the demo files (statistics only)."""
    from iclpt.data.prepare import prepare_task
    from iclpt.io import read_jsonl

    prepared = {s: workdir / "results" / str(config["run"]) / "data" / task / f"{s}.jsonl" for s in SPLITS}
    if all(p.is_file() for p in prepared.values()):
        recs = {s: read_jsonl(p) for s, p in prepared.items()}
        return TaskSample(task, recs, {s: len(r) for s, r in recs.items()}, "prepared data")
    files = configured_files(config, task, workdir)
    m = config["tasks"][task].get("max_examples") or {}
    seed = int(config.get("data_seed", 0))
    kw = {"missing_database": t["missing_database"]} if "missing_database" in (t := config["tasks"][task]) else {}
    try:
        recs = prepare_task(task, files, m, seed, **kw)
        return TaskSample(task, recs, {s: len(r) for s, r in recs.items()}, "data files (adapter)")
    except Exception:  # noqa: BLE001 - files absent (not downloaded yet) or unreadable: fall back
        pass
    demo = ROOT / "resources" / "demo_data"
    recs = prepare_task(task, {s: demo / p for s, p in DEMO_FILES[task].items()}, {}, seed)
    counts = _subsample_counts(config, task, {s: len(r) for s, r in recs.items()})
    return TaskSample(task, recs, counts, "adapter statistics of resources/demo_data (data not present)")


def demo_indices(queries: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]], n: int, kind: str,
                 seed: int = 0) -> list[list[int]]:
    """``n`` train indices per query: BM25 (``retrieved``) or a seeded draw (``random``), own group excluded."""
    from iclpt.retrieval import bm25_topk, exclusion_lists
    from iclpt.retrieval.retrievers import random_demos

    if n <= 0:
        return [[] for _ in queries]
    ex = exclusion_lists(queries, train)
    k = min(n, len(train) - max((len(e) for e in ex), default=0))
    if k <= 0:
        return [[] for _ in queries]
    if kind == "random":
        return random_demos(len(queries), len(train), k, seed, "calibrate", ex).tolist()
    idx, _ = bm25_topk([q["input"] for q in queries], [t["input"] for t in train], k, ex)
    return idx.tolist()


def render(encoder: Any, queries: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]], n_demos: int,
           demos: str, n_virtual: int, max_length: int, with_target: bool, max_new_tokens: int = 0) -> list[Any]:
    """``iclpt.engine.prompting.Encoded`` of each query in the jobs' layout (``n_demos`` demos, ``n_virtual`` slots)."""
    lists = demo_indices(queries, train, n_demos, demos)
    out = []
    for q, d in zip(queries, lists):
        pairs = [(train[i]["input"], train[i]["target"]) for i in d]
        out.append(encoder.encode(q["input"], pairs, target=q["target"] if with_target else None,
                                  n_virtual=n_virtual, max_length=max_length, max_new_tokens=max_new_tokens))
    return out


def sample_rows(rows: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded sample of at most ``n`` rows (original order kept)."""
    if len(rows) <= n:
        return list(rows)
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]


def step_tokens(lengths: Sequence[int], batch_size: int, n_virtual: int, bucket: bool,
                seed: int = 0) -> float:
    """Mean padded tokens (soft prompt included) of the batches the training sampler cuts from ``lengths``."""
    from iclpt.engine.training import epoch_batches

    batches = epoch_batches(lengths, batch_size, seed, 0, bucket)
    full = [b for b in batches if len(b) == batch_size] or batches
    return sum(len(b) * (max(lengths[i] for i in b) + n_virtual) for b in full) / len(full)


def eval_tokens(lengths: Sequence[int], batch_size: int, n_virtual: int) -> int:
    """Padded tokens of one dev-loss pass (length-sorted batches, as :func:`iclpt.engine.training.dev_loss`)."""
    s = sorted(lengths)
    return sum(len(s[i:i + batch_size]) * (max(s[i:i + batch_size]) + n_virtual)
               for i in range(0, len(s), batch_size))


# ---- models ------------------------------------------------------------------------------------------------
@dataclass
class ModelSource:
    """Where a configured model is loaded from for calibration (``path`` None: it cannot be)."""

    name: str
    path: str | None
    how: str
    fetch_seconds: float | None = None
    error: str | None = None


def _cache_folder(spec: Any, cache_dir: str | Path | None) -> tuple[Path, Path]:
    from iclpt.models.packaged import converted_folder_path, default_cache_dir

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = converted_folder_path(spec, cache)  # keyed by the GGUF: one folder whatever the config calls it
    return folder, folder.with_name(folder.name + ".timing.json")


def recorded_fetch_seconds(spec: Any, cache_dir: str | Path | None = None) -> float | None:
    """The measured seconds of the fetch that made the cache folder of ``spec`` (None if never fetched here)."""
    timing = _cache_folder(spec, cache_dir)[1]
    return json.loads(timing.read_text()).get("fetch_seconds") if timing.is_file() else None


def packaged_folder(spec: Any, cache_dir: str | Path | None = None) -> tuple[Path, float | None]:
    """The converted folder of a PyPI-packaged GGUF (``iclpt.models.packaged``) in the model cache, fetched on
    first use (the same folder the pipeline's fetch_model links from); returns (folder, the fetch's seconds:
    measured now or recorded when it was fetched, else None)."""
    from iclpt.models.packaged import cached_folder_ok, converted_folder

    folder, timing = _cache_folder(spec, cache_dir)
    if cached_folder_ok(folder, spec):
        return folder, recorded_fetch_seconds(spec, cache_dir)
    t0 = time.perf_counter()
    converted_folder(spec, folder.parents[1], spec.name)
    seconds = time.perf_counter() - t0
    timing.write_text(json.dumps({"fetch_seconds": seconds}) + "\n")
    return folder, seconds


def model_source(config: Mapping[str, Any], name: str, workdir: Path, texts: Callable[[], list[str]],
                 tmp: Path, cache_dir: str | Path | None = None) -> ModelSource:
    """The folder to calibrate ``name`` on: the run's own folder when built/fetched already, else a fresh
    tiny build (``build:``), the packaged model's cache folder (``gguf:``, fetched if needed) or the hub id /
    folder of ``path:`` (checked by loading its config)."""
    m = config["models"][name]
    run_dir = workdir / "results" / str(config["run"]) / "models" / name
    try:
        if "path" not in m and (run_dir / "config.json").is_file() and any(run_dir.glob("*.safetensors")):
            secs = None
            if "gguf" in m:
                from iclpt.models.packaged import PackagedGGUF

                secs = recorded_fetch_seconds(PackagedGGUF.from_config(m["gguf"], name), cache_dir)
            return ModelSource(name, str(run_dir), "the run's model folder", fetch_seconds=secs)
        if "build" in m:
            from iclpt.models.tiny import build_tiny_model

            b = dict(m["build"])
            arch = b.pop("architecture")
            out = build_tiny_model(texts(), tmp / name, arch, **b)
            return ModelSource(name, str(out), "built (tiny random)")
        if "gguf" in m:
            from iclpt.models.packaged import PackagedGGUF

            folder, secs = packaged_folder(PackagedGGUF.from_config(m["gguf"], name), cache_dir)
            return ModelSource(name, str(folder), "packaged GGUF (model cache)", fetch_seconds=secs)
        from transformers import AutoConfig

        AutoConfig.from_pretrained(m["path"])
        return ModelSource(name, str(m["path"]), "configured path")
    except Exception as e:  # noqa: BLE001 - no access / no network: the guesses stay
        return ModelSource(name, None, "unavailable", error=" ".join(f"{type(e).__name__}: {e}".split())[:300])


# ---- start-up -------------------------------------------------------------------------------------------
def _timed_python(code: str, env: Mapping[str, str] | None = None, timeout: float = 900) -> float:
    """Wall seconds of a fresh ``python -c code`` (PYTHONPATH = the library), raising on failure."""
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"start-up probe failed: {r.stderr[-1500:]}")
    return dt


def script_startup(modules: Sequence[str]) -> float:
    """Seconds to start a script job: python, ``snakemake.script`` (the preamble), the script's iclpt modules."""
    imports = "".join(f"import {m}\n" for m in ["snakemake.script", *modules])
    return _timed_python(imports)


def model_startup(path: str, device: str, precision: str, threads: int) -> float:
    """Seconds to start a train/predict job: python, its imports, and loading the model."""
    code = ("import snakemake.script\nimport torch\n"
            f"torch.set_num_threads({int(threads)})\n"
            "from iclpt.engine.training import train_job\nfrom iclpt.engine.generation import predict_job\n"
            "from iclpt.models.loading import load_model, resolve_device, resolve_precision\n"
            f"d = resolve_device({device!r})\n"
            f"load_model({path!r}, device=d, precision=resolve_precision({precision!r}, d))\n")
    return _timed_python(code)


_PROBE = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
dt = torch.bfloat16 if sys.argv[2] == "bf16" else torch.float32
w = torch.randn(1536, 576, dtype=dt); big = torch.randn(512, 576, dtype=dt); small = torch.randn(16, 576, dtype=dt)
for _ in range(3):
    big @ w.T; small @ w.T
t0 = time.perf_counter(); n = 0
while time.perf_counter() - t0 < float(sys.argv[3]):
    big @ w.T
    for _ in range(8):
        small @ w.T
    n += 1
print(json.dumps(n / (time.perf_counter() - t0)))
"""


def concurrency_factor(slots: int, threads: int, precision: str, seconds: float = 3.0) -> float:
    """How many times slower a job runs while ``slots`` such jobs run at once on this machine, measured: a
    matmul probe (training- and decoding-sized products, ``threads`` threads) alone, then ``slots`` copies at
    once. It folds in whatever else loads the machine now; 1.0 for a single slot."""
    if slots <= 1:
        return 1.0

    def run(n: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _PROBE, str(threads), precision, str(seconds)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(json.loads(p.communicate()[0].strip().splitlines()[-1])) for p in procs]

    alone = run(1)[0]
    together = run(slots)
    return max(1.0, alone / (sum(together) / len(together)))


def rule_script(rule: str) -> Path:
    return ROOT / "workflow" / "scripts" / f"{rule}.py"


# ---- throughput ----------------------------------------------------------------------------------------
@dataclass
class TrainRate:
    """Measured training speed of one (model, task, layout)."""

    padded_tokens_per_s: float
    target_tokens_per_s: float
    eval_tokens_per_s: float
    steps: int
    seconds: float


@dataclass
class DecodeRate:
    """Measured decoding speed of one (model, task, layout): whole batches of ``rows`` rows."""

    seconds_per_batch: float
    new_tokens_per_s: float
    new_tokens_per_row: float
    batches: int
    rows: int


def measure_train(model: Any, examples: Sequence[Any], dev: Sequence[Any], init: Any, cfg: Any, pad_id: int,
                  device: Any, precision: str, steps: int, n_virtual: int) -> TrainRate:
    """``steps`` optimizer steps of the job's step function after one warm-up step, and one dev-loss pass."""
    from iclpt.engine.training import DataStream, _start_loop, _train_step, dev_loss

    st = _start_loop(model, init, examples, cfg, 0, device)
    twin = DataStream([len(e.ids) for e in examples], cfg.batch_size, 0, cfg.bucket_by_length)
    _train_step(model, st, examples, cfg, pad_id, device, precision)  # warm-up (allocations, kernels)
    for _ in range(cfg.grad_accum):  # the twin stream replays the batches the step draws
        twin.next()
    padded = target = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        for _ in range(cfg.grad_accum):
            b = twin.next()
            padded += len(b) * (max(len(examples[i].ids) for i in b) + n_virtual)
        target += _train_step(model, st, examples, cfg, pad_id, device, precision)["target_tokens"]
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    dev_loss(model, st.prompt.detach(), dev, cfg.batch_size, pad_id, device, precision)
    de = time.perf_counter() - t1
    ev = eval_tokens([len(e.ids) for e in dev], cfg.batch_size, n_virtual)
    return TrainRate(padded / dt, target / dt, ev / max(de, 1e-9), steps, dt)


def measure_decode(model: Any, tokenizer: Any, prompt: Any, rows: Sequence[Sequence[int]], batch_size: int,
                   max_new_tokens: int, device: Any, precision: str, batches: int) -> DecodeRate:
    """``batches`` batches of ``batch_size`` rows through the jobs' greedy decoder (after a short warm-up)."""
    from iclpt.engine.generation import greedy_generate, stop_token_ids

    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    greedy_generate(model, prompt, [rows[0]], 2, pad, stops, device=device, precision=precision)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    new = n_rows = 0
    seconds = 0.0
    done = 0
    for s in range(0, len(order), batch_size):
        if done >= batches:
            break
        batch = [rows[i] for i in order[s:s + batch_size]]
        t0 = time.perf_counter()
        out = greedy_generate(model, prompt, batch, max_new_tokens, pad, stops, device=device, precision=precision)
        seconds += time.perf_counter() - t0
        new += sum(len(o) for o in out)
        n_rows += len(batch)
        done += 1
    per_batch = seconds / done * (batch_size / (n_rows / done))  # a full batch, when the rows were fewer
    return DecodeRate(per_batch, new / seconds, new / n_rows, done, batch_size)


# ---- estimates ------------------------------------------------------------------------------------------
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

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(job_hours=self.job_hours, wall_hours=self.wall_hours, seconds_per_job=self.seconds_per_job,
                 kind=self.kind)
        return d


def n_dev_passes(cfg: Any) -> int:
    """Dev-loss passes of a training job: the initial prompt, every ``eval_every`` steps and the last step."""
    every = max(1, int(cfg.eval_every))
    return 1 + cfg.max_steps // every + (1 if cfg.max_steps % every else 0)


def rule_threads(config: Mapping[str, Any], rule: str, cores: int) -> int:
    """The threads a job of ``rule`` gets (the config's, else the rule's default), scaled down to ``cores``."""
    if rule in FIXED_THREADS:
        t = FIXED_THREADS[rule]
    else:
        table = config.get("resources") or {}
        own, default = table.get(rule) or {}, table.get("default") or {}
        t = int(own.get("threads", default.get("threads", RULE_THREADS.get(rule, 1))))
    return max(1, min(int(t), int(cores)))


def slots(config: Mapping[str, Any], rule: str, cores: int, gpus: int | None) -> int:
    """Jobs of ``rule`` Snakemake runs at once: cores // threads, and at most ``gpus`` for rules that claim one."""
    n = max(1, int(cores) // rule_threads(config, rule, cores))
    table = config.get("resources") or {}
    gpu = (table.get(rule) or {}).get("gpu", (table.get("default") or {}).get("gpu", 0)) or 0
    if gpus is not None and gpu:
        n = max(1, min(n, int(gpus) // int(gpu)))
    return n


# ---- the calibration ----------------------------------------------------------------------------------------
def _python_json(code: str) -> dict[str, Any]:
    """Run ``python -c code`` (PYTHONPATH = the library); its last stdout line is JSON; adds ``wall``."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"probe failed: {r.stderr[-1500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall"] = time.perf_counter() - t0
    return out


def embed_probe(encoder_path: str, texts: Sequence[str], threads: int, device: str) -> tuple[float, float]:
    """(start-up seconds: python + imports + encoder load, sentences/s) of an embed job, measured."""
    code = ("import time, json\nt0 = time.perf_counter()\nimport snakemake.script\n"
            "from iclpt.retrieval import encode_texts, limit_threads, load_encoder\n"
            f"with limit_threads({int(threads)}):\n"
            f"    m = load_encoder({encoder_path!r}, device={device!r})\n"
            "    t1 = time.perf_counter()\n"
            f"    encode_texts(m, {list(texts)[:128]!r})\n"
            "    t2 = time.perf_counter()\n"
            f"print(json.dumps({{'load': t1 - t0, 'encode': t2 - t1, 'n': {min(len(texts), 128)}}}))\n")
    r = _python_json(code)
    startup = r["wall"] - r["encode"]
    return startup, r["n"] / max(r["encode"], 1e-9)


def layout_name(n_demos: int, has_prompt: bool) -> str:
    """The decoding layouts: ``query`` (zero-shot), ``demos`` (ICL), ``prompt`` (PT), ``prompt+demos``."""
    if has_prompt:
        return "prompt+demos" if n_demos else "prompt"
    return "demos" if n_demos else "query"


@dataclass
class ModelCalibration:
    """What was measured for one model, and the seconds of each of its train / predict runs."""

    source: ModelSource
    startup_s: float | None = None
    build_seconds: float | None = None
    train: dict[str, TrainRate] = field(default_factory=dict)
    decode: dict[str, DecodeRate] = field(default_factory=dict)
    train_seconds: dict[Any, float] = field(default_factory=dict)
    predict_seconds: dict[Any, float] = field(default_factory=dict)
    train_tokens: float = 0.0
    predict_tokens: float = 0.0


class _Renderer:
    """Rendered examples of one task for one tokenizer, cached per layout."""

    def __init__(self, config: Mapping[str, Any], sample: TaskSample, tokenizer: Any, max_positions: int | None):
        from iclpt.engine.prompting import Encoder, Template
        from iclpt.data.tasks import get_task

        t = get_task(sample.task)
        self.encoder = Encoder(tokenizer, Template(t.input_label, t.output_label))
        self.max_new = int(config["tasks"][sample.task].get("max_new_tokens") or t.max_new_tokens)
        cap = max_positions or 10**9
        self.train_len = min(int(config["train"]["max_length"]), cap)
        self.predict_len = min(int(config["predict"]["max_length"]), cap)
        pmax = config["predict"].get("max_examples")
        self.n_test = min(sample.counts["test"], int(pmax)) if pmax else sample.counts["test"]
        self.train_pool = sample.records["train"]
        self.splits = {"train": sample_rows(sample.records["train"], LENGTH_SAMPLE),
                       "dev": sample.records["dev"][: int(config["train"]["dev_examples"])],
                       "test": sample_rows(sample.records["test"][: self.n_test], LENGTH_SAMPLE)}
        self._cache: dict[tuple[Any, ...], list[Any]] = {}

    def get(self, split: str, n_demos: int, demos: str, n_virtual: int) -> list[Any]:
        key = (split, n_demos, demos, n_virtual)
        if key not in self._cache:
            train = split != "test"
            self._cache[key] = render(self.encoder, self.splits[split], self.train_pool, n_demos, demos, n_virtual,
                                      self.train_len if train else self.predict_len, with_target=train,
                                      max_new_tokens=0 if train else self.max_new)
        return self._cache[key]


def _run_layout(config: Mapping[str, Any], run: Any) -> tuple[int, str]:
    from iclpt.orchestration.methods import get_method

    return get_method(run.method).n_demos(run.demos, int(config["demos"]["n_demos"])), run.demos


def calibrate_model(config: Mapping[str, Any], src: ModelSource, train_runs: Sequence[Any],
                    predict_runs: Sequence[Any], samples: Mapping[str, TaskSample], cores: int, steps: int,
                    batches: int, say: Callable[[str], None]) -> ModelCalibration:
    """Load the model once; measure training and decoding per task and layout; the seconds of every run."""
    import torch

    from iclpt.models.loading import load_model, max_positions, resolve_device, resolve_precision
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.engine.training import TrainConfig

    assert src.path is not None
    device = resolve_device(config["device"])
    precision = resolve_precision(config["precision"], device)
    cal = ModelCalibration(src)
    t_train = rule_threads(config, "train_prompt", cores)
    t_pred = rule_threads(config, "predict", cores)
    cal.startup_s = model_startup(src.path, str(config["device"]), str(config["precision"]), t_train)
    say(f"  {src.name}: job start-up (python, imports, model load) {cal.startup_s:.1f}s")
    model, tok = load_model(src.path, device=device, precision=precision)
    cfg = TrainConfig.from_dict(config["train"])
    main_len = int(config["prompt"]["length"])
    pad = tok.pad_token_id
    old_threads = torch.get_num_threads()
    try:
        for task in samples:
            rnd = _Renderer(config, samples[task], tok, max_positions(model))
            mine_t = [r for r in train_runs if r.task == task]
            mine_p = [r for r in predict_runs if r.task == task]
            torch.set_num_threads(t_train)
            for nd in sorted({_run_layout(config, r)[0] for r in mine_t}):
                kinds = {_run_layout(config, r)[1] for r in mine_t if _run_layout(config, r)[0] == nd}
                demos = "retrieved" if "retrieved" in kinds else sorted(kinds)[0]
                ex = rnd.get("train", nd, demos, main_len)
                dev = rnd.get("dev", nd, demos, main_len)
                init = init_prompt(model, main_len, "vocab", seed=0)
                rate = measure_train(model, ex, dev, init, cfg, pad, device, precision, steps, main_len)
                cal.train[f"{task}/{'demos' if nd else 'no demos'}"] = rate
                say(f"  {src.name} {task} train ({'demos' if nd else 'no demos'}): "
                    f"{rate.padded_tokens_per_s:.0f} padded tok/s, dev {rate.eval_tokens_per_s:.0f} tok/s")
            for r in mine_t:
                nd, demos = _run_layout(config, r)
                rate = cal.train[f"{task}/{'demos' if nd else 'no demos'}"]
                tl = [len(e.ids) for e in rnd.get("train", nd, demos, r.length)]
                dl = [len(e.ids) for e in rnd.get("dev", nd, demos, r.length)]
                per_step = cfg.grad_accum * step_tokens(tl, cfg.batch_size, r.length, cfg.bucket_by_length)
                dev_tok = eval_tokens(dl, cfg.batch_size, r.length)
                cal.train_seconds[r] = (cal.startup_s + cfg.max_steps * per_step / rate.padded_tokens_per_s
                                        + n_dev_passes(cfg) * dev_tok / rate.eval_tokens_per_s)
                cal.train_tokens += cfg.max_steps * per_step + n_dev_passes(cfg) * dev_tok
            torch.set_num_threads(t_pred)
            bs = int(config["predict"]["batch_size"])
            for r in mine_p:
                nd, demos = _run_layout(config, r)
                name = layout_name(nd, r.length > 0)
                key = f"{task}/{name}"
                if key not in cal.decode:
                    n_virtual = main_len if r.length > 0 else 0
                    rows = [e.ids for e in rnd.get("test", nd, demos, n_virtual)]
                    prompt = init_prompt(model, n_virtual, "vocab", seed=0) if n_virtual else None
                    rate = measure_decode(model, tok, prompt, rows, bs, rnd.max_new, device, precision, batches)
                    cal.decode[key] = rate
                    say(f"  {src.name} {task} decode ({name}): {rate.seconds_per_batch:.1f}s per batch of {bs}, "
                        f"{rate.new_tokens_per_s:.0f} new tok/s")
                rate = cal.decode[key]
                n_batches = math.ceil(rnd.n_test / bs)
                cal.predict_seconds[r] = cal.startup_s + n_batches * rate.seconds_per_batch
                prefill = sum(len(e.ids) for e in rnd.get("test", nd, demos, r.length)) / max(1, len(rnd.splits["test"]))
                cal.predict_tokens += rnd.n_test * (prefill + r.length + rate.new_tokens_per_row)
    finally:
        torch.set_num_threads(old_threads)
        del model
    return cal


def _share(count: int, runs: Sequence[Any]) -> float:
    """Pending jobs of a rule over its runs in the whole DAG (1 unless ``--pending`` dropped some)."""
    return count / len(runs) if runs else 0.0


def calibrate(config: Mapping[str, Any], counts: Mapping[str, int], workdir: Path, cores: int,
              guess: Callable[[str], tuple[float, str]], *, gpus: int | None = None, dag_seconds: float = 0.0,
              steps: int = 2, batches: int = 1, cache_dir: str | Path | None = None, probe_seconds: float = 3.0,
              say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Estimate every rule of ``counts`` (jobs per rule, from the dry run) on this device (module docstring).

    ``config`` is the validated config (schema defaults filled); ``guess(rule)`` the hand-set hours per job and
    where they come from (used where a model cannot be loaded or a rule cannot be measured).
    """
    from iclpt.orchestration import runs as runs_mod
    from iclpt.orchestration.codeversion import script_modules
    from iclpt.models.loading import resolve_device, resolve_precision

    say = say or (lambda s: None)
    workdir = Path(workdir)
    device = resolve_device(config["device"])
    precision = resolve_precision(config["precision"], device)
    plan = runs_mod.plan(config)
    say(f"calibrating on {device} ({precision}), {cores} cores")
    samples = {t: task_sample(config, t, workdir) for t in config["tasks"]}
    for t, s in samples.items():
        say(f"  {t}: {s.source}; jobs read {s.counts}")

    models: dict[str, ModelCalibration] = {}
    with tempfile.TemporaryDirectory(prefix="iclpt-calibrate-") as tmp:
        texts = lambda: [x for s in samples.values() for r in s.records["train"] for x in (r["input"], r["target"])]  # noqa: E731
        for name in config["models"]:
            t0 = time.perf_counter()
            src = model_source(config, name, workdir, texts, Path(tmp), cache_dir)
            if src.how.startswith("built"):
                src.fetch_seconds = time.perf_counter() - t0
            say(f"  model {name}: {src.how}" + (f" ({src.error})" if src.error else f" at {src.path}"))
            if src.path is None:
                models[name] = ModelCalibration(src)
                continue
            mt = [r for r in plan.train if r.model == name]
            mp = [r for r in plan.predict if r.model == name]
            models[name] = calibrate_model(config, src, mt, mp, samples, cores, steps, batches, say)

    rules: list[RuleEstimate] = []
    startup_cache: dict[str, float] = {}
    factors: dict[tuple[int, int], float] = {}
    for rule, n in counts.items():
        est = RuleEstimate(rule, n, rule_threads(config, rule, cores), slots(config, rule, cores, gpus))
        key = (est.slots, est.threads)
        if key not in factors:
            on_gpu = device.type == "cuda" and rule in MODEL_RULES
            factors[key] = 1.0 if on_gpu else concurrency_factor(est.slots, est.threads, precision, probe_seconds)
            if factors[key] > 1.0:
                say(f"  {est.slots} jobs x {est.threads} threads at once: each {factors[key]:.2f}x slower")
        if rule in MODEL_RULES:
            _model_rule(est, rule, plan, models, guess)
        elif rule in ("fetch_model", "build_tiny_model"):
            _made_rule(est, rule, config, models, guess)
        elif rule == "all":
            est.measured_jobs = n
            est.basis.append("no work")
        elif rule == "download":
            per, where = guess(rule)
            est.guessed_jobs, est.guessed_seconds = n, n * per * 3600
            est.basis.append(f"not measured (network); {where}" if per else "not measured (network)")
        elif rule == "embed":
            _embed_rule(est, config, samples, startup_cache, str(device))
        else:
            if rule not in startup_cache:
                startup_cache[rule] = script_startup(script_modules(rule_script(rule)))
            est.measured_jobs, est.measured_seconds = n, n * startup_cache[rule]
            est.basis.append(f"start-up {startup_cache[rule]:.1f}s/job (python, snakemake.script, imports)")
        f = factors[key] if rule not in MODEL_RULES or device.type != "cuda" else 1.0
        if f > 1.0 and est.measured_seconds:
            est.measured_seconds *= f
            est.basis.append(f"x {f:.2f}: {est.slots} such jobs at once (measured)")
        rules.append(est)
    total_job = sum(r.job_hours for r in rules)
    total_wall = sum(r.wall_hours for r in rules) + dag_seconds / 3600
    return {
        "device": str(device), "precision": precision, "cores": int(cores), "gpus": gpus,
        "load_average": list(os.getloadavg()), "dag_seconds": dag_seconds,
        "concurrency": {f"{k[0]} jobs x {k[1]} threads": v for k, v in factors.items()},
        "tasks": {t: {"source": s.source, "counts": s.counts} for t, s in samples.items()},
        "models": {n: _model_summary(m) for n, m in models.items()},
        "rules": [r.as_dict() for r in rules],
        "total_job_hours": total_job, "total_wall_hours": total_wall,
        "guessed_rules": [r.rule for r in rules if r.guessed_jobs],
    }


def _model_rule(est: RuleEstimate, rule: str, plan: Any, models: Mapping[str, ModelCalibration],
                guess: Callable[[str], tuple[float, str]]) -> None:
    runs = plan.train if rule == "train_prompt" else plan.predict
    share = _share(est.jobs, runs)
    per_guess, where = guess(rule)
    for name, cal in models.items():
        mine = [r for r in runs if r.model == name]
        if not mine:
            continue
        secs = cal.train_seconds if rule == "train_prompt" else cal.predict_seconds
        if cal.source.path is None:
            est.guessed_jobs += round(len(mine) * share)
            est.guessed_seconds += len(mine) * share * per_guess * 3600
            est.basis.append(f"{name}: model not loadable; " + (f"guess {per_guess:g} h/job ({where})" if per_guess
                                                                  else "no guess in the config (counted 0 h)"))
            continue
        est.measured_jobs += round(len(mine) * share)
        est.measured_seconds += share * sum(secs[r] for r in mine)
        rates = cal.train if rule == "train_prompt" else cal.decode
        if rule == "train_prompt":
            what = ", ".join(f"{k} {v.padded_tokens_per_s:.0f}" for k, v in rates.items())
            est.basis.append(f"{name}: padded tok/s {what}; start-up {cal.startup_s:.1f}s")
        else:
            what = ", ".join(f"{k} {v.seconds_per_batch:.1f}s" for k, v in rates.items())
            est.basis.append(f"{name}: s/batch {what}; start-up {cal.startup_s:.1f}s")


def _made_rule(est: RuleEstimate, rule: str, config: Mapping[str, Any], models: Mapping[str, ModelCalibration],
               guess: Callable[[str], tuple[float, str]]) -> None:
    key = "gguf" if rule == "fetch_model" else "build"
    names = [n for n in config["models"] if key in config["models"][n]]
    share = est.jobs / len(names) if names else 0.0
    per_guess, where = guess(rule)
    for n in names:
        secs = models[n].source.fetch_seconds if n in models else None
        if secs is None:
            est.guessed_jobs += round(share)
            est.guessed_seconds += share * per_guess * 3600
            est.basis.append(f"{n}: not timed here; " + (f"guess {per_guess:g} h ({where})" if per_guess else "no estimate"))
        else:
            est.measured_jobs += round(share)
            est.measured_seconds += share * secs
            est.basis.append(f"{n}: {secs:.0f}s, measured when calibration fetched / built it")


def _embed_rule(est: RuleEstimate, config: Mapping[str, Any], samples: Mapping[str, TaskSample],
                cache: dict[str, float], device: str) -> None:
    texts = [r["input"] for s in samples.values() for r in s.records["train"][:128]]
    try:
        startup, rate = embed_probe(str(config["retrieval"]["encoder_path"]), texts, est.threads, device)
    except Exception as e:  # noqa: BLE001 - encoder unavailable: start-up of the script only
        from iclpt.orchestration.codeversion import script_modules

        s = cache.setdefault("embed", script_startup(script_modules(rule_script("embed"))))
        est.measured_jobs, est.measured_seconds = est.jobs, est.jobs * s
        est.basis.append(f"start-up {s:.1f}s/job; encoder not loadable ({type(e).__name__})")
        return
    per_split = [c for s in samples.values() for c in s.counts.values()]
    mean_n = sum(per_split) / max(1, len(per_split))
    per_job = startup + mean_n / rate
    est.measured_jobs, est.measured_seconds = est.jobs, est.jobs * per_job
    est.basis.append(f"start-up + encoder load {startup:.1f}s, {rate:.0f} sentences/s, {mean_n:.0f} per job")


def _model_summary(m: ModelCalibration) -> dict[str, Any]:
    return {
        "source": asdict(m.source), "startup_s": m.startup_s,
        "train": {k: asdict(v) for k, v in m.train.items()},
        "decode": {k: asdict(v) for k, v in m.decode.items()},
        "train_tokens": m.train_tokens, "predict_tokens": m.predict_tokens,
        "train_runs": {"/".join(map(str, r)): v for r, v in m.train_seconds.items()},
        "predict_runs": {"/".join(map(str, r)): v for r, v in m.predict_seconds.items()},
    }


def _human(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 2 else f"{hours:.1f} h"


def format_calibrated(result: Mapping[str, Any], title: str) -> str:
    """The calibrated plan as a table: per rule jobs, threads / slots, seconds per job, hours, what it rests on."""
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
