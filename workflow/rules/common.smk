# Path templates, target lists, wildcard constraints and resource helpers shared by every stage.
# Nothing here reads files: the DAG is a pure function of the validated config.

import itertools

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
    | {t.get("demo_retriever", DEMO_RETRIEVER) for t in config["tasks"].values()}
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
    task="|".join(["totto", "dart", "logic2text", "spider", "mtop"]),
    split="train|dev|test",
    model="[A-Za-z0-9][A-Za-z0-9_.-]*",
    encoder="[A-Za-z0-9][A-Za-z0-9_.-]*",
    retriever=r"dense|bm25|random_s\d+",
    method=r"icl|pt|ipt|transfer_(totto|dart|logic2text|spider|mtop)",
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
    return task_cfg(task).get("demo_retriever", DEMO_RETRIEVER) if task else DEMO_RETRIEVER


# ---- the runs the config expands to --------------------------------------------------------------
def train_runs():
    """(task, model, method, length, demos, seed) of every soft prompt to train."""
    runs = set()
    for task, model, seed in itertools.product(TASKS, MODELS, SEEDS):
        lengths = LENGTHS if EXP["stability"] else [MAIN_LEN]
        if "pt" in METHODS or EXP["transfer"]:
            for L in lengths if "pt" in METHODS else [MAIN_LEN]:
                runs.add((task, model, "pt", L, "none", seed))
        if "ipt" in METHODS:
            for L in lengths:
                runs.add((task, model, "ipt", L, "retrieved", seed))
            if EXP["similarity"] and "random" in DEMO_SOURCES:
                runs.add((task, model, "ipt", MAIN_LEN, "random", seed))
    return sorted(runs)


def predict_runs():
    """(task, model, method, length, demos, seed) of every prediction file."""
    runs = {r for r in train_runs() if r[2] in METHODS}
    if "icl" in METHODS:
        for task, model in itertools.product(TASKS, MODELS):
            # retrieved demos make ICL deterministic: one run; random demos vary with the seed
            runs.add((task, model, "icl", 0, "retrieved", SEEDS[0]))
            if EXP["similarity"] and "random" in DEMO_SOURCES:
                for seed in SEEDS:
                    runs.add((task, model, "icl", 0, "random", seed))
    if EXP["transfer"] and len(TASKS) > 1:
        for src, tgt, model, seed in itertools.product(TASKS, TASKS, MODELS, SEEDS):
            if src != tgt:
                runs.add((tgt, model, f"transfer_{src}", MAIN_LEN, "retrieved", seed))
    return sorted(runs)


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
