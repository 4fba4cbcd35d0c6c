# report stage: aggregation over seeds, E1-E4 tables and figures, findings (docs/architecture.md).
# Every output is wrapped in report() so `snakemake --report results/<run>/report.html` bundles it.

TABLES = RES + "/tables"
FIGURES = RES + "/figures"
REPORT_LOGS = RES + "/logs/report"
#: [choice] findings thresholds: a criterion holds when the fraction of cells exceeds it; fewer cells = no data
FINDINGS_THRESHOLD = float(config["report"]["findings_threshold"])
FINDINGS_MIN_CELLS = int(config["report"]["findings_min_cells"])
#: [choice] E2 similarity buckets (quantiles of the top demo's similarity), at least this many examples each
SIM_BUCKETS = int(config["report"]["similarity_buckets"])
SIM_MIN_PER_BUCKET = int(config["report"]["similarity_min_per_bucket"])


def _exp(name):
    return bool(EXP[name])


def similarity_control_run():
    return _exp("similarity") and "random" in DEMO_SOURCES


def transfer_run():
    return _exp("transfer") and len(TASKS) > 1


def _bucket_runs():
    """IPT and PT runs in their main setting (main length), whose per-example scores E2 pairs."""
    return [r for r in predict_runs()
            if r.method in ("ipt", "pt") and r.length == MAIN_LEN and r.demos == methods.METHODS[r.method].main_demos]


def retrieval_summary_targets():
    return [RETRIEVAL_SUMMARY.format(task=t, retriever=r) for t in TASKS for r in retrieval_retrievers()]


def _main_outputs():
    return [TABLES + "/main.csv", TABLES + "/main.md", TABLES + "/main.tex"]


def _similarity_outputs():
    return [TABLES + "/similarity.csv", TABLES + "/similarity_buckets.csv",
            FIGURES + "/similarity.png", FIGURES + "/similarity.pdf"]


def _stability_outputs():
    return [TABLES + "/stability.csv", FIGURES + "/stability_seeds.png", FIGURES + "/stability_seeds.pdf",
            FIGURES + "/stability_length.png", FIGURES + "/stability_length.pdf"]


def _transfer_outputs():
    return [TABLES + "/transfer.csv", FIGURES + "/transfer.png", FIGURES + "/transfer.pdf"]


def report_targets():
    """Every report output the config asks for (common.smk's all_targets() adds these)."""
    out = [TABLES + "/all_runs.csv", TABLES + "/retrieval.csv", RES + "/findings.md"]
    if _exp("main"):
        out += _main_outputs()
    if _exp("similarity"):
        out += _similarity_outputs()
    if _exp("stability"):
        out += _stability_outputs()
    if transfer_run():
        out += _transfer_outputs()
    return out


def _findings_inputs():
    d = {"runs": TABLES + "/all_runs.csv"}
    if _exp("main"):
        d["main"] = TABLES + "/main.csv"
    if _exp("similarity"):
        d["similarity"] = TABLES + "/similarity.csv"
        d["buckets"] = TABLES + "/similarity_buckets.csv"
    if _exp("stability"):
        d["stability"] = TABLES + "/stability.csv"
    if transfer_run():
        d["transfer"] = TABLES + "/transfer.csv"
    return d


rule report_runs:
    input:
        metrics=metric_targets(),
    output:
        runs=report(TABLES + "/all_runs.csv", caption="../report/all_runs.rst", category="Runs"),
    params:
        code=code("report_runs.py"),
    localrule: True
    log:
        REPORT_LOGS + "/runs.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_runs.py"


rule report_main:
    input:
        runs=TABLES + "/all_runs.csv",
    output:
        csv=report(TABLES + "/main.csv", caption="../report/main.rst", category="E1 main table"),
        md=report(TABLES + "/main.md", caption="../report/main.rst", category="E1 main table"),
        tex=report(TABLES + "/main.tex", caption="../report/main.rst", category="E1 main table"),
    params:
        code=code("report_main.py"),
        main_len=MAIN_LEN,
        methods=[m for m in methods.REPORT_ORDER if m in METHODS],
    localrule: True
    log:
        REPORT_LOGS + "/main.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_main.py"


