# train stage: one soft prompt per (task, model, method in {pt, ipt}, length, demos, seed) (docs/architecture.md).
rule train_prompt:
    """Train a soft prompt (PT: [P][input]; IPT: [P][demo][input]) on the frozen model; keep the best by dev loss."""
    input:
        unpack(train_inputs),
    output:
        **LAYOUT.prompt_files(WC),
    log:
        LAYOUT.run_log("train_prompt", WC),
    wildcard_constraints:
        method="|".join(methods.trained_methods()),
    conda:
        "../../envs/iclpt.yaml"
    threads: res("train_prompt", "threads", 2)
    resources:
        mem_mb=mem_mb("train_prompt", 4000),
        runtime=res("train_prompt", "runtime", 120),
        gpu=res("train_prompt", "gpu", 0),
    params:
        model_path=lambda wc: model_path(wc.model),
        checkpoint_root=LAYOUT.checkpoints(),
        job=train_params,
        code=lambda wc: code("train_prompt.py", task=wc.task),
    script:
        "../scripts/train_prompt.py"
