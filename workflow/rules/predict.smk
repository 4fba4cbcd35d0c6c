# predict stage: greedy decoding of the test split (docs/architecture.md).
#   results/<run>/predictions/<task>/<model>/<method>/L<len>/<demos>/s<seed>/predictions.jsonl
# method: icl (L0, no prompt), pt / ipt (the prompt trained with the same wildcards), transfer_<src> (the prompt
# trained by pt on <src> with the same model, length and seed, demos of the target task).


def predict_inputs(wc):
    d = {"model": model_inputs(wc.model), "test": DATA.format(task=wc.task, split="test")}
    if wc.method == "icl" and int(wc.length) != 0:
        raise ValueError(f"predict: icl has no soft prompt; its length must be 0, got {wc.length}")
    if (wc.method == "pt") != (wc.demos == "none"):
        raise ValueError(f"predict: method {wc.method} with demos {wc.demos} (only pt takes none)")
    if wc.demos != "none":
        d["train"] = DATA.format(task=wc.task, split="train")
        r = demo_retriever(wc.demos, wc.seed, wc.task)
        d["retrieval"] = RETRIEVAL.format(task=wc.task, retriever=r, split="test")
    if wc.method in ("pt", "ipt"):
        d["prompt"] = PROMPT_DIR.format(**dict(wc.items())) + "/prompt.safetensors"
    elif wc.method.startswith("transfer_"):
        src = wc.method[len("transfer_"):]
        if src == wc.task:
            raise ValueError(f"predict: transfer from {src} to itself")
        d["prompt"] = PROMPT_DIR.format(task=src, model=wc.model, method="pt", length=wc.length, demos="none",
                                        seed=wc.seed) + "/prompt.safetensors"
    return d


def predict_params(wc):
    text = task_text(wc.task)
    p = config.get("predict", {})
    return {
        "task": wc.task,
        "model": wc.model,
        "method": wc.method,
        "length": int(wc.length),
        "demos": wc.demos,
        "seed": int(wc.seed),
        "n_demos": int(config["demos"]["n_demos"]) if wc.demos != "none" else 0,
        "input_label": text["input_label"],
        "output_label": text["output_label"],
        "max_new_tokens": text["max_new_tokens"],
        "batch_size": int(p.get("batch_size", 16)),
        "max_length": int(p.get("max_length", 1024)),
        "max_examples": p.get("max_examples"),
        "device": config.get("device", "auto"),
        "precision": config.get("precision", "auto"),
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
