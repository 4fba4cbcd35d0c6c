"""What the workflow says of each rule, and which measurement applies to its jobs.

:class:`RuleFacts` is read from the parsed workflow (``workflow/scripts/plan.py``: Snakemake's API over the
Snakefile and ``workflow/rules/*.smk`` with the run's config), never kept here: a rule's threads and ``gpu``
resource for this config, its script, its param names and its ``model`` wildcard constraint. :func:`job_kind`
derives from them what calibration measures: a rule whose jobs get a ``model_path`` loads a model, and trains or
decodes as its script calls the training or the decoding job; a rule constrained to some configured models makes
those model folders; a script that embeds or downloads gets the encoder probe or the config's guess; any other
script its start-up.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

#: the library functions whose jobs calibration measures by running them (or, for downloads, cannot)
TRAIN_ENTRY = "iclpt.engine.training.train_job"
DECODE_ENTRY = "iclpt.engine.generation.predict_job"
ENCODER_ENTRY = "iclpt.retrieval.embed_file"
NETWORK_ENTRIES = frozenset({"iclpt.data.download.download_task", "iclpt.models.hub.fetch_hub_model"})
#: the param that hands a job its model folder
MODEL_PARAM = "model_path"

#: what a rule's jobs are measured by (:func:`job_kind`)
NO_WORK, TRAIN, DECODE, MAKES_MODEL, ENCODER, NETWORK, STARTUP = (
    "no work", "train", "decode", "makes model", "encoder", "network", "start-up")


@dataclass(frozen=True)
class RuleFacts:
    """One rule as the workflow defines it for the run's config."""

    name: str
    threads: int = 1
    gpu: int = 0
    script: str | None = None
    params: tuple[str, ...] = ()
    model_pattern: str | None = None

    @property
    def loads_model(self) -> bool:
        return MODEL_PARAM in self.params

    @cached_property
    def calls(self) -> frozenset[str]:
        """The ``iclpt`` names the rule's script imports (``module.name``), found with ``ast``."""
        return frozenset() if self.script is None else script_imports(self.script)

    def makes(self, models: Iterable[str]) -> list[str]:
        """The configured models whose folders this rule makes (its ``model`` wildcard constraint)."""
        if self.model_pattern is None or self.loads_model:
            return []
        return [m for m in models if re.fullmatch(self.model_pattern, m)]


def script_imports(script: str | Path) -> frozenset[str]:
    """``iclpt`` modules and ``module.name`` of every name a script imports from one."""
    tree = ast.parse(Path(script).read_text(encoding="utf-8"), filename=str(script))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return frozenset(n for n in found if n == "iclpt" or n.startswith("iclpt."))


def job_kind(rule: RuleFacts) -> str:
    """What calibration measures for the jobs of ``rule`` (module docstring)."""
    if rule.script is None:
        return NO_WORK
    if rule.loads_model:
        return TRAIN if TRAIN_ENTRY in rule.calls else DECODE if DECODE_ENTRY in rule.calls else STARTUP
    if rule.model_pattern is not None:
        return MAKES_MODEL
    if ENCODER_ENTRY in rule.calls:
        return ENCODER
    return NETWORK if NETWORK_ENTRIES & rule.calls else STARTUP


def rules_of_kind(rules: Mapping[str, RuleFacts], kind: str) -> list[RuleFacts]:
    return [r for r in rules.values() if job_kind(r) == kind]


def rule_threads(rule: RuleFacts, cores: int) -> int:
    """The threads a job of ``rule`` gets: the rule's, scaled down to ``cores`` (as Snakemake does)."""
    return max(1, min(int(rule.threads), int(cores)))


def slots(rule: RuleFacts, cores: int, gpus: int | None) -> int:
    """Jobs of ``rule`` Snakemake runs at once: cores // threads, and at most ``gpus`` for rules that claim one."""
    n = max(1, int(cores) // rule_threads(rule, cores))
    if gpus is not None and rule.gpu:
        n = max(1, min(n, int(gpus) // int(rule.gpu)))
    return n
