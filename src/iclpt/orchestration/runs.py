"""The runs a validated config expands to, derived from the method registry (a pure function of the config).

A run is (task, model, method, length, demos, seed): the wildcards of one prompt folder (train) or one
predictions folder (predict). `plan(config)` gives both lists; `prompt_source(run)` names the train run whose
prompt a predict run decodes with.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, NamedTuple

from iclpt.orchestration.methods import METHODS, PROMPT_OWN, PROMPT_SOURCE, Method, family_name, split_name


class Run(NamedTuple):
    task: str
    model: str
    method: str
    length: int
    demos: str
    seed: int

    def wildcards(self) -> dict[str, Any]:
        return self._asdict()


class Plan(NamedTuple):
    train: list[Run]
    predict: list[Run]


class Grid(NamedTuple):
    """The config values the run lists depend on."""

    tasks: list[str]
    models: list[str]
    seeds: list[int]
    methods: list[str]
    main_len: int
    lengths: list[int]
    random_demos: bool
    experiments: frozenset[str]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Grid:
        exp = config["experiments"]
        main_len = int(config["prompt"]["length"])
        lengths = sorted({int(x) for x in config["prompt"]["lengths"]} | {main_len}) if exp["stability"] else [main_len]
        return cls(
            tasks=list(config["tasks"]),
            models=list(config["models"]),
            seeds=[int(s) for s in config["seeds"]],
            methods=list(config["methods"]),
            main_len=main_len,
            lengths=lengths,
            random_demos=bool(exp["similarity"]) and "random" in config["demos"]["sources"],
            experiments=frozenset(name for name, on in exp.items() if on),
        )


def method_settings(m: Method, g: Grid) -> list[tuple[int, str]]:
    """(length, demos) of every run of method m: its main setting over the lengths, and random demos for E2
    (a control: its main setting only)."""
    if m.control:
        return [(m.length(g.main_len), m.main_demos)]
    lengths = g.lengths if m.uses_prompt else [0]
    out = [(L, m.main_demos) for L in lengths]
    if g.random_demos and "random" in m.demos and m.main_demos != "random":
        out.append((m.length(g.main_len), "random"))
    return out


def method_runs(m: Method, g: Grid) -> list[Run]:
    runs = []
    for task, model, (length, demos) in itertools.product(g.tasks, g.models, method_settings(m, g)):
        seeds = g.seeds if m.per_seed(demos) else g.seeds[:1]
        runs += [Run(task, model, m.name, length, demos, s) for s in seeds]
    return runs


def family_runs(m: Method, g: Grid) -> list[Run]:
    """Runs of a family method (transfer_<source>), when its experiment is on: every ordered pair of distinct
    tasks."""
    if not (m.family and m.experiment in g.experiments):
        return []
    return [
        Run(tgt, model, family_name(m, src), g.main_len, m.main_demos, seed)
        for src, tgt, model, seed in itertools.product(g.tasks, g.tasks, g.models, g.seeds)
        if src != tgt
    ]


def prompt_source(run: Run) -> Run | None:
    """The train run whose prompt `run` decodes with (None: no soft prompt)."""
    m, source = split_name(run.method)
    if m.prompt == PROMPT_OWN:
        return run
    if m.prompt == PROMPT_SOURCE and m.prompt_from is not None:
        src = METHODS[m.prompt_from]
        return Run(source or "", run.model, src.name, run.length, src.main_demos, run.seed)
    return None


def plan(config: Mapping[str, Any]) -> Plan:
    """Every train and predict run of a validated config, sorted."""
    g = Grid.from_config(config)
    predict: set[Run] = set()
    for name in g.methods:
        predict.update(method_runs(METHODS[name], g))
    for m in METHODS.values():
        if m.family:
            predict.update(family_runs(m, g))
    with_runs = {f.experiment for f in METHODS.values() if f.family and family_runs(f, g)}
    for m in METHODS.values():
        if m.control and m.experiment in with_runs:  # a control runs where its experiment has runs
            predict.update(method_runs(m, g))
    train = {src for r in predict if (src := prompt_source(r)) is not None}
    return Plan(sorted(train), sorted(predict))


def check_run(run: Run) -> Method:
    """The run's method, after checking its length and demos agree with the registry (else ValueError)."""
    m, source = split_name(run.method)
    if run.demos not in m.demos:
        raise ValueError(f"run {'/'.join(map(str, run))}: method {run.method} takes demos "
                         f"{'|'.join(m.demos)}, not {run.demos!r}")
    if not m.uses_prompt and int(run.length) != 0:
        raise ValueError(f"run {'/'.join(map(str, run))}: method {run.method} has no soft prompt; "
                         f"its length must be 0, got {run.length}")
    if source is not None and source == run.task:
        raise ValueError(f"run {'/'.join(map(str, run))}: {m.name} from {source} to itself")
    return m
