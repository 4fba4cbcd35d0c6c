"""The method registry: what each method is, in one table.

A method says whether it trains a soft prompt, where the prompt it decodes with comes from, which demonstration
sources it takes (the first is its main setting, the one the E1 table reports), and how reports label and colour
it. The Snakemake run lists (`iclpt.orchestration.runs`), the wildcard constraints, the train and predict jobs' inputs and every
report derive from this table. An unknown method is an error, never a silent default.

Adding a method: one `Method(...)` line in `METHODS` (and its kernel if it has new maths), the schema's
`methods` enum, its tests and the docs.

| name | soft prompt | demos | trained | runs |
|---|---|---|---|---|
| zeroshot | none | none | no | once (deterministic) |
| icl | none | retrieved (random for E2) | no | once with retrieved demos, per seed with random ones |
| pt | its own | none | yes | per seed |
| ipt | its own | retrieved (random for E2) | yes | per seed |
| transfer_<S> | PT of task S (same model, length, seed) | retrieved of the target | no | per seed |
"""

from __future__ import annotations

from dataclasses import dataclass

#: where a method's soft prompt comes from
PROMPT_NONE, PROMPT_OWN, PROMPT_SOURCE_PT = "none", "own", "source_pt"
DEMO_SOURCES = ("none", "retrieved", "random")


class UnknownMethodError(KeyError):
    """An unknown method name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Method:
    """One method of the study.

    prompt: PROMPT_NONE (no soft prompt), PROMPT_OWN (trained by this method's own train job) or
    PROMPT_SOURCE_PT (the PT prompt of another task: a method family named `<name>_<source task>`).
    demos: the demonstration sources it takes; demos[0] is its main setting."""

    name: str
    label: str
    color: str
    prompt: str
    demos: tuple[str, ...]
    baseline: bool = False
    family: bool = False

    @property
    def trains(self) -> bool:
        return self.prompt == PROMPT_OWN

    @property
    def uses_prompt(self) -> bool:
        return self.prompt != PROMPT_NONE

    @property
    def main_demos(self) -> str:
        return self.demos[0]

    def length(self, main_len: int) -> int:
        """The soft-prompt length of its main setting: the configured one, or 0 without a prompt."""
        return int(main_len) if self.uses_prompt else 0

    def per_seed(self, demos: str) -> bool:
        """Whether a run with these demos varies with the seed (otherwise it runs once, for the first seed)."""
        return self.uses_prompt or demos == "random"

    def n_demos(self, demos: str, configured: int) -> int:
        return 0 if demos == "none" else int(configured)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("zeroshot", "Zero-shot", "#bcbd22", PROMPT_NONE, ("none",), baseline=True),
        Method("icl", "ICL", "#7f7f7f", PROMPT_NONE, ("retrieved", "random")),
        Method("pt", "PT", "#1f77b4", PROMPT_OWN, ("none",)),
        Method("ipt", "IPT", "#d62728", PROMPT_OWN, ("retrieved", "random")),
        Method("transfer", "Transfer", "#9467bd", PROMPT_SOURCE_PT, ("retrieved",), family=True),
    )
}

#: the methods a config's `methods:` list may name (families are switched on by their experiment)
CONFIG_METHODS = tuple(n for n, m in METHODS.items() if not m.family)
#: the order reports list methods in
REPORT_ORDER = tuple(METHODS)


def split_name(name: str) -> tuple[Method, str | None]:
    """(method, source task or None) of a run's method name, e.g. 'transfer_dart' -> (transfer, 'dart')."""
    if name in METHODS and not METHODS[name].family:
        return METHODS[name], None
    for m in METHODS.values():
        if m.family and name.startswith(m.name + "_") and len(name) > len(m.name) + 1:
            return m, name[len(m.name) + 1:]
    known = ", ".join(CONFIG_METHODS + tuple(f"{n}_<task>" for n, m in METHODS.items() if m.family))
    raise UnknownMethodError(f"unknown method {name!r}; known methods: {known}")


def get_method(name: str) -> Method:
    """The registered method of a run's method name (a family member resolves to its family)."""
    return split_name(name)[0]


def family_name(method: Method, source: str) -> str:
    return f"{method.name}_{source}"


def label(name: str) -> str:
    """The report label of a run's method name: 'ICL', 'Transfer dart', ..."""
    m, source = split_name(name)
    return m.label if source is None else f"{m.label} {source}"


def color(name: str) -> str:
    return get_method(name).color


def wildcard_pattern(tasks: list[str] | tuple[str, ...]) -> str:
    """The regex of the {method} wildcard for these tasks."""
    parts = list(CONFIG_METHODS)
    src = "|".join(tasks)
    parts += [f"{n}_({src})" for n, m in METHODS.items() if m.family]
    return "|".join(parts)


def trained_methods() -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if m.trains)
