# report stage: aggregation over seeds, E1-E4 tables and figures, findings (docs/architecture.md).
rule report_runs:
    input:
        metrics=metric_targets(),
    output:
        runs=report(f"{TABLES}/all_runs.csv", caption="../report/all_runs.rst", category="Runs"),
    params:
        code=code("report_runs.py"),
    localrule: True
    log:
        f"{REPORT_LOGS}/runs.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_runs.py"


rule report_main:
    input:
        runs=f"{TABLES}/all_runs.csv",
        scores=main_ci_scores(),
    output:
        csv=report(f"{TABLES}/main.csv", caption="../report/main.rst", category="E1 main table"),
        md=report(f"{TABLES}/main.md", caption="../report/main.rst", category="E1 main table"),
        tex=report(f"{TABLES}/main.tex", caption="../report/main.rst", category="E1 main table"),
    params:
        code=code("report_main.py"),
        main_len=MAIN_LEN,
        methods=[m for m in methods.REPORT_ORDER if m in METHODS],
        bootstrap=BOOTSTRAP,
    localrule: True
    log:
        f"{REPORT_LOGS}/main.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_main.py"


rule report_retrieval:
    input:
        summaries=retrieval_summary_targets(),
    output:
        csv=report(f"{TABLES}/retrieval.csv", caption="../report/retrieval.rst", category="Retrieval"),
    params:
        code=code("report_retrieval.py"),
    localrule: True
    log:
        f"{REPORT_LOGS}/retrieval.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_retrieval.py"


rule report_similarity:
    input:
        runs=f"{TABLES}/all_runs.csv",
        scores=[f"{fmt_run(PRED_DIR, r)}/scores.jsonl" for r in _bucket_runs()],
        predictions=[f"{fmt_run(PRED_DIR, r)}/predictions.jsonl" for r in _bucket_runs()],
        ci_scores=similarity_ci_scores(),
    output:
        csv=report(f"{TABLES}/similarity.csv", caption="../report/similarity.rst", category="E2 demo similarity"),
        buckets=report(f"{TABLES}/similarity_buckets.csv", caption="../report/similarity_buckets.rst",
                       category="E2 demo similarity"),
        png=report(f"{FIGURES}/similarity.png", caption="../report/similarity_fig.rst",
                   category="E2 demo similarity"),
        pdf=report(f"{FIGURES}/similarity.pdf", caption="../report/similarity_fig.rst", category="E2 demo similarity"),
    params:
        code=code("report_similarity.py"),
        main_len=MAIN_LEN,
        control_run=similarity_control_run(),
        n_buckets=SIM_BUCKETS,
        min_per_bucket=SIM_MIN_PER_BUCKET,
        bootstrap=BOOTSTRAP,
    localrule: True
    log:
        f"{REPORT_LOGS}/similarity.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_similarity.py"


rule report_stability:
    input:
        runs=f"{TABLES}/all_runs.csv",
    output:
        csv=report(f"{TABLES}/stability.csv", caption="../report/stability.rst", category="E3 stability"),
        seeds_png=report(f"{FIGURES}/stability_seeds.png", caption="../report/stability_seeds.rst",
                         category="E3 stability"),
        seeds_pdf=report(f"{FIGURES}/stability_seeds.pdf", caption="../report/stability_seeds.rst", category="E3 stability"),
        length_png=report(f"{FIGURES}/stability_length.png", caption="../report/stability_length.rst",
                          category="E3 stability"),
        length_pdf=report(f"{FIGURES}/stability_length.pdf", caption="../report/stability_length.rst", category="E3 stability"),
    params:
        code=code("report_stability.py"),
        main_len=MAIN_LEN,
    localrule: True
    log:
        f"{REPORT_LOGS}/stability.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_stability.py"


rule report_transfer:
    input:
        runs=f"{TABLES}/all_runs.csv",
        scores=transfer_ci_scores(),
    output:
        csv=report(f"{TABLES}/transfer.csv", caption="../report/transfer.rst", category="E4 transfer"),
        png=report(f"{FIGURES}/transfer.png", caption="../report/transfer_fig.rst", category="E4 transfer"),
        pdf=report(f"{FIGURES}/transfer.pdf", caption="../report/transfer_fig.rst", category="E4 transfer"),
    params:
        code=code("report_transfer.py"),
        main_len=MAIN_LEN,
        bootstrap=BOOTSTRAP,
    localrule: True
    log:
        f"{REPORT_LOGS}/transfer.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_transfer.py"


rule report_comparisons:
    input:
        scores=comparison_scores(),
        bucket_scores=[f"{fmt_run(PRED_DIR, r)}/scores.jsonl" for r in _bucket_runs()],
        bucket_predictions=[f"{fmt_run(PRED_DIR, r)}/predictions.jsonl" for r in _bucket_runs()],
    output:
        csv=report(f"{TABLES}/comparisons.csv", caption="../report/comparisons.rst", category="Findings"),
    params:
        code=code("report_comparisons.py"),
        main_len=MAIN_LEN,
        n_buckets=SIM_BUCKETS,
        min_per_bucket=SIM_MIN_PER_BUCKET,
        bootstrap=BOOTSTRAP,
    localrule: True
    log:
        f"{REPORT_LOGS}/comparisons.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_comparisons.py"


rule report_findings:
    input:
        **_findings_inputs(),
    output:
        md=report(f"{RES}/findings.md", caption="../report/findings.rst", category="Findings"),
    params:
        code=code("report_findings.py"),
        run=RUN,
        main_len=MAIN_LEN,
        threshold=FINDINGS_THRESHOLD,
        min_cells=FINDINGS_MIN_CELLS,
        bootstrap=BOOTSTRAP,
        experiments={"main": _exp("main"), "similarity": _exp("similarity"),
                     "similarity_control": similarity_control_run(), "stability": _exp("stability"),
                     "transfer": transfer_run()},
    localrule: True
    log:
        f"{REPORT_LOGS}/findings.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_findings.py"
