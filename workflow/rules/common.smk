# Path templates, run lists, wildcard constraints, resource helpers and every stage's input/params functions.
# The stage files (data.smk, ..., report.smk) hold rules only (snakemake --lint: no rules mixed with functions).
# The DAG is a pure function of the validated config and of the input files' contents: the parse-time checks
# (iclpt.orchestration.config_checks) look at the files the config names, and the prepare rule's params carry
# their digests.

import functools
import glob
import os
import re
import sys

sys.path.insert(0, os.path.normpath(os.path.join(workflow.current_basedir, "..", "..", "src")))
from iclpt import artifacts  # noqa: E402
from iclpt.orchestration import codeversion, config_checks, methods, runs  # noqa: E402
from iclpt.io import file_sha256  # noqa: E402
from iclpt.orchestration.layout import METRICS, WILDCARDS, Layout  # noqa: E402
from iclpt.evaluation.metrics import task_metrics, task_needs_database  # noqa: E402
from iclpt.retrieval import check_config as _check_retrieval_config  # noqa: E402
from iclpt.retrieval import needs_embeddings, parse_retriever  # noqa: E402
from iclpt.data.tasks import TASKS as TASK_REGISTRY, get_task  # noqa: E402
from iclpt.data.prepare import dev_is_test  # noqa: E402

SCRIPTS_DIR = os.path.normpath(os.path.join(workflow.current_basedir, "..", "scripts"))
RUN = config["run"]
RES = f"results/{RUN}"

# Parse-time checks of the validated config (iclpt.orchestration.config_checks): every mistake the config alone
# reveals stops here, before any job, with a message naming the key, its value and what was expected.
config_checks.check_workflow_config(config, os.path.join(workflow.current_basedir, "..", ".."), f"{RES}/models")

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

# ---- paths (docs/architecture.md): every file under results/<run>/ from iclpt.orchestration.layout ----------
# A rule's pattern passes wildcards as the keys: LAYOUT.data("{task}", "{split}"), LAYOUT.predictions(WC), with WC
# the run whose fields are the wildcards {task}, {model}, {method}, {length}, {demos}, {seed}.
LAYOUT = Layout(RES)
WC = WILDCARDS


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


def local_model_folder(model):
    """The configured local folder of a `path:` model (None for a hub id, a build or a gguf model)."""
    m = model_cfg(model)
    return m["path"] if "path" in m and os.path.isdir(os.path.expanduser(m["path"])) else None


def model_path(model):
    """What from_pretrained gets: always a local folder. A hub id's folder is fetched by fetch_hub_model (a
    localrule) into results/<run>/models/<model>/, like a built or a gguf one; no job reads the hub."""
    return local_model_folder(model) or LAYOUT.model_dir(model)


def model_inputs(model):
    """A built or fetched model folder is a DAG input, and so are the config and weights of a local `path:`
    folder (replacing them reruns its jobs)."""
    folder = local_model_folder(model)
    return artifacts.model_files(folder) if folder else [LAYOUT.model_file(model, "config.json")]


def _names_regex(names):
    return "|".join(re.escape(m) for m in names) if names else "(?!x)x"


def models_with(source):
    """Regex of the model names whose weights come from `source` (build | gguf); matches nothing if none."""
    return _names_regex([m for m in MODELS if source in model_cfg(m)])


def hub_models():
    """Models whose `path:` is a hub id (no local folder of that name): fetched once by fetch_hub_model."""
    return [m for m in MODELS if "path" in model_cfg(m) and not local_model_folder(m)]


def hub_revision(model):
    """The revision a hub model is fetched at (a commit hash pins it; a branch is resolved at fetch time and its
    commit recorded in provenance.json)."""
    return str(model_cfg(model).get("revision") or "main")


def demo_retriever(demos, seed, task=None):
    """Retrieval file that supplies a run's demos: the task's (or the global) retriever, or the seeded random control."""
    if demos != "retrieved":
        return f"random_s{seed}"
    return task_cfg(task).get("demo_retriever", DEMO_RETRIEVER) if task else DEMO_RETRIEVER  # optional per task


# ---- the runs the config expands to (iclpt.orchestration.runs, from the method registry) -------------------------
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
    """Digest of the iclpt modules workflow/scripts/<script> imports, transitively (iclpt.orchestration.codeversion).

    Per task when `task` is given (other tasks' adapters left out). Snakemake reruns a job whose params changed,
    so editing a library module reruns exactly the jobs whose code includes it."""
    return codeversion.script_version(os.path.join(SCRIPTS_DIR, script), task=task)


