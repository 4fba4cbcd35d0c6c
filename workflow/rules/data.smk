# Data stage: download the official data (tasks with `source: download`) and prepare each task's splits.
#   results/<run>/data/<task>/{train,dev,test}.jsonl  (docs/architecture.md)  + prepare.json (counts, provenance)
DOWNLOAD_DIR = config["download_dir"]
DATA_ROOT = config["data_root"]
DOWNLOAD_MANIFEST = DOWNLOAD_DIR + "/{task}/manifest.json"


def task_source(task):
    return task_cfg(task)["source"]


def task_files(task):
    """{split: path} of the task's official files: under data_root (local) or download_dir/<task> (download)."""
    root = os.path.join(DOWNLOAD_DIR, task) if task_source(task) == "download" else DATA_ROOT
    return {s: os.path.join(root, task_cfg(task)["files"][s]) for s in SPLITS}


def prepare_inputs(wildcards):
    """Local: every file the adapter reads (edits rerun the job). Download: the download's manifest."""
    task = wildcards.task
    if task_source(task) == "download":
        return {"manifest": DOWNLOAD_MANIFEST.format(task=task)}
    files = task_files(task)
    adapter = get_task(task)
    out = {s: files[s] for s in SPLITS}
    side = sorted({str(p) for s in SPLITS for p in adapter.side_files(s, files[s])})
    out.update({f"side{i}": p for i, p in enumerate(side)})
    return out


def max_examples(task):
    m = task_cfg(task)["max_examples"]
    return {s: m.get(s) for s in SPLITS}  # a split without a limit keeps every example


rule download:
    """Fetch a task's official data into download_dir/<task>/ (sha256 checked; manifest.json written last)."""
    output:
        manifest=DOWNLOAD_MANIFEST,
    params:
        code=lambda wc: code("download.py", task=wc.task),
        task="{task}",
        base_url=os.environ.get("ICLPT_DOWNLOAD_BASE_URL") or None,
    log:
        DOWNLOAD_DIR + "/logs/{task}.log",
    localrule: True
    retries: 1
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/download.py"


rule prepare:
    """Load a task's splits with its adapter, validate, group, subsample; write the three split files."""
    input:
        unpack(prepare_inputs),
    output:
        train=RES + "/data/{task}/train.jsonl",
        dev=RES + "/data/{task}/dev.jsonl",
        test=RES + "/data/{task}/test.jsonl",
        summary=RES + "/data/{task}/prepare.json",
    params:
        code=lambda wc: code("prepare.py", task=wc.task),
        task_version=lambda wc: get_task(wc.task).version,
        task="{task}",
        files=lambda wc: task_files(wc.task),
        max_examples=lambda wc: max_examples(wc.task),
        data_seed=int(config["data_seed"]),
        source=lambda wc: task_source(wc.task),
    log:
        RES + "/logs/prepare/{task}.log",
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/prepare.py"
