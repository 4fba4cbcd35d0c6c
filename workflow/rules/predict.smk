# predict stage: greedy decoding of the test split (docs/architecture.md).
#   results/<run>/predictions/<task>/<model>/<method>/L<len>/<demos>/s<seed>/predictions.jsonl
# method: icl (L0, no prompt), pt / ipt (the prompt trained with the same wildcards), transfer_<src> (the prompt
# trained by pt on <src> with the same model, length and seed, demos of the target task).


def predict_inputs(wc):
    run = wc_run(wc)
    d = {"model": model_inputs(wc.model), "test": DATA.format(task=wc.task, split="test")}
    if run.demos != "none":
        d["train"] = DATA.format(task=wc.task, split="train")
        r = demo_retriever(wc.demos, wc.seed, wc.task)
        d["retrieval"] = RETRIEVAL.format(task=wc.task, retriever=r, split="test")
    source = runs.prompt_source(run)
    if source is not None:
        d["prompt"] = fmt_run(PROMPT_DIR, source) + "/prompt.safetensors"
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


rule predict:
    """Greedy decoding (KV cache, left padding) of ICL / PT / IPT / transfer inputs; generated text only."""
    input:
        unpack(predict_inputs),
    output:
        predictions=PRED_DIR + "/predictions.jsonl",
    params:
        model_path=lambda wc: model_path(wc.model),
        job=predict_params,
        code=lambda wc: code("predict.py", task=wc.task),
    log:
        RES + "/logs/predict/" + RUN_DIR + ".log",
    threads: res("predict", "threads", 2)
    resources:
        mem_mb=mem_mb("predict", 4000),
        runtime=res("predict", "runtime", 60),
        gpu=res("predict", "gpu", 0),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/predict.py"