def data_targets():
    return [LAYOUT.data(t, s) for t in TASKS for s in SPLITS]


def retrieval_retrievers():
    """The configured retrievers, plus the seeded random ones when a configured method takes random demos."""
    names = list(RETRIEVERS)
    if "random" in DEMO_SOURCES and any("random" in methods.get_method(m).demos for m in METHODS):
        names += [f"random_s{s}" for s in SEEDS]
    return names


def retrieval_targets():
    out = []
    for task in TASKS:
        for r in retrieval_retrievers():
            out += [LAYOUT.retrieval(task, r, s) for s in SPLITS]
            out.append(LAYOUT.retrieval_summary(task, r))
    return out


def prompt_targets():
    return [LAYOUT.prompt(r) for r in train_runs()]


def prediction_targets():
    return [LAYOUT.predictions(r) for r in predict_runs()]


def metric_targets():
    return [LAYOUT.metrics(r) for r in predict_runs()]


# ---- resources -------------------------------------------------------------------------------------
def res(rule_name, key, default):
    table = config.get("resources", {})
    return table.get(rule_name, {}).get(key, table.get("default", {}).get(key, default))


def mem_mb(rule_name, default):
    base = res(rule_name, "mem_mb", default)
    return lambda wildcards, attempt: base * attempt


# ---- data stage (data.smk) ----------------------------------------------------
#   results/<run>/data/<task>/{train,dev,test}.jsonl  (docs/architecture.md)  + prepare.json (counts, provenance)
DOWNLOAD_DIR = config["download_dir"]
DATA_ROOT = config["data_root"]
DOWNLOAD_MANIFEST = f"{DOWNLOAD_DIR}/{{task}}/manifest.json"


def task_source(task):
    return task_cfg(task)["source"]


def task_files(task):
    """{split: path} of the task's official files: under data_root (local) or download_dir/<task> (download)."""
    root = os.path.join(DOWNLOAD_DIR, task) if task_source(task) == "download" else DATA_ROOT
    return {s: os.path.join(root, task_cfg(task)["files"][s]) for s in SPLITS}


def prepare_inputs(wildcards):
    """Local: every file the adapter reads (edits rerun the job). Download: the download's manifest."""
    return task_inputs(wildcards.task)


def task_inputs(task):
    if task_source(task) == "download":
        return {"manifest": DOWNLOAD_MANIFEST.format(task=task)}
    files = task_files(task)
    adapter = get_task(task)
    out = {s: files[s] for s in SPLITS}
    side = sorted({str(p) for s in SPLITS for p in adapter.side_files(s, files[s])})
    out.update({f"side{i}": p for i, p in enumerate(side)})
    return out


_DIGESTS = {}


def prepare_digests(task):
    """Local tasks: sha256 of every file prepare reads, and the adapter's file_state (e.g. which Spider test
    databases exist), so that new content reruns prepare even with an old mtime. Download tasks: {} (the
    manifest, an input, records the downloaded files' digests; the files do not exist before the download)."""
    if task_source(task) == "download":
        return {}
    if task not in _DIGESTS:
        files, adapter = task_files(task), get_task(task)
        d = {os.path.normpath(p): file_sha256(p) for p in sorted(set(task_inputs(task).values()))}
        d.update({f"{s}:{k}": v for s in SPLITS for k, v in adapter.file_state(s, files[s]).items()})
        _DIGESTS[task] = d
    return _DIGESTS[task]


def max_examples(task):
    m = task_cfg(task)["max_examples"]
    return {s: m.get(s) for s in SPLITS}  # a split without a limit keeps every example


def dev_from_train(task):
    """Where the task's dev and test files are one file: the train records held out as its dev split (the
    task's dev_from_train, else train.dev_examples, what checkpoint selection reads); None otherwise, so other
    tasks' prepare jobs do not depend on it (iclpt.data.prepare.hold_out_dev)."""
    if not dev_is_test(task_files(task)):
        return None
    return int(task_cfg(task).get("dev_from_train") or config["train"]["dev_examples"])


# ---- models stage (models.smk) ------------------------------------------------
#   results/<run>/models/<model>/  (HF save_pretrained folder: config.json, weights, tokenizer files)
#   results/<run>/encoders/<encoder>/  (a hub sentence encoder: modules.json, config.json, weights, tokenizer)
# A `path:` that is a local folder is read in place; a hub id is fetched (fetch_hub_model), like a `gguf:` model.


