# Retrieval stage (docs/architecture.md):
rule embed:
    """Encode the linearised inputs of one split with the sentence encoder (cached per task x split x encoder)."""
    input:
        data=LAYOUT.data("{task}", "{split}"),
        encoder=encoder_inputs(),
    output:
        emb=LAYOUT.embeddings("{task}", "{encoder}", "{split}"),
    log:
        LAYOUT.log("retrieval/embed", "{task}/{encoder}/{split}"),
    conda:
        "../../envs/iclpt.yaml"
    threads: res("embed", "threads", 2)
    resources:
        mem_mb=mem_mb("embed", 4000),
        runtime=res("embed", "runtime", 60),
        gpu=res("embed", "gpu", 0),
    params:
        code=lambda wc: code("embed.py", task=wc.task),
        encoder=lambda wc: wc.encoder,
        encoder_path=lambda wc: encoder_folder(),
        batch_size=int(RETRIEVAL_CFG["batch_size"]),
        device=retrieval_device(),
    script:
        "../scripts/embed.py"


rule retrieve:
    """k demos from the train split for every query of a split (train queries never get themselves / their group)."""
    input:
        unpack(retrieve_inputs),
    output:
        retrieval=LAYOUT.retrieval("{task}", "{retriever}", "{split}"),
    log:
        LAYOUT.log("retrieval/retrieve", "{task}/{retriever}/{split}"),
    conda:
        "../../envs/iclpt.yaml"
    threads: res("retrieve", "threads", 2)
    resources:
        mem_mb=mem_mb("retrieve", 4000),
        runtime=res("retrieve", "runtime", 60),
        gpu=res("retrieve", "gpu", 0),
    params:
        code=lambda wc: code("retrieve.py", task=wc.task),
        task=lambda wc: wc.task,
        split=lambda wc: wc.split,
        retriever=lambda wc: wc.retriever,
        k=RETRIEVAL_K,
        seed=retriever_seed,
        encoder=lambda wc: ENCODER if needs_embeddings(wc.retriever) else None,
        encoder_path=lambda wc: ENCODER_PATH if needs_embeddings(wc.retriever) else None,
        block_size=int(RETRIEVAL_CFG["block_size"]),
        device=retrieval_device(),
    script:
        "../scripts/retrieve.py"


rule retrieval_summary:
    """Similarity quantiles per split and how often the first demo's input equals the query's."""
    input:
        **{f"retrieval_{s}": LAYOUT.retrieval("{task}", "{retriever}", s) for s in SPLITS},
        **{f"data_{s}": LAYOUT.data("{task}", s) for s in SPLITS},
    output:
        summary=LAYOUT.retrieval_summary("{task}", "{retriever}"),
    log:
        LAYOUT.log("retrieval/summary", "{task}/{retriever}"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("retrieval_summary", 2000),
        runtime=res("retrieval_summary", "runtime", 10),
    params:
        code=lambda wc: code("retrieval_summary.py", task=wc.task),
        task=lambda wc: wc.task,
        retriever=lambda wc: wc.retriever,
        splits=SPLITS,
    script:
        "../scripts/retrieval_summary.py"
