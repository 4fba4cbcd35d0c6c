# score stage: metrics.json + scores.jsonl next to each predictions.jsonl (docs/architecture.md).
rule score:
    input:
        predictions=f"{PRED_DIR}/predictions.jsonl",
        databases=score_database_files,
    output:
        metrics=f"{PRED_DIR}/metrics.json",
        scores=f"{PRED_DIR}/scores.jsonl",
    params:
        code=lambda wc: code("score.py", task=wc.task),
        task_version=lambda wc: get_task(wc.task).version,
        metrics=lambda wc: task_metric_names(wc.task),
        database_dir=lambda wc: spider_database_dir(wc.task) if uses_database(wc.task) else None,
        exec_timeout_s=SCORE_EXEC_TIMEOUT_S,
        run=lambda wc: {
            "task": wc.task,
            "model": wc.model,
            "method": wc.method,
            "length": int(wc.length),
            "demos": wc.demos,
            "seed": int(wc.seed),
        },
    log:
        f"{RES}/logs/score/{RUN_DIR}.log",
    threads: 1
    resources:
        mem_mb=mem_mb("score", 2000),
        runtime=res("score", "runtime", 30),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/score.py"