def tiny_build(model):
    """The model's `build:` block (the schema filled its defaults at validation)."""
    return dict(model_cfg(model)["build"])


# ---- retrieval stage (retrieval.smk) ------------------------------------------
#   embed:             results/<run>/retrieval/<task>/embed/<encoder>/<split>.npy   (float32, L2-normalised)
#   retrieve:          results/<run>/retrieval/<task>/<retriever>/<split>.jsonl     (k train demos per query)
#   retrieval_summary: results/<run>/retrieval/<task>/<retriever>/summary.json
# Embeddings are keyed by task x split x encoder only, so changing k or adding a retriever never re-embeds.
RETRIEVAL_CFG = config["retrieval"]
RETRIEVAL_K = int(RETRIEVAL_CFG["k"])
ENCODER_PATH = RETRIEVAL_CFG["encoder_path"]
ENCODER_REVISION = str(RETRIEVAL_CFG.get("encoder_revision") or "main")

# Cheap parse-time checks: retriever names, k, sizes, and that the encoder path/package exists (no model load).
_check_retrieval_config(RETRIEVAL_CFG, retrieval_retrievers())


def retrieval_device():
    return config["device"]


def encoder_from_hub():
    """Whether the encoder is a hub id (fetched once by fetch_encoder), not a folder or the packaged MiniLM."""
    from iclpt.retrieval.settings import PACKAGED_ENCODER

    return ENCODER_PATH != PACKAGED_ENCODER and not os.path.isdir(os.path.expanduser(ENCODER_PATH))


def encoder_dir():
    return f"{RES}/encoders/{ENCODER}"


def encoder_folder():
    """What the embed jobs load: the fetched folder of a hub encoder, else the configured folder / package."""
    return encoder_dir() if encoder_from_hub() else ENCODER_PATH


def encoder_inputs():
    return [f"{encoder_dir()}/modules.json"] if encoder_from_hub() else []


def retrieve_inputs(wc):
    d = {
        "queries": LAYOUT.data(wc.task, wc.split),
        "train": LAYOUT.data(wc.task, "train"),
    }
    if needs_embeddings(wc.retriever):
        d["query_emb"] = LAYOUT.embeddings(wc.task, ENCODER, wc.split)
        d["train_emb"] = LAYOUT.embeddings(wc.task, ENCODER, "train")
    return d


def retriever_seed(wc):
    return parse_retriever(wc.retriever)[1]


# ---- train stage (train.smk) --------------------------------------------------
#   results/<run>/prompts/<task>/<model>/<method>/L<len>/<demos>/s<seed>/
#     prompt.safetensors, meta.json, train_log.jsonl, peft/{adapter_config.json, adapter_model.safetensors}
# Resumable: checkpoints under results/<run>/.checkpoints/<key> (key = hash of the job's params and inputs).
PROMPT_SETTINGS = ("init", "init_vocab_size", "init_text", "init_file")


def task_text(task):
    """The task's template labels and decoding budget (adapter values; tasks.<task>.max_new_tokens overrides)."""
    t = get_task(task)
    return {
        "input_label": t.input_label,
        "output_label": t.output_label,
        "max_new_tokens": int(task_cfg(task).get("max_new_tokens") or t.max_new_tokens),
    }


def train_inputs(wc):
    run = wc_run(wc)
    d = {
        "model": model_inputs(wc.model),
        "train": LAYOUT.data(wc.task, "train"),
        "dev": LAYOUT.data(wc.task, "dev"),
    }
    if run.demos != "none":
        r = demo_retriever(wc.demos, wc.seed, wc.task)
        d["train_retrieval"] = LAYOUT.retrieval(wc.task, r, "train")
        d["dev_retrieval"] = LAYOUT.retrieval(wc.task, r, "dev")
    return d


def train_settings(m):
    """The config's train block, with the method's own step count where it fixes one (the control: 0)."""
    t = dict(config["train"])
    if m.train_steps is not None:
        t["max_steps"] = m.train_steps
    return t


def train_params(wc):
    run = wc_run(wc)
    m = methods.get_method(run.method)
    if not m.trains:
        raise ValueError(f"train_prompt: method {run.method} trains no prompt")
    text = task_text(wc.task)
    return {
        **run.wildcards(),
        "n_demos": m.n_demos(run.demos, config["demos"]["n_demos"]),
        "input_label": text["input_label"],
        "output_label": text["output_label"],
        "prompt": {k: config["prompt"][k] for k in PROMPT_SETTINGS},
        "train": train_settings(m),
        "device": config["device"],
        "precision": config["precision"],
    }


