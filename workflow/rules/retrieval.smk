# Retrieval stage (docs/architecture.md):
#   embed:             results/<run>/retrieval/<task>/embed/<encoder>/<split>.npy   (float32, L2-normalised)
#   retrieve:          results/<run>/retrieval/<task>/<retriever>/<split>.jsonl     (k train demos per query)
#   retrieval_summary: results/<run>/retrieval/<task>/<retriever>/summary.json
# Embeddings are keyed by task x split x encoder only, so changing k or adding a retriever never re-embeds.
from iclpt.retrieval import check_config as _check_retrieval_config  # noqa: E402
from iclpt.retrieval import needs_embeddings, parse_retriever  # noqa: E402

RETRIEVAL_CFG = config["retrieval"]
RETRIEVAL_K = int(RETRIEVAL_CFG["k"])
ENCODER_PATH = RETRIEVAL_CFG["encoder_path"]
RETRIEVAL_LOGS = RES + "/logs/retrieval"

# Cheap parse-time checks: retriever names, k, sizes, and that the encoder path/package exists (no model load).
_check_retrieval_config(RETRIEVAL_CFG, retrieval_retrievers())


def retrieval_device():
    return config["device"]


def retrieve_inputs(wc):
    d = {
        "queries": DATA.format(task=wc.task, split=wc.split),
        "train": DATA.format(task=wc.task, split="train"),
    }
    if needs_embeddings(wc.retriever):
        d["query_emb"] = EMBED.format(task=wc.task, encoder=ENCODER, split=wc.split)
        d["train_emb"] = EMBED.format(task=wc.task, encoder=ENCODER, split="train")
    return d


def retriever_seed(wc):
    return parse_retriever(wc.retriever)[1]


rule embed:
    """Encode the linearised inputs of one split with the sentence encoder (cached per task x split x encoder)."""
    input:
        data=DATA,
    output:
        emb=EMBED,
    params:
        code=lambda wc: code("embed.py", task=wc.task),
        encoder=lambda wc: wc.encoder,
        encoder_path=ENCODER_PATH,
        batch_size=int(RETRIEVAL_CFG["batch_size"]),
        device=retrieval_device(),
    log:
        RETRIEVAL_LOGS + "/embed/{task}/{encoder}/{split}.log",
    threads: res("embed", "threads", 2)
    resources:
        mem_mb=mem_mb("embed", 4000),
        runtime=res("embed", "runtime", 60),
        gpu=res("embed", "gpu", 0),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/embed.py"


rule retrieve:
    """k demos from the train split for every query of a split (train queries never get themselves / their group)."""
    input:
        unpack(retrieve_inputs),
    output:
        retrieval=RETRIEVAL,
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
    log:
        RETRIEVAL_LOGS + "/retrieve/{task}/{retriever}/{split}.log",
    threads: res("retrieve", "threads", 2)
    resources:
        mem_mb=mem_mb("retrieve", 4000),
        runtime=res("retrieve", "runtime", 60),
        gpu=res("retrieve", "gpu", 0),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/retrieve.py"


rule retrieval_summary:
    """Similarity quantiles per split and how often the first demo's input equals the query's."""
    input:
        **{f"retrieval_{s}": RES + "/retrieval/{task}/{retriever}/" + s + ".jsonl" for s in SPLITS},
        **{f"data_{s}": RES + "/data/{task}/" + s + ".jsonl" for s in SPLITS},
    output:
        summary=RETRIEVAL_SUMMARY,
    params:
        code=lambda wc: code("retrieval_summary.py", task=wc.task),
        task=lambda wc: wc.task,
        retriever=lambda wc: wc.retriever,
        splits=SPLITS,
    log:
        RETRIEVAL_LOGS + "/summary/{task}/{retriever}.log",
    threads: 1
    resources:
        mem_mb=mem_mb("retrieval_summary", 2000),
        runtime=res("retrieval_summary", "runtime", 10),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/retrieval_summary.py"
