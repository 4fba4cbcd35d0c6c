# train stage: one soft prompt per (task, model, method in {pt, ipt}, length, demos, seed) (docs/architecture.md).
rule train_prompt:
    """Train a soft prompt (PT: [P][input]; IPT: [P][demo][input]) on the frozen model; keep the best by dev loss."""
    input:
        unpack(train_inputs),
    output:
        prompt=f"{PROMPT_DIR}/prompt.safetensors",
        meta=f"{PROMPT_DIR}/meta.json",
        train_log=f"{PROMPT_DIR}/train_log.jsonl",
        peft_config=f"{PROMPT_DIR}/peft/adapter_config.json",
        peft_model=f"{PROMPT_DIR}/peft/adapter_model.safetensors",
    wildcard_constraints:
        method="|".join(methods.trained_methods()),
    params:
        model_path=lambda wc: model_path(wc.model),
        checkpoint_root=CHECKPOINTS,
        job=train_params,
        code=lambda wc: code("train_prompt.py", task=wc.task),
    log:
        f"{RES}/logs/train_prompt/{RUN_DIR}.log",
    threads: res("train_prompt", "threads", 2)
    resources:
        mem_mb=mem_mb("train_prompt", 4000),
        runtime=res("train_prompt", "runtime", 120),
        gpu=res("train_prompt", "gpu", 0),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/train_prompt.py"