# ---- predict stage (predict.smk) ----------------------------------------------
#   results/<run>/predictions/<task>/<model>/<method>/L<len>/<demos>/s<seed>/predictions.jsonl
# method: icl (L0, no prompt), pt / ipt (the prompt trained with the same wildcards), transfer_<src> (the prompt
# trained by pt on <src> with the same model, length and seed, demos of the target task).


def predict_inputs(wc):
    run = wc_run(wc)
    d = {"model": model_inputs(wc.model), "test": LAYOUT.data(wc.task, "test")}
    if run.demos != "none":
        d["train"] = LAYOUT.data(wc.task, "train")
        r = demo_retriever(wc.demos, wc.seed, wc.task)
        d["retrieval"] = LAYOUT.retrieval(wc.task, r, "test")
    source = runs.prompt_source(run)
    if source is not None:
        d["prompt"] = LAYOUT.prompt(source)
    return d


def predict_params(wc):
    run = wc_run(wc)
    text = task_text(wc.task)
    p = config["predict"]
    return {
        **run.wildcards(),
        "n_demos": methods.get_method(run.method).n_demos(run.demos, config["demos"]["n_demos"]),
        "input_label": text["input_label"],
        "output_label": text["output_label"],
        "max_new_tokens": text["max_new_tokens"],
        "batch_size": int(p["batch_size"]),
        "max_length": int(p["max_length"]),
        "max_examples": p["max_examples"],
        "device": config["device"],
        "precision": config["precision"],
    }


# ---- score stage (score.smk) --------------------------------------------------
def task_metric_names(task):
    """The task's metrics as declared by its module in iclpt.data.tasks (the first is the primary one)."""
    return task_metrics(task)


def uses_database(task):
    """Whether one of the task's metrics reads its databases (the metric registry's `needs`)."""
    return task_needs_database(task)


def spider_database_dir(task):
    """Folder holding <db_id>/<db_id>.sqlite of the task's test split, as its adapter reads it
    (Task.database_dir; task_files gives the files' paths under data_root or download_dir/<task>)."""
    return get_task(task).database_dir(task_files(task), "")


def score_database_files(wc):
    """The SQLite files a database metric reads (<database_dir>/<db_id>/<db_id>.sqlite, every one there), so
    that an edited database reruns scoring. A downloaded release has none until it is downloaded: the next
    invocation sees them (and reruns scoring once, its input set having grown)."""
    return list(_database_files(wc.task)) if uses_database(wc.task) else []


@functools.lru_cache(maxsize=None)
def _database_files(task):
    return tuple(sorted(glob.glob(os.path.join(spider_database_dir(task), "*", "*.sqlite"))))


SCORE_EXEC_TIMEOUT_S = float(config["score"]["exec_timeout_s"])


# ---- report stage (report.smk) ------------------------------------------------
# Every output is wrapped in report() so `snakemake --report results/<run>/report.html` bundles it.

#: [choice] findings thresholds: a criterion holds when the fraction of cells exceeds it; fewer cells = no data
#: the verdict settings of findings.md (iclpt.reporting.findings)
FINDINGS = {k: float(config["report"][k]) for k in ("findings_margin", "power", "levelled_tail", "levelled_tolerance")}
#: [choice] E2 similarity buckets (quantiles of the top demo's similarity), at least this many examples each
SIM_BUCKETS = int(config["report"]["similarity_buckets"])
SIM_MIN_PER_BUCKET = int(config["report"]["similarity_min_per_bucket"])


def _exp(name):
    return bool(EXP[name])


def similarity_control_run():
    return _exp("similarity") and "random" in DEMO_SOURCES


def transfer_run():
    return _exp("transfer") and len(TASKS) > 1


def _bucket_runs():
    """The runs whose per-example scores E2b pairs: the prompt-and-demos and the prompt-only method (IPT, PT), in
    their main setting (main length)."""
    paired = {methods.method_with_role(r) for r in (methods.ROLE_PROMPT_AND_DEMOS, methods.ROLE_PROMPT_ONLY)}
    return [
        r
        for r in predict_runs()
        if r.method in paired and r.length == MAIN_LEN and r.demos == methods.METHODS[r.method].main_demos
    ]


def retrieval_summary_targets():
    return [LAYOUT.retrieval_summary(t, r) for t in TASKS for r in retrieval_retrievers()]


