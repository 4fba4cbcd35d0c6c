"""Where every file of a run lives: the path templates of `results/<run>/` (docs/architecture.md, "Run directory").

`Layout(root)` gives each kind of file from its key (`data(task, split)`, `predictions(run)`, ...); the workflow
(common.smk) builds its targets from it, and its wildcard patterns by passing `"{task}"`-style keys
(`WILDCARDS` for a run). A run's keys are its identity, `iclpt.orchestration.runs.Run` (task, model, method,
length, demos, seed): this module reads those six fields only and imports neither the method nor the task
registry, so report and job code can import it and editing a registry entry leaves their code digests alone.
Paths are strings (Snakemake patterns keep their braces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

#: the fields of a run's identity, in order (iclpt.orchestration.runs.Run, the wildcards of a run folder)
RUN_FIELDS = ("task", "model", "method", "length", "demos", "seed")

#: the files of a prediction folder: the predict rule writes the first, the score rule the other two
PREDICTIONS, METRICS, SCORES = "predictions.jsonl", "metrics.json", "scores.jsonl"
#: the files of a prompt folder (train_prompt's outputs), by output name
PROMPT_FILES = {
    "prompt": "prompt.safetensors",
    "meta": "meta.json",
    "train_log": "train_log.jsonl",
    "peft_config": "peft/adapter_config.json",
    "peft_model": "peft/adapter_model.safetensors",
}


class RunId(Protocol):
    """What a path needs of a run: the fields of `iclpt.orchestration.runs.Run`."""

    @property
    def task(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def length(self) -> int | str: ...
    @property
    def demos(self) -> str: ...
    @property
    def seed(self) -> int | str: ...


class _Wildcards(NamedTuple):
    task: str = "{task}"
    model: str = "{model}"
    method: str = "{method}"
    length: str = "{length}"
    demos: str = "{demos}"
    seed: str = "{seed}"


#: the run whose fields are Snakemake wildcards: `layout.predictions(WILDCARDS)` is the predict rule's output
WILDCARDS: RunId = _Wildcards()


def run_path(run: RunId) -> str:
    """`<task>/<model>/<method>/L<length>/<demos>/s<seed>`: a run's folder in prompts/, predictions/, logs/<stage>/."""
    return f"{run.task}/{run.model}/{run.method}/L{run.length}/{run.demos}/s{run.seed}"


@dataclass(frozen=True)
class Layout:
    """The files of one results folder (`results/<run>`)."""

    root: str

    # ---- data, models, retrieval --------------------------------------------------------------------------------
    def data(self, task: str, split: str) -> str:
        return f"{self.root}/data/{task}/{split}.jsonl"

    def prepare_summary(self, task: str) -> str:
        return f"{self.root}/data/{task}/prepare.json"

    def model_dir(self, model: str) -> str:
        """A built or fetched model's save_pretrained folder."""
        return f"{self.root}/models/{model}"

    def model_file(self, model: str, name: str) -> str:
        return f"{self.model_dir(model)}/{name}"

    def embeddings(self, task: str, encoder: str, split: str) -> str:
        return f"{self.root}/retrieval/{task}/embed/{encoder}/{split}.npy"

    def retrieval(self, task: str, retriever: str, split: str) -> str:
        return f"{self.root}/retrieval/{task}/{retriever}/{split}.jsonl"

    def retrieval_summary(self, task: str, retriever: str) -> str:
        return f"{self.root}/retrieval/{task}/{retriever}/summary.json"

    # ---- runs ---------------------------------------------------------------------------------------------------
    def prompt_dir(self, run: RunId) -> str:
        return f"{self.root}/prompts/{run_path(run)}"

    def prompt_files(self, run: RunId) -> dict[str, str]:
        """{output name: path} of every file train_prompt writes (PROMPT_FILES)."""
        return {k: f"{self.prompt_dir(run)}/{name}" for k, name in PROMPT_FILES.items()}

    def prompt(self, run: RunId) -> str:
        """The trained soft prompt (prompt.safetensors) of a train run."""
        return self.prompt_files(run)["prompt"]

    def prediction_dir(self, run: RunId) -> str:
        return f"{self.root}/predictions/{run_path(run)}"

    def predictions(self, run: RunId) -> str:
        return f"{self.prediction_dir(run)}/{PREDICTIONS}"

    def metrics(self, run: RunId) -> str:
        return f"{self.prediction_dir(run)}/{METRICS}"

    def scores(self, run: RunId) -> str:
        return f"{self.prediction_dir(run)}/{SCORES}"

    def checkpoints(self) -> str:
        """Resumable training state (not a declared output)."""
        return f"{self.root}/.checkpoints"

    # ---- logs and reports ---------------------------------------------------------------------------------------
    def log(self, stage: str, name: str) -> str:
        """`logs/<stage>/<name>.log` (name may hold folders)."""
        return f"{self.root}/logs/{stage}/{name}.log"

    def run_log(self, stage: str, run: RunId) -> str:
        return self.log(stage, run_path(run))

    def table(self, name: str) -> str:
        return f"{self.root}/tables/{name}"

    def figure(self, name: str) -> str:
        return f"{self.root}/figures/{name}"

    def findings(self) -> str:
        return f"{self.root}/findings.md"
