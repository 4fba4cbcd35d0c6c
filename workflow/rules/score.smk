# score stage: metrics.json + scores.jsonl next to each predictions.jsonl (docs/architecture.md). A light job
# (seconds): a localrule, so a cluster run does not submit one SLURM job per predictions file.
rule score:
    input:
        predictions=LAYOUT.predictions(WC),
        test=LAYOUT.data("{task}", "test"),
        databases=score_database_files,
    output:
        metrics=LAYOUT.metrics(WC),
        scores=LAYOUT.scores(WC),
    log:
        LAYOUT.run_log("score", WC),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("score", 2000),
        runtime=res("score", "runtime", 30),
    params:
        code=lambda wc: code("score.py", task=wc.task),
        task_version=lambda wc: get_task(wc.task).version,
        metrics=lambda wc: task_metric_names(wc.task),
        database_dir=lambda wc: spider_database_dir(wc.task) if uses_database(wc.task) else None,
        exec_timeout_s=SCORE_EXEC_TIMEOUT_S,
        max_examples=config["predict"]["max_examples"],
        run=lambda wc: wc_run(wc).wildcards(),
    script:
        "../scripts/score.py"
