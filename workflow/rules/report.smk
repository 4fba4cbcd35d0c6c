# report stage: aggregation over seeds, E1-E4 tables and figures, findings (docs/architecture.md).
rule report_runs:
    input:
        metrics=metric_targets(),
    output:
        runs=report(LAYOUT.table("all_runs.csv"), caption="../report/all_runs.rst", category="Runs"),
    log:
        LAYOUT.log("report", "runs"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_runs.py"),
    script:
        "../scripts/report_runs.py"


rule report_main:
    input:
        runs=LAYOUT.table("all_runs.csv"),
        scores=main_ci_scores(),
        run_metrics=metrics_beside(main_ci_scores()),
    output:
        csv=report(LAYOUT.table("main.csv"), caption="../report/main.rst", category="E1 main table"),
        md=report(LAYOUT.table("main.md"), caption="../report/main.rst", category="E1 main table"),
        tex=report(LAYOUT.table("main.tex"), caption="../report/main.rst", category="E1 main table"),
    log:
        LAYOUT.log("report", "main"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_main.py"),
        main_len=MAIN_LEN,
        methods=[m for m in methods.REPORT_ORDER if m in METHODS],
        bootstrap=BOOTSTRAP,
    script:
        "../scripts/report_main.py"


rule report_retrieval:
    input:
        summaries=retrieval_summary_targets(),
    output:
        csv=report(LAYOUT.table("retrieval.csv"), caption="../report/retrieval.rst", category="Retrieval"),
    log:
        LAYOUT.log("report", "retrieval"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_retrieval.py"),
    script:
        "../scripts/report_retrieval.py"


rule report_similarity:
    input:
        runs=LAYOUT.table("all_runs.csv"),
        scores=[LAYOUT.scores(r) for r in _bucket_runs()],
        predictions=[LAYOUT.predictions(r) for r in _bucket_runs()],
        ci_scores=similarity_ci_scores(),
        run_metrics=metrics_beside([LAYOUT.scores(r) for r in _bucket_runs()], similarity_ci_scores()),
    output:
        csv=report(LAYOUT.table("similarity.csv"), caption="../report/similarity.rst", category="E2 demo similarity"),
        buckets=report(
            LAYOUT.table("similarity_buckets.csv"),
            caption="../report/similarity_buckets.rst",
            category="E2 demo similarity",
        ),
        png=report(
            LAYOUT.figure("similarity.png"), caption="../report/similarity_fig.rst", category="E2 demo similarity"
        ),
        pdf=report(
            LAYOUT.figure("similarity.pdf"), caption="../report/similarity_fig.rst", category="E2 demo similarity"
        ),
    log:
        LAYOUT.log("report", "similarity"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_similarity.py"),
        main_len=MAIN_LEN,
        control_run=similarity_control_run(),
        n_buckets=SIM_BUCKETS,
        min_per_bucket=SIM_MIN_PER_BUCKET,
        bootstrap=BOOTSTRAP,
    script:
        "../scripts/report_similarity.py"


rule report_stability:
    input:
        runs=LAYOUT.table("all_runs.csv"),
    output:
        csv=report(LAYOUT.table("stability.csv"), caption="../report/stability.rst", category="E3 stability"),
        seeds_png=report(
            LAYOUT.figure("stability_seeds.png"), caption="../report/stability_seeds.rst", category="E3 stability"
        ),
        seeds_pdf=report(
            LAYOUT.figure("stability_seeds.pdf"), caption="../report/stability_seeds.rst", category="E3 stability"
        ),
        length_png=report(
            LAYOUT.figure("stability_length.png"), caption="../report/stability_length.rst", category="E3 stability"
        ),
        length_pdf=report(
            LAYOUT.figure("stability_length.pdf"), caption="../report/stability_length.rst", category="E3 stability"
        ),
    log:
        LAYOUT.log("report", "stability"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_stability.py"),
        main_len=MAIN_LEN,
    script:
        "../scripts/report_stability.py"


rule report_transfer:
    input:
        runs=LAYOUT.table("all_runs.csv"),
        scores=transfer_ci_scores(),
        run_metrics=metrics_beside(transfer_ci_scores()),
    output:
        csv=report(LAYOUT.table("transfer.csv"), caption="../report/transfer.rst", category="E4 transfer"),
        png=report(LAYOUT.figure("transfer.png"), caption="../report/transfer_fig.rst", category="E4 transfer"),
        pdf=report(LAYOUT.figure("transfer.pdf"), caption="../report/transfer_fig.rst", category="E4 transfer"),
    log:
        LAYOUT.log("report", "transfer"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_transfer.py"),
        main_len=MAIN_LEN,
        bootstrap=BOOTSTRAP,
    script:
        "../scripts/report_transfer.py"


rule report_comparisons:
    input:
        scores=comparison_scores(),
        bucket_scores=[LAYOUT.scores(r) for r in _bucket_runs()],
        bucket_predictions=[LAYOUT.predictions(r) for r in _bucket_runs()],
        run_metrics=metrics_beside(comparison_scores(), [LAYOUT.scores(r) for r in _bucket_runs()]),
        duplicates=demo_summaries(),
    output:
        csv=report(LAYOUT.table("comparisons.csv"), caption="../report/comparisons.rst", category="Findings"),
    log:
        LAYOUT.log("report", "comparisons"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_comparisons.py"),
        main_len=MAIN_LEN,
        bootstrap=BOOTSTRAP,
    script:
        "../scripts/report_comparisons.py"


rule report_training:
    input:
        meta=[os.path.join(d, "meta.json") for d in main_prompt_dirs()],
        logs=[os.path.join(d, "train_log.jsonl") for d in main_prompt_dirs()],
    output:
        csv=report(LAYOUT.table("training.csv"), caption="../report/training.rst", category="Findings"),
        png=report(LAYOUT.figure("training.png"), caption="../report/training.rst", category="Findings"),
        pdf=report(LAYOUT.figure("training.pdf"), caption="../report/training.rst", category="Findings"),
    log:
        LAYOUT.log("report", "training"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_training.py"),
        tail=FINDINGS["levelled_tail"],
        tolerance=FINDINGS["levelled_tolerance"],
    script:
        "../scripts/report_training.py"


rule report_findings:
    input:
        **_findings_inputs(),
    output:
        md=report(LAYOUT.findings(), caption="../report/findings.rst", category="Findings"),
    log:
        LAYOUT.log("report", "findings"),
    localrule: True
    conda:
        "../../envs/iclpt.yaml"
    params:
        code=code("report_findings.py"),
        run=RUN,
        main_len=MAIN_LEN,
        findings=FINDINGS,
        bootstrap=BOOTSTRAP,
        experiments={
            "main": _exp("main"),
            "similarity": _exp("similarity"),
            "similarity_control": similarity_control_run(),
            "stability": _exp("stability"),
            "transfer": transfer_run(),
        },
    script:
        "../scripts/report_findings.py"
