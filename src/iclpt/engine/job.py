"""The set-up a training and a decoding job share: check the demo layout, load the frozen model, encode the splits.

A job names what it reads (:class:`JobInputs`: its splits, the train split demos come from, a trained soft
prompt or the length of one still to train, the token budget); :func:`load_job` seeds the RNGs, loads the model
on the job's device and precision, clamps the budget to the model's context once, and encodes every split
through :func:`iclpt.engine.prompting.build_examples`. The result (:class:`Job`) is all that
:mod:`iclpt.engine.training` and :mod:`iclpt.engine.generation` need from the job's files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from iclpt.engine.prompting import Encoded, Encoder, build_examples, demo_count, index_by_id, load_retrieval

#: the fields a split's records need: training rows (input and target) and decoding rows (input and references)
TRAIN_FIELDS = ("id", "input", "target")
TEST_FIELDS = ("id", "input", "references")


def demo_layout(params: Mapping[str, Any], what: str, demo_files: Mapping[str, str | None]) -> int:
    """``n_demos`` of the job (:func:`iclpt.engine.prompting.demo_count`): > 0 needs every file of
    ``demo_files`` ({description: path}), 0 takes none of them."""
    n = demo_count(dict(params), what)
    given = [name for name, path in demo_files.items() if path]
    if n == 0 and given:
        raise ValueError(f"{what}: n_demos 0 runs without demos; drop {' and '.join(given)}")
    if n > 0 and len(given) < len(demo_files):
        raise ValueError(f"{what}: n_demos {n} needs {' and '.join(demo_files)}")
    return n


@dataclass(frozen=True)
class SplitSpec:
    """One split a job encodes: its file, its retrieval file (with demos), how many records it keeps (the first
    ``limit``; None: all), whether rows carry their target (training) or leave room for generation (decoding),
    and whether a query's own id is skipped among its demos."""

    path: str
    retrieval: str | None = None
    limit: int | None = None
    with_target: bool = True
    exclude_self: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        return TRAIN_FIELDS if self.with_target else TEST_FIELDS


@dataclass(frozen=True)
class JobInputs:
    """What a job reads. ``n_virtual`` is the length of a soft prompt still to train; a ``prompt_path`` (a trained
    prompt, loaded and checked against ``params["length"]``) sets it instead. ``max_length`` is the token budget
    asked for (clamped to the model's context), ``max_new_tokens`` the room decoding rows leave."""

    splits: Mapping[str, SplitSpec]
    n_demos: int
    train_path: str | None = None
    prompt_path: str | None = None
    n_virtual: int = 0
    max_length: int = 1024
    max_new_tokens: int = 0


@dataclass
class EncodedSplit:
    """A split's records (after ``limit``), their encoded rows and the truncation counts."""

    records: list[dict[str, Any]]
    examples: list[Encoded]
    stats: dict[str, int]


@dataclass
class Job:
    """A loaded job: the frozen model and tokenizer on the job's device, its precision, the encoder, the token
    budget after the model's context, the soft prompt read from a file (None if none) and the encoded splits."""

    inputs: JobInputs
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    precision: str
    encoder: Encoder
    max_length: int
    prompt: torch.Tensor | None
    splits: dict[str, EncodedSplit] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def prompt_length(self) -> int:
        return 0 if self.prompt is None else int(self.prompt.shape[0])

    def examples(self, split: str) -> list[Encoded]:
        return self.splits[split].examples

    def ran_on(self) -> dict[str, Any]:
        """What the job's outputs record of where it ran: device, GPU name and compute capability (CUDA),
        CUDA_VISIBLE_DEVICES, and the precision it actually used (:func:`iclpt.devices.describe_device`)."""
        from iclpt.devices import describe_device

        return {**describe_device(self.device), "precision": self.precision}


def clamp_max_length(max_length: int, model: torch.nn.Module) -> int:
    """The token budget within the model's context (models without a fixed one keep ``max_length``)."""
    from iclpt.models.loading import max_positions

    mp = max_positions(model)
    return min(int(max_length), mp) if mp else int(max_length)


def load_job_prompt(prompt_path: str | None, model: torch.nn.Module,
                    params: Mapping[str, Any]) -> torch.Tensor | None:
    """The soft prompt at ``prompt_path`` (checked against the model and ``params["length"]``), or None."""
    from iclpt.engine.soft_prompt import load_prompt

    if not prompt_path:
        return None
    length = int(params["length"]) if params.get("length") is not None else None
    prompt, _ = load_prompt(prompt_path, hidden_size=int(model.get_input_embeddings().weight.shape[1]),
                            length=length)
    return prompt


def load_job(model_path: str, params: Mapping[str, Any], inputs: JobInputs) -> Job:
    """Seed, load the frozen model (and the prompt file, if any) and encode every split of ``inputs``."""
    from iclpt.engine.prompting import Template
    from iclpt.models.loading import load_model, resolve_device, resolve_precision, seed_everything

    device = resolve_device(params.get("device", "cpu"))
    precision = resolve_precision(params.get("precision", "fp32"), device)
    seed_everything(int(params.get("seed", 0)), device=device)
    model, tokenizer = load_model(model_path, device=device, precision=precision)
    job = Job(inputs=inputs, model=model, tokenizer=tokenizer, device=device, precision=precision,
              encoder=Encoder(tokenizer, Template(params["input_label"], params["output_label"])),
              max_length=clamp_max_length(inputs.max_length, model),
              prompt=load_job_prompt(inputs.prompt_path, model, params))
    job.splits = encode_splits(job)
    return job


def encode_splits(job: Job) -> dict[str, EncodedSplit]:
    """Every split of the job encoded in its layout (demos from the train split when ``n_demos`` > 0)."""
    x = job.inputs
    read = _reader()
    pool = index_by_id(read(x.train_path, TRAIN_FIELDS), x.train_path) if x.train_path else {}
    n_virtual = job.prompt_length if job.prompt is not None else x.n_virtual
    return {name: _encode(job, spec, read(spec.path, spec.fields), pool, n_virtual)
            for name, spec in x.splits.items()}


def _encode(job: Job, spec: SplitSpec, records: list[dict[str, Any]], pool: dict[str, dict[str, Any]],
            n_virtual: int) -> EncodedSplit:
    x = job.inputs
    kept = records if spec.limit is None else records[: spec.limit]
    retrieval = None
    if x.n_demos > 0:
        retrieval = load_retrieval(str(spec.retrieval), records, pool, x.n_demos, str(spec.path), str(x.train_path),
                                   exclude_self=spec.exclude_self)
    examples, stats = build_examples(job.encoder, kept, retrieval, pool, x.n_demos, n_virtual, job.max_length,
                                     with_target=spec.with_target,
                                     max_new_tokens=0 if spec.with_target else x.max_new_tokens,
                                     exclude_self=spec.exclude_self)
    return EncodedSplit(kept, examples, stats)


def _reader() -> Callable[[str, tuple[str, ...]], list[dict[str, Any]]]:
    """``read_jsonl`` that reads a file once per job (the train split is also the demo pool)."""
    from iclpt.io import read_jsonl

    seen: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}

    def read(path: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
        key = (str(path), fields)
        if key not in seen:
            seen[key] = read_jsonl(path, required=fields)
        return seen[key]

    return read