rule report_retrieval:
    input:
        summaries=retrieval_summary_targets(),
    output:
        csv=report(TABLES + "/retrieval.csv", caption="../report/retrieval.rst", category="Retrieval"),
    params:
        code=code("report_retrieval.py"),
    localrule: True
    log:
        REPORT_LOGS + "/retrieval.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_retrieval.py"


rule report_similarity:
    input:
        runs=TABLES + "/all_runs.csv",
        scores=[fmt_run(PRED_DIR, r) + "/scores.jsonl" for r in _bucket_runs()],
        predictions=[fmt_run(PRED_DIR, r) + "/predictions.jsonl" for r in _bucket_runs()],
    output:
        csv=report(TABLES + "/similarity.csv", caption="../report/similarity.rst", category="E2 demo similarity"),
        buckets=report(TABLES + "/similarity_buckets.csv", caption="../report/similarity_buckets.rst",
                       category="E2 demo similarity"),
        png=report(FIGURES + "/similarity.png", caption="../report/similarity_fig.rst",
                   category="E2 demo similarity"),
        pdf=report(FIGURES + "/similarity.pdf", caption="../report/similarity_fig.rst", category="E2 demo similarity"),
    params:
        code=code("report_similarity.py"),
        main_len=MAIN_LEN,
        control_run=similarity_control_run(),
        n_buckets=SIM_BUCKETS,
        min_per_bucket=SIM_MIN_PER_BUCKET,
    localrule: True
    log:
        REPORT_LOGS + "/similarity.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_similarity.py"


rule report_stability:
    input:
        runs=TABLES + "/all_runs.csv",
    output:
        csv=report(TABLES + "/stability.csv", caption="../report/stability.rst", category="E3 stability"),
        seeds_png=report(FIGURES + "/stability_seeds.png", caption="../report/stability_seeds.rst",
                         category="E3 stability"),
        seeds_pdf=report(FIGURES + "/stability_seeds.pdf", caption="../report/stability_seeds.rst", category="E3 stability"),
        length_png=report(FIGURES + "/stability_length.png", caption="../report/stability_length.rst",
                          category="E3 stability"),
        length_pdf=report(FIGURES + "/stability_length.pdf", caption="../report/stability_length.rst", category="E3 stability"),
    params:
        code=code("report_stability.py"),
        main_len=MAIN_LEN,
    localrule: True
    log:
        REPORT_LOGS + "/stability.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_stability.py"


rule report_transfer:
    input:
        runs=TABLES + "/all_runs.csv",
    output:
        csv=report(TABLES + "/transfer.csv", caption="../report/transfer.rst", category="E4 transfer"),
        png=report(FIGURES + "/transfer.png", caption="../report/transfer_fig.rst", category="E4 transfer"),
        pdf=report(FIGURES + "/transfer.pdf", caption="../report/transfer_fig.rst", category="E4 transfer"),
    params:
        code=code("report_transfer.py"),
        main_len=MAIN_LEN,
    localrule: True
    log:
        REPORT_LOGS + "/transfer.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_transfer.py"


rule report_findings:
    input:
        **_findings_inputs(),
    output:
        md=report(RES + "/findings.md", caption="../report/findings.rst", category="Findings"),
    params:
        code=code("report_findings.py"),
        run=RUN,
        main_len=MAIN_LEN,
        threshold=FINDINGS_THRESHOLD,
        min_cells=FINDINGS_MIN_CELLS,
        experiments={"main": _exp("main"), "similarity": _exp("similarity"),
                     "similarity_control": similarity_control_run(), "stability": _exp("stability"),
                     "transfer": transfer_run()},
    localrule: True
    log:
        REPORT_LOGS + "/findings.log",
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/report_findings.py"
