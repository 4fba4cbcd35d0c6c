# score stage: metrics.json + scores.jsonl next to each predictions.jsonl (docs/architecture.md).
import os


def task_metric_names(task):
    """The task's metrics as declared by its module in iclpt.tasks (the first is the primary one)."""
    return list(get_task(task).metrics)


def spider_database_dir(task):
    """Folder holding <db_id>/<db_id>.sqlite: <data_root or download_dir>/<dir of the task's files>/database."""
    t = task_cfg(task)
    base = config["download_dir"] if t["source"] == "download" else config["data_root"]
    return os.path.normpath(os.path.join(base, os.path.dirname(t["files"]["test"]), "database"))


SCORE_EXEC_TIMEOUT_S = float(config["score"]["exec_timeout_s"])


rule score:
    input:
        predictions=PRED_DIR + "/predictions.jsonl",
    output:
        metrics=PRED_DIR + "/metrics.json",
        scores=PRED_DIR + "/scores.jsonl",
    params:
        code=lambda wc: code("score.py", task=wc.task),
        task_version=lambda wc: get_task(wc.task).version,
        metrics=lambda wc: task_metric_names(wc.task),
        database_dir=lambda wc: spider_database_dir(wc.task)
        if "execution_accuracy" in task_metric_names(wc.task) else None,
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
        RES + "/logs/score/" + RUN_DIR + ".log",
    threads: 1
    resources:
        mem_mb=mem_mb("score", 2000),
        runtime=res("score", "runtime", 30),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/score.py"
