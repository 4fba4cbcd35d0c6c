"""The method registry: what each method is, in one table.

A method says whether it trains a soft prompt, where the prompt it decodes with comes from, which demonstration
sources it takes (the first is its main setting, the one the E1 table reports) and how many demos (the config's
`demos.n_demos` unless the method fixes its own), its role in the comparisons of E2-E4 and findings.md, and how
reports label and colour it. The Snakemake run lists (`iclpt.orchestration.runs`), the wildcard constraints, the
train and predict jobs' inputs and params, and every report derive from this table; no other module names a
method. An unknown method is an error, never a silent default.

Adding a method: one `Method(...)` line in `METHODS` (and its kernel if it has new maths), the schema's
`methods` enum, its tests and the docs.

| name | soft prompt | demos | trained | runs | role |
|---|---|---|---|---|---|
| zeroshot | none | none | no | once (deterministic) | baseline |
| icl | none | retrieved (random for E2) | no | once (retrieved), per seed (random) | demos only |
| pt | its own | none | yes | per seed | prompt only |
| ipt | its own | retrieved (random for E2) | yes | per seed | prompt + demos |
| transfer_<S> | pt's prompt of task S | the target's retrieved | no | per seed | source prompt + demos |
| untrained | its own, initialised, 0 steps | retrieved | no (0 steps) | per seed, with E4 | untrained prompt + demos |

`untrained` is finding 3's control: the target task with a soft prompt of the same length that was initialised
(``prompt.init``) and never trained, plus the target's demos. A transfer that beats ICL but not this control shows
only that *some* prefix of that length changes ICL, not that the source task's training transfers. It runs with
the experiment it controls (``experiment``), never from the config's ``methods`` list.
"""

from __future__ import annotations

from dataclasses import dataclass

#: where a method's soft prompt comes from: none, its own train job, or another method's prompt of a source task
PROMPT_NONE, PROMPT_OWN, PROMPT_SOURCE = "none", "own", "source"
DEMO_SOURCES = ("none", "retrieved", "random")
#: a method's role in the comparisons of the reports (E2b, E4, findings.md); each role belongs to one method at most
ROLE_DEMOS_ONLY = "demos_only"  # in-context demos, no soft prompt (ICL)
ROLE_PROMPT_ONLY = "prompt_only"  # its own soft prompt, no demos (PT)
ROLE_PROMPT_AND_DEMOS = "prompt_and_demos"  # its own soft prompt and demos (IPT)
ROLE_SOURCE_PROMPT_AND_DEMOS = "source_prompt_and_demos"  # a source task's prompt and the target's demos (transfer)
ROLE_UNTRAINED_PROMPT_AND_DEMOS = "untrained_prompt_and_demos"  # an initialised, untrained prompt and demos (control)
ROLES = (ROLE_DEMOS_ONLY, ROLE_PROMPT_ONLY, ROLE_PROMPT_AND_DEMOS, ROLE_SOURCE_PROMPT_AND_DEMOS,
         ROLE_UNTRAINED_PROMPT_AND_DEMOS)


class UnknownMethodError(KeyError):
    """An unknown method name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Method:
    """One method of the study.

    prompt: PROMPT_NONE (no soft prompt), PROMPT_OWN (trained by this method's own train job) or
    PROMPT_SOURCE (the prompt of method `prompt_from` trained on another task: a method family named
    `<name>_<source task>`, switched on by `experiments.<experiment>`).
    demos: the demonstration sources it takes; demos[0] is its main setting.
    demo_count: how many demos it takes (None: the config's demos.n_demos).
    role: one of ROLES, what the reports compare it as (None: reported, never compared).
    train_steps: the training steps of its own prompt (None: the config's train.max_steps; 0: the initialised
    prompt, never updated).
    experiment: the experiment switch it runs with (a family: its runs; another method: a control that runs, at
    its main setting only, wherever that experiment has runs, never from the config's `methods` list)."""

    name: str
    label: str
    color: str
    prompt: str
    demos: tuple[str, ...]
    role: str | None = None
    demo_count: int | None = None
    baseline: bool = False
    family: bool = False
    prompt_from: str | None = None
    experiment: str | None = None
    train_steps: int | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"method {self.name}: unknown role {self.role!r}; known roles: {', '.join(ROLES)}")
        if self.family != (self.prompt == PROMPT_SOURCE) or self.family != bool(self.prompt_from and self.experiment):
            raise ValueError(f"method {self.name}: a family (family=True) takes its prompt from a source task "
                             "(PROMPT_SOURCE, prompt_from and experiment set); no other method does")
        if self.train_steps is not None and not (self.prompt == PROMPT_OWN and self.train_steps >= 0):
            raise ValueError(f"method {self.name}: train_steps needs a prompt of its own (PROMPT_OWN) and >= 0")

    @property
    def trains(self) -> bool:
        return self.prompt == PROMPT_OWN

    @property
    def control(self) -> bool:
        """A control: runs with its experiment (at its main setting), not from the config's `methods` list."""
        return self.experiment is not None and not self.family

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
        """Demos per prompt with this demo source: 0 without demos, else its own count or the configured one."""
        if demos == "none":
            return 0
        return int(configured) if self.demo_count is None else self.demo_count


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("zeroshot", "Zero-shot", "#bcbd22", PROMPT_NONE, ("none",), baseline=True),
        Method("icl", "ICL", "#7f7f7f", PROMPT_NONE, ("retrieved", "random"), role=ROLE_DEMOS_ONLY),
        Method("pt", "PT", "#1f77b4", PROMPT_OWN, ("none",), role=ROLE_PROMPT_ONLY),
        Method("ipt", "IPT", "#d62728", PROMPT_OWN, ("retrieved", "random"), role=ROLE_PROMPT_AND_DEMOS),
        Method("transfer", "Transfer", "#9467bd", PROMPT_SOURCE, ("retrieved",), role=ROLE_SOURCE_PROMPT_AND_DEMOS,
               family=True, prompt_from="pt", experiment="transfer"),
        Method("untrained", "Untrained prompt + ICL", "#8c564b", PROMPT_OWN, ("retrieved",),
               role=ROLE_UNTRAINED_PROMPT_AND_DEMOS, experiment="transfer", train_steps=0),
    )
}

#: the methods a config's `methods:` list may name (families and controls are switched on by their experiment)
CONFIG_METHODS = tuple(n for n, m in METHODS.items() if m.experiment is None)
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
    parts = [n for n, m in METHODS.items() if not m.family]
    src = "|".join(tasks)
    parts += [f"{n}_({src})" for n, m in METHODS.items() if m.family]
    return "|".join(parts)


def trained_methods() -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if m.trains)


def method_with_role(role: str) -> str:
    """The name of the method that plays `role` in the reports' comparisons (LookupError if none or several)."""
    names = [n for n, m in METHODS.items() if m.role == role]
    if len(names) != 1:
        raise LookupError(f"role {role!r}: expected one method, the registry has {names or 'none'}")
    return names[0]
