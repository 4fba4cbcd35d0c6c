# Data stage: download the official data (tasks with `source: download`) and prepare each task's splits.
rule download:
    """Fetch a task's official data into download_dir/<task>/ (sha256 checked; manifest.json written last)."""
    output:
        manifest=DOWNLOAD_MANIFEST,
    log:
        f"{DOWNLOAD_DIR}/logs/{{task}}.log",
    retries: 1
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=lambda wc: code("download.py", task=wc.task),
        task="{task}",
        base_url=os.environ.get("ICLPT_DOWNLOAD_BASE_URL") or None,
    script:
        "../scripts/download.py"


rule prepare:
    """Load a task's splits with its adapter, validate, group, subsample; write the three split files."""
    input:
        unpack(prepare_inputs),
    output:
        train=LAYOUT.data("{task}", "train"),
        dev=LAYOUT.data("{task}", "dev"),
        test=LAYOUT.data("{task}", "test"),
        summary=LAYOUT.prepare_summary("{task}"),
    log:
        LAYOUT.log("prepare", "{task}"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=lambda wc: code("prepare.py", task=wc.task),
        task_version=lambda wc: get_task(wc.task).version,
        task="{task}",
        files=lambda wc: task_files(wc.task),
        max_examples=lambda wc: max_examples(wc.task),
        data_seed=int(config["data_seed"]),
        source=lambda wc: task_source(wc.task),
        missing_database=lambda wc: task_cfg(wc.task)["missing_database"],
        dev_from_train=lambda wc: dev_from_train(wc.task),
        inputs_sha256=lambda wc: prepare_digests(wc.task),
    script:
        "../scripts/prepare.py"
