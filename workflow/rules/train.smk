# train stage: one soft prompt per (task, model, method in {pt, ipt}, length, demos, seed) (docs/architecture.md).
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
        "train": DATA.format(task=wc.task, split="train"),
        "dev": DATA.format(task=wc.task, split="dev"),
    }
    if run.demos != "none":
        r = demo_retriever(wc.demos, wc.seed, wc.task)
        d["train_retrieval"] = RETRIEVAL.format(task=wc.task, retriever=r, split="train")
        d["dev_retrieval"] = RETRIEVAL.format(task=wc.task, retriever=r, split="dev")
    return d


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
        "train": dict(config["train"]),
        "device": config["device"],
        "precision": config["precision"],
    }


rule train_prompt:
    """Train a soft prompt (PT: [P][input]; IPT: [P][demo][input]) on the frozen model; keep the best by dev loss."""
    input:
        unpack(train_inputs),
    output:
        prompt=PROMPT_DIR + "/prompt.safetensors",
        meta=PROMPT_DIR + "/meta.json",
        train_log=PROMPT_DIR + "/train_log.jsonl",
        peft_config=PROMPT_DIR + "/peft/adapter_config.json",
        peft_model=PROMPT_DIR + "/peft/adapter_model.safetensors",
    wildcard_constraints:
        method="|".join(methods.trained_methods()),
    params:
        model_path=lambda wc: model_path(wc.model),
        checkpoint_root=CHECKPOINTS,
        job=train_params,
        code=lambda wc: code("train_prompt.py", task=wc.task),
    log:
        RES + "/logs/train_prompt/" + RUN_DIR + ".log",
    threads: res("train_prompt", "threads", 2)
    resources:
        mem_mb=mem_mb("train_prompt", 4000),
        runtime=res("train_prompt", "runtime", 120),
        gpu=res("train_prompt", "gpu", 0),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/train_prompt.py"
