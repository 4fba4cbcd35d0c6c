# models stage: tiny random models built offline for the demo and sample configs (docs/architecture.md).
rule build_tiny_model:
    """Train a byte-level BPE tokenizer on the run's train text and save a seeded random GPT-2/OPT/BLOOM."""
    input:
        train=sorted(DATA.format(task=t, split="train") for t in TASKS),
    output:
        config=f"{MODEL_DIR}/config.json",
        weights=f"{MODEL_DIR}/model.safetensors",
        tokenizer=f"{MODEL_DIR}/tokenizer.json",
    params:
        code=code("build_tiny_model.py"),
        build=lambda wc: tiny_build(wc.model),
    log:
        f"{RES}/logs/build_tiny_model/{{model}}.log",
    threads: 1
    resources:
        mem_mb=mem_mb("build_tiny_model", 2000),
        runtime=res("build_tiny_model", "runtime", 10),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/build_tiny_model.py"
