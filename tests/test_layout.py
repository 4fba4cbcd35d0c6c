"""iclpt.orchestration.layout: the run directory of docs/architecture.md, from one place, registry-free."""

from __future__ import annotations

from pathlib import Path

from iclpt.orchestration import codeversion
from iclpt.orchestration.layout import RUN_FIELDS, WILDCARDS, Layout, run_path
from iclpt.orchestration.runs import Run

ROOT = Path(__file__).resolve().parents[1]
RUN = Run("dart", "tiny-gpt2", "transfer_mtop", 25, "retrieved", 3)


def test_run_files_follow_the_documented_run_directory():
    lay = Layout("results/x")
    folder = "dart/tiny-gpt2/transfer_mtop/L25/retrieved/s3"
    assert run_path(RUN) == folder
    assert lay.predictions(RUN) == f"results/x/predictions/{folder}/predictions.jsonl"
    assert lay.metrics(RUN) == f"results/x/predictions/{folder}/metrics.json"
    assert lay.scores(RUN) == f"results/x/predictions/{folder}/scores.jsonl"
    assert lay.prompt(RUN) == f"results/x/prompts/{folder}/prompt.safetensors"
    assert lay.prompt_files(RUN)["peft_model"] == f"results/x/prompts/{folder}/peft/adapter_model.safetensors"
    assert lay.run_log("score", RUN) == f"results/x/logs/score/{folder}.log"
    assert lay.data("dart", "dev") == "results/x/data/dart/dev.jsonl"
    assert lay.embeddings("dart", "minilm", "test") == "results/x/retrieval/dart/embed/minilm/test.npy"
    assert lay.retrieval("dart", "random_s1", "train") == "results/x/retrieval/dart/random_s1/train.jsonl"
    assert lay.retrieval_summary("dart", "bm25") == "results/x/retrieval/dart/bm25/summary.json"
    assert lay.table("main.csv") == "results/x/tables/main.csv" and lay.findings() == "results/x/findings.md"


def test_wildcard_run_gives_the_snakemake_patterns():
    assert tuple(WILDCARDS) == tuple("{" + f + "}" for f in RUN_FIELDS)
    assert RUN_FIELDS == Run._fields
    pattern = Layout("r").predictions(WILDCARDS)
    assert pattern == "r/predictions/{task}/{model}/{method}/L{length}/{demos}/s{seed}/predictions.jsonl"
    assert pattern.format(**RUN._asdict()) == Layout("r").predictions(RUN)


def test_layout_imports_no_registry():
    """Report and job code import the layout: a method or task edit must not change their code digests."""
    closure = codeversion.module_closure(["iclpt.orchestration.layout"])
    assert closure == ["iclpt", "iclpt.orchestration", "iclpt.orchestration.layout"]
    score = codeversion.module_closure(codeversion.script_modules(ROOT / "workflow" / "scripts" / "score.py"))
    assert "iclpt.orchestration.layout" in score and "iclpt.orchestration.methods" not in score
