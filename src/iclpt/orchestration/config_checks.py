"""Parse-time checks of the validated config: stop a mistake before any job exists, and name it.

Parse time (:func:`check_config`, called by ``workflow/rules/common.smk`` right after schema validation, before
any job exists; the data files by the ``Snakefile`` once it has included the data stage): every problem the
validated config alone reveals is collected and raised as one :class:`ConfigError`, one line per problem, each
naming the key, its value and what was expected:

- integer-valued keys that got a float (JSON Schema accepts ``6.0`` as an integer; ``range(6.0)`` does not);
- ``resources:`` entries whose rule name is not a rule of the workflow (read from the rule files, so the list
  cannot drift from the rules);
- cross-key limits: ``demos.n_demos`` vs ``retrieval.k`` (the candidates stored per query), ``retrieval.k`` vs
  ``tasks.<task>.max_examples.train``, the token budget (soft prompt + template + new tokens, or + one target
  token) vs ``predict.max_length`` / ``train.max_length`` and the model's context where its config is readable
  (``build:`` blocks, local folders, cached hub models, an already fetched ``gguf:`` folder), a tiny build whose
  ``hidden_size`` is not a multiple of ``num_heads``, ``train.warmup_steps`` vs ``train.max_steps``, the
  ``prompt.init`` settings;
- model ``path:`` values: an existing local folder must hold a loadable model
  (:func:`iclpt.artifacts.check_model_dir`), a path-like value that does not exist is named as a missing folder,
  anything else must be a well-formed hub id;
- the data files of tasks with ``source: local`` (and the files their adapters read beside them) must exist;
  for ``source: download`` once the download's manifest exists.

Stdlib, :mod:`iclpt.artifacts` and the light iclpt registries (methods, runs, tasks; some imported inside
functions): the Snakefile imports this at parse time. No job imports it: the artefact checks jobs run live in
:mod:`iclpt.artifacts`, so that editing a registry changes no job's code digest through them.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from iclpt.artifacts import HUB_ID_RE, check_model_dir, context_of, hub_cached_file, looks_local
from iclpt.io import DataError

#: the fewest tokens a query can take besides its input (the tail's newline and output label); a lower bound,
#: so the parse-time budget check never rejects a config the jobs could run
MIN_TEMPLATE_TOKENS = 2
_RULE_RE = re.compile(r"^(?:rule|checkpoint)\s+([A-Za-z_]\w*)\s*:", re.M)


class ConfigError(ValueError):
    """A config mistake found before any job ran; one line per problem, each naming key, value and expectation."""


# ---- the entry point ----------------------------------------------------------------------------------
def check_config(config: Mapping[str, Any], schema: Mapping[str, Any], rules: Iterable[str],
                 models_dir: str | os.PathLike[str] | None = None, data: bool = True) -> None:
    """Raise ConfigError listing every problem of a schema-validated config (defaults filled)."""
    _raise(config_problems(config, schema, rules, models_dir, data))


def check_workflow_config(config: Mapping[str, Any], root: str | os.PathLike[str],
                          models_dir: str | os.PathLike[str] | None = None) -> None:
    """check_config with the schema and the rules of the workflow rooted at `root` (the Snakefile's folder),
    data files aside: the Snakefile, which includes the data stage, checks them (:func:`check_data_files`)."""
    import yaml

    schema_file = Path(root) / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(schema_file.read_text(encoding="utf-8"))
    check_config(config, schema, workflow_rules(root), models_dir, data=False)


def check_data_files(config: Mapping[str, Any]) -> None:
    """Raise ConfigError naming every data file the config names that does not exist (:func:`data_files`)."""
    _raise(data_files(config))


def _raise(found: Sequence[str]) -> None:
    if found:
        head = "" if len(found) == 1 else f"{len(found)} problems in the config (nothing was run):\n"
        raise ConfigError(head + "\n".join(f"config: {p}" for p in found))


def config_problems(config: Mapping[str, Any], schema: Mapping[str, Any], rules: Iterable[str],
                    models_dir: str | os.PathLike[str] | None = None, data: bool = True) -> list[str]:
    """Every problem of the config, in a stable order (types first: later checks assume the right types)."""
    typed = float_integers(config, schema)
    if typed:
        return typed
    found = unknown_resources(config, set(rules))
    found += model_sources(config)
    found += data_files(config) if data else []
    found += device_settings(config)
    found += prompt_settings(config)
    found += build_settings(config)
    found += train_settings(config)
    found += demo_limits(config)
    found += token_budgets(config, models_dir)
    return found


# ---- integer keys that got floats -------------------------------------------------------------------------
def float_integers(value: Any, schema: Mapping[str, Any], key: str = "",
                   root: Mapping[str, Any] | None = None) -> list[str]:
    """Keys whose schema type is integer (and not number) holding a float, e.g. ``train.max_steps = 6.0``."""
    root = root or schema
    node = _resolve(schema, root)
    if isinstance(value, float) and _allows(node, "integer") and not _allows(node, "number"):
        shown = int(value) if value.is_integer() else value
        return [f"{key or '<top>'} = {value!r}: expected an integer, got a float (write {shown})"]
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            for sub in _property_schemas(node, str(k), root):
                out += float_integers(v, sub, f"{key}.{k}" if key else str(k), root)
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        for i, v in enumerate(value):
            out += float_integers(v, node["items"], f"{key}[{i}]", root)
    return sorted(set(out), key=out.index)


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while isinstance(node, Mapping) and "$ref" in node:
        target: Any = root
        for part in str(node["$ref"]).lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _allows(node: Mapping[str, Any], type_name: str) -> bool:
    t = node.get("type")
    return type_name == t or (isinstance(t, list) and type_name in t)


def _property_schemas(node: Mapping[str, Any], key: str, root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The schemas that apply to property `key` of an object schema (its oneOf/anyOf branches included)."""
    out = []
    for branch in [node] + [_resolve(b, root) for b in node.get("oneOf", []) + node.get("anyOf", [])]:
        props = branch.get("properties") or {}
        if key in props:
            out.append(props[key])
        elif isinstance(branch.get("additionalProperties"), Mapping):
            out.append(branch["additionalProperties"])
    return out


# ---- resources: rule names ------------------------------------------------------------------------------------
def rule_names(files: Iterable[str | os.PathLike[str]]) -> set[str]:
    """The rules (and checkpoints) defined in the given Snakefile / .smk files."""
    names: set[str] = set()
    for f in files:
        names.update(_RULE_RE.findall(Path(f).read_text(encoding="utf-8")))
    return names


def workflow_rules(root: str | os.PathLike[str]) -> set[str]:
    """Every rule of the workflow rooted at `root` (its Snakefile and workflow/rules/*.smk)."""
    root = Path(root)
    return rule_names([root / "Snakefile", *sorted((root / "workflow" / "rules").glob("*.smk"))])


def unknown_resources(config: Mapping[str, Any], rules: set[str]) -> list[str]:
    known = sorted(rules)
    return [f"resources.{name}: no rule is called {name!r}; expected 'default' or a rule name "
            f"({', '.join(known)}){_did_you_mean(name, known + ['default'])}"
            for name in config.get("resources") or {} if name not in rules and name != "default"]


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---- models ------------------------------------------------------------------------------------------------------
def model_sources(config: Mapping[str, Any]) -> list[str]:
    """`path:` models: an existing folder must hold a model; otherwise a path-like value is a missing folder and
    anything else must be a well-formed hub id."""
    out = []
    for name, m in config["models"].items():
        if "path" in m:
            problem = model_path_problem(str(m["path"]), name)
            if problem:
                out.append(f"models.{name}.path = {m['path']!r}: {problem}")
        if "revision" in m and ("path" not in m or Path(os.path.expanduser(str(m["path"]))).is_dir()):
            out.append(f"models.{name}.revision = {m['revision']!r}: a revision applies to a hub id `path:` only "
                       f"(this model is a {'local folder' if 'path' in m else 'build / gguf model'})")
    return out


def model_path_problem(path: str, name: str) -> str | None:
    """Why `path` cannot be a model (None when it is an existing model folder or a well-formed hub id)."""
    local = Path(os.path.expanduser(path))
    if local.is_dir():
        try:
            check_model_dir(local, name)
        except DataError as e:
            return str(e)
        return None
    if local.exists():
        return "is a file; expected a model folder (config.json, weights, tokenizer) or a hub id 'org/name'"
    if looks_local(path):
        return f"no such folder ({local.resolve()}); expected a local model folder or a hub id 'org/name'"
    if not HUB_ID_RE.match(path) or "--" in path or ".." in path or len(path.split("/")[-1]) > 96:
        return "is not a hub id ('name' or 'org/name': letters, digits, '-', '_', '.') and no such folder exists"
    return None


# ---- data files -------------------------------------------------------------------------------------------------
def data_files(config: Mapping[str, Any]) -> list[str]:
    """Local tasks: every split file and each file its adapter reads beside it exists. Download tasks: the same
    once the download's manifest exists (before that, the download rule makes them)."""
    from iclpt.data.tasks import get_task

    out = []
    for task, t in config["tasks"].items():
        root = Path(config["data_root"]) if t["source"] == "local" else Path(config["download_dir"]) / task
        if t["source"] == "download" and not (root / "manifest.json").is_file():
            continue
        if not root.is_dir():
            key = "data_root" if t["source"] == "local" else "download_dir"
            out.append(f"tasks.{task}: {key} folder {root} does not exist")
            continue
        for split, rel in t["files"].items():
            path = root / rel
            if not path.is_file():
                out.append(f"tasks.{task}.files.{split} = {rel!r}: file not found: {path}{_nearby(path)}")
                continue
            for side in get_task(task).side_files(split, path):
                if not Path(side).is_file():
                    out.append(f"tasks.{task}.files.{split} = {rel!r}: the {task} reader also needs {side}, not found")
    return out


def _nearby(path: Path) -> str:
    """A hint naming the similar files in the folder of a missing file."""
    if not path.parent.is_dir():
        return f" (folder {path.parent} does not exist)"
    names = sorted(p.name for p in path.parent.iterdir() if p.is_file())
    close = difflib.get_close_matches(path.name, names, n=2)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


# ---- prompt, tiny builds, training --------------------------------------------------------------------------------
def device_settings(config: Mapping[str, Any]) -> list[str]:
    """fp16 needs CUDA: with ``device: cpu`` it is a mistake before any job (iclpt.models.loading.resolve_precision)."""
    if config.get("device") == "cpu" and config.get("precision") == "fp16":
        return ["precision = 'fp16' with device = 'cpu': fp16 needs CUDA; use bf16 or fp32 on a CPU"]
    return []


def prompt_settings(config: Mapping[str, Any]) -> list[str]:
    p = config["prompt"]
    init = p["init"]
    out = []
    if init == "text" and not (p.get("init_text") or "").strip():
        out.append("prompt.init = 'text' needs prompt.init_text (the text whose embeddings start the prompt)")
    if init != "text" and p.get("init_text"):
        out.append(f"prompt.init_text is set but prompt.init = {init!r} ignores it; set prompt.init: text or remove it")
    if init == "file":
        f = p.get("init_file")
        if not f:
            out.append("prompt.init = 'file' needs prompt.init_file (a prompt.safetensors)")
        elif not Path(os.path.expanduser(f)).is_file():
            out.append(f"prompt.init_file = {f!r}: file not found")
    elif p.get("init_file"):
        out.append(f"prompt.init_file is set but prompt.init = {init!r} ignores it; set prompt.init: file or remove it")
    return out


def build_settings(config: Mapping[str, Any]) -> list[str]:
    out = []
    for name, m in config["models"].items():
        b = m.get("build")
        if b and b["hidden_size"] % b["num_heads"]:
            out.append(f"models.{name}.build.hidden_size = {b['hidden_size']} is not a multiple of "
                       f"models.{name}.build.num_heads = {b['num_heads']}")
    return out


def train_settings(config: Mapping[str, Any]) -> list[str]:
    from iclpt.orchestration.runs import plan

    t = config["train"]
    if not plan(config).train or t["max_steps"] == 0 or t["warmup_steps"] < t["max_steps"]:
        return []  # max_steps 0: no step, so no learning rate to reach (the initialised prompt is the output)
    return [f"train.warmup_steps = {t['warmup_steps']} is not below train.max_steps = {t['max_steps']}: the "
            f"learning rate would never reach train.lr = {t['lr']}; expected warmup_steps < max_steps"]


# ---- demos and retrieval -------------------------------------------------------------------------------------------
def demo_limits(config: Mapping[str, Any]) -> list[str]:
    """n_demos vs the candidates stored per query; k vs the train split a max_examples limit leaves."""
    from iclpt.orchestration.methods import get_method
    from iclpt.orchestration.runs import plan

    k, n = config["retrieval"]["k"], config["demos"]["n_demos"]
    out = []
    runs = plan(config).predict
    if n > k and any(get_method(r.method).demo_count is None and r.demos != "none" for r in runs):
        out.append(f"demos.n_demos = {n} is more than retrieval.k = {k}, the candidates stored per query: every "
                   f"prompt would get at most {k} demos; expected n_demos <= k (raise retrieval.k or lower n_demos)")
    for name in sorted({r.method for r in runs}):
        own = get_method(name).demo_count
        if own is not None and own > k:
            out.append(f"method {name} takes {own} demos, more than retrieval.k = {k}, the candidates stored per "
                       f"query; expected retrieval.k >= {own}")
    for task, t in config["tasks"].items():
        cap = (t.get("max_examples") or {}).get("train")
        if cap is not None and k >= cap:
            out.append(f"retrieval.k = {k} needs more than tasks.{task}.max_examples.train = {cap} train examples "
                       f"(a train query never gets itself as a demo); expected k <= {cap - 1}")
    return out


# ---- token budgets -------------------------------------------------------------------------------------------------
def token_budgets(config: Mapping[str, Any], models_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Soft prompt + template + new tokens (decoding) or + one target token (training) must fit the budget:
    ``max_length``, and the model's context where its config is readable."""
    from iclpt.orchestration.runs import plan

    p = plan(config)
    out = []
    contexts = {m: model_context(config["models"][m], Path(models_dir) / m if models_dir else None)
                for m in config["models"]}
    for task in config["tasks"]:
        new = task_max_new_tokens(config, task)
        out += _budget(config, "predict", [r for r in p.predict if r.task == task], contexts, new,
                       f"{new} new tokens (tasks.{task}.max_new_tokens, or the task's default)")
        out += _budget(config, "train", [r for r in p.train if r.task == task], contexts, 1, "a 1-token target")
    return sorted(set(out), key=out.index)


def _budget(config: Mapping[str, Any], stage: str, runs: Sequence[Any], contexts: Mapping[str, int | None],
            reserve: int, what: str) -> list[str]:
    out = []
    max_length = int(config[stage]["max_length"])
    for model in sorted({r.model for r in runs}):
        soft = max((r.length for r in runs if r.model == model), default=0)
        ctx = contexts.get(model)
        limit, limit_name = (max_length, f"{stage}.max_length = {max_length}")
        if ctx is not None and ctx < max_length:
            limit, limit_name = ctx, f"model {model}'s context ({ctx} positions; {stage}.max_length = {max_length})"
        need = soft + MIN_TEMPLATE_TOKENS + reserve + 1
        if need > limit:
            out.append(f"{stage}: soft prompt {soft} (prompt.length / prompt.lengths) + {what} + at least "
                       f"{MIN_TEMPLATE_TOKENS + 1} template and input tokens = {need} tokens do not fit "
                       f"{limit_name}; raise {stage}.max_length or shorten the prompt / decoding budget")
    return out


def task_max_new_tokens(config: Mapping[str, Any], task: str) -> int:
    from iclpt.data.tasks import get_task

    return int(config["tasks"][task].get("max_new_tokens") or get_task(task).max_new_tokens)


def model_context(model: Mapping[str, Any], folder: Path | None = None) -> int | None:
    """The model's context length where it can be read without loading anything (None: unknown or unlimited)."""
    if "build" in model:
        b = model["build"]
        return None if b["architecture"] == "bloom" else int(b["max_positions"])
    if "path" in model:
        local = Path(os.path.expanduser(str(model["path"])))
        cfg = local / "config.json" if local.is_dir() else hub_cached_file(str(model["path"]), "config.json")
    else:
        cfg = folder / "config.json" if folder is not None else None
    return context_of(cfg) if cfg is not None and cfg.is_file() else None