def demo_summaries():
    """The retrieval summary of each task's demo retriever: which test rows' top demo repeats their input."""
    return [LAYOUT.retrieval_summary(t, demo_retriever("retrieved", 0, t)) for t in TASKS]


def main_prompt_dirs():
    """The prompt folders of every trained method's main setting (tables/training.csv: the regime gate)."""
    return sorted(
        {
            os.path.dirname(LAYOUT.prompt(r))
            for r in train_runs()
            if r.length == MAIN_LEN and r.demos == methods.get_method(r.method).main_demos
        }
    )


def _main_outputs():
    return [LAYOUT.table("main.csv"), LAYOUT.table("main.md"), LAYOUT.table("main.tex")]


def _similarity_outputs():
    return [
        LAYOUT.table("similarity.csv"),
        LAYOUT.table("similarity_buckets.csv"),
        LAYOUT.figure("similarity.png"),
        LAYOUT.figure("similarity.pdf"),
    ]


def _stability_outputs():
    return [
        LAYOUT.table("stability.csv"),
        LAYOUT.figure("stability_seeds.png"),
        LAYOUT.figure("stability_seeds.pdf"),
        LAYOUT.figure("stability_length.png"),
        LAYOUT.figure("stability_length.pdf"),
    ]


def _transfer_outputs():
    return [LAYOUT.table("transfer.csv"), LAYOUT.figure("transfer.png"), LAYOUT.figure("transfer.pdf")]


def report_targets():
    """Every report output the config asks for (common.smk's all_targets() adds these)."""
    out = [
        LAYOUT.table("all_runs.csv"),
        LAYOUT.table("retrieval.csv"),
        LAYOUT.table("comparisons.csv"),
        LAYOUT.table("training.csv"),
        LAYOUT.figure("training.png"),
        LAYOUT.figure("training.pdf"),
        LAYOUT.findings(),
    ]
    if _exp("main"):
        out += _main_outputs()
    if _exp("similarity"):
        out += _similarity_outputs()
    if _exp("stability"):
        out += _stability_outputs()
    if transfer_run():
        out += _transfer_outputs()
    return out


def _findings_inputs():
    """What findings.md reads: the runs (finding 2's seed scores), every contrast and the training curves."""
    return {
        "runs": LAYOUT.table("all_runs.csv"),
        "comparisons": LAYOUT.table("comparisons.csv"),
        "training": LAYOUT.table("training.csv"),
    }


# ---- report stage: bootstrap intervals over test examples and paired tests (iclpt.reporting.stats) ---------------
#: resamples, level and seed of every interval and paired test; a report rule that resamples gets them as params
BOOTSTRAP = {
    "n_resamples": int(config["report"]["bootstrap_resamples"]),
    "alpha": float(config["report"]["alpha"]),
    "seed": int(config["report"]["bootstrap_seed"]),
}


def _in_main_length(r):
    """Whether a predict run has its method's main prompt length (E3's other lengths do not)."""
    return r.length == methods.get_method(r.method).length(MAIN_LEN)


def _scores_of(keep):
    return [LAYOUT.scores(r) for r in predict_runs() if _in_main_length(r) and keep(r)]


def metrics_beside(*file_lists):
    """The metrics.json beside each of these run files: the reports read a scores file's run identity from it
    (iclpt.reporting.aggregate.run_beside), so it is an input of every rule that reads scores."""
    return sorted({os.path.join(os.path.dirname(f), METRICS) for files in file_lists for f in files})


def main_ci_scores():
    """scores.jsonl of the E1 cells (and E4's reference rows): each non-family method in its main setting."""
    return _scores_of(
        lambda r: not methods.get_method(r.method).family and r.demos == methods.get_method(r.method).main_demos
    )


def similarity_ci_scores():
    """scores.jsonl of the E2a cells: the methods run with retrieved and with random demos."""
    return _scores_of(
        lambda r: not methods.get_method(r.method).family and "random" in methods.get_method(r.method).demos
    )


def transfer_ci_scores():
    """scores.jsonl of the E4 rows: the transfer runs and the target's reference methods."""
    return main_ci_scores() + _scores_of(lambda r: methods.get_method(r.method).family)


def comparison_scores():
    """scores.jsonl of every run a comparison of findings.md reads (every run at its main length)."""
    return _scores_of(lambda r: True)


def all_targets():
    """Everything the config asks for."""
    return data_targets() + retrieval_targets() + prompt_targets() + metric_targets() + report_targets()
