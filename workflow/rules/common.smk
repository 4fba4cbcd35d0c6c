# Path templates, target lists, wildcard constraints and resource helpers shared by every stage.
# Nothing here reads files: the DAG is a pure function of the validated config.

import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from iclpt import codeversion, methods, runs  # noqa: E402
from iclpt.tasks import TASKS as TASK_REGISTRY, get_task  # noqa: E402

RUN = config["run"]
RES = f"results/{RUN}"
TASKS = list(config["tasks"])
MODELS = list(config["models"])
SEEDS = [int(s) for s in config["seeds"]]
METHODS = list(config["methods"])
MAIN_LEN = int(config["prompt"]["length"])
LENGTHS = sorted(set(int(x) for x in config["prompt"]["lengths"]) | {MAIN_LEN})
DEMO_RETRIEVER = config["demos"]["retriever"]
DEMO_SOURCES = list(config["demos"]["sources"])
RETRIEVERS = sorted(
    set(config["retrieval"]["retrievers"])
    | {DEMO_RETRIEVER}
    | {t["demo_retriever"] for t in config["tasks"].values() if "demo_retriever" in t}
)
ENCODER = config["retrieval"]["encoder"]
SPLITS = ["train", "dev", "test"]
EXP = config["experiments"]

# ---- path templates (docs/architecture.md) ---------------------------------------------------
DATA = RES + "/data/{task}/{split}.jsonl"
MODEL_DIR = RES + "/models/{model}"
EMBED = RES + "/retrieval/{task}/embed/{encoder}/{split}.npy"
RETRIEVAL = RES + "/retrieval/{task}/{retriever}/{split}.jsonl"
RETRIEVAL_SUMMARY = RES + "/retrieval/{task}/{retriever}/summary.json"
RUN_DIR = "{task}/{model}/{method}/L{length}/{demos}/s{seed}"
PROMPT_DIR = RES + "/prompts/" + RUN_DIR
PRED_DIR = RES + "/predictions/" + RUN_DIR
CHECKPOINTS = RES + "/.checkpoints"


wildcard_constraints:
    task="|".join(TASK_REGISTRY),
    split="train|dev|test",
    model="[A-Za-z0-9][A-Za-z0-9_.-]*",
    encoder="[A-Za-z0-9][A-Za-z0-9_.-]*",
    retriever=r"dense|bm25|random_s\d+",
    method=methods.wildcard_pattern(list(TASK_REGISTRY)),
    length=r"\d+",
    demos="none|retrieved|random",
    seed=r"\d+",


def task_cfg(task):
    return config["tasks"][task]


def model_cfg(model):
    return config["models"][model]


def model_path(model):
    """What from_pretrained gets: the built tiny model's folder or the configured hub id / folder."""
    m = model_cfg(model)
    return MODEL_DIR.format(model=model) if "build" in m else m["path"]


def model_inputs(model):
    """The built model folder is a DAG input; hub ids and external folders are not."""
    m = model_cfg(model)
    return [MODEL_DIR.format(model=model) + "/config.json"] if "build" in m else []


def demo_retriever(demos, seed, task=None):
    """Retrieval file that supplies a run's demos: the task's (or the global) retriever, or the seeded random control."""
    if demos != "retrieved":
        return f"random_s{seed}"
    return task_cfg(task).get("demo_retriever", DEMO_RETRIEVER) if task else DEMO_RETRIEVER  # optional per task


# ---- the runs the config expands to (iclpt.runs, from the method registry) -------------------------
PLAN = runs.plan(config)


def train_runs():
    """(task, model, method, length, demos, seed) of every soft prompt to train."""
    return PLAN.train


def predict_runs():
    """(task, model, method, length, demos, seed) of every prediction file."""
    return PLAN.predict


def wc_run(wc):
    """The Run of a job's wildcards (checked against the method registry)."""
    run = runs.Run(wc.task, wc.model, wc.method, int(wc.length), wc.demos, int(wc.seed))
    runs.check_run(run)
    return run


# ---- code versions: a rule's params carry the digest of the library modules its script runs ----------
def code(script, task=None):
    """Digest of the iclpt modules workflow/scripts/<script> imports, transitively (iclpt.codeversion).

    Per task when `task` is given (other tasks' adapters left out). Snakemake reruns a job whose params changed,
    so editing a library module reruns exactly the jobs whose code includes it."""
    return codeversion.script_version(os.path.join(workflow.basedir, "workflow", "scripts", script), task=task)


def fmt_run(template, run):
    task, model, method, length, demos, seed = run
    return template.format(task=task, model=model, method=method, length=length, demos=demos, seed=seed)


def data_targets():
    return [DATA.format(task=t, split=s) for t in TASKS for s in SPLITS]


def retrieval_retrievers():
    names = list(RETRIEVERS)
    if "random" in DEMO_SOURCES and (("icl" in METHODS) or ("ipt" in METHODS)):
        names += [f"random_s{s}" for s in SEEDS]
    return names


def retrieval_targets():
    out = []
    for task in TASKS:
        for r in retrieval_retrievers():
            out += [RETRIEVAL.format(task=task, retriever=r, split=s) for s in SPLITS]
            out.append(RETRIEVAL_SUMMARY.format(task=task, retriever=r))
    return out


def prompt_targets():
    return [fmt_run(PROMPT_DIR, r) + "/prompt.safetensors" for r in train_runs()]


def prediction_targets():
    return [fmt_run(PRED_DIR, r) + "/predictions.jsonl" for r in predict_runs()]


def metric_targets():
    return [fmt_run(PRED_DIR, r) + "/metrics.json" for r in predict_runs()]


# ---- resources -------------------------------------------------------------------------------------
def res(rule_name, key, default):
    table = config.get("resources", {})
    return table.get(rule_name, {}).get(key, table.get("default", {}).get(key, default))


def mem_mb(rule_name, default):
    base = res(rule_name, "mem_mb", default)
    return lambda wildcards, attempt: base * attempt


def all_targets():
    """Everything the config asks for. report_targets() lives in report.smk."""
    out = data_targets() + retrieval_targets() + prompt_targets() + metric_targets()
    if "report_targets" in globals():
        out += report_targets()
    return out
