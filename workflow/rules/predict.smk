# predict stage: greedy decoding of the test split (docs/architecture.md).
rule predict:
    """Greedy decoding (KV cache, left padding) of ICL / PT / IPT / transfer inputs; generated text only."""
    input:
        unpack(predict_inputs),
    output:
        predictions=LAYOUT.predictions(WC),
    log:
        LAYOUT.run_log("predict", WC),
    conda:
        "../../envs/iclpt.yaml"
    threads: res("predict", "threads", 2)
    resources:
        mem_mb=mem_mb("predict", 4000),
        runtime=res("predict", "runtime", 60),
        gpu=res("predict", "gpu", 0),
    params:
        model_path=lambda wc: model_path(wc.model),
        job=predict_params,
        code=lambda wc: code("predict.py", task=wc.task),
    script:
        "../scripts/predict.py"
