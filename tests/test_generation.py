"""Greedy decoding: batch-size and KV-cache invariance, stop at newline/EOS, the predictions file."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_engine import ARCHS, load, tiny_model_dir

from iclpt.engine.generation import decode_prediction, greedy_generate, predict_job, stop_token_ids
from iclpt.engine.soft_prompt import assemble_inputs, init_prompt
from iclpt.models.loading import lm_forward

TEXTS = ["a cat", "the old dog sleeps in the big house with a red bird", "fish", "the tree is new and green"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("with_prompt", [True, False], ids=["prompt", "icl"])
def test_greedy_is_batch_and_cache_invariant(arch, with_prompt):
    model, tok = load(arch, init_std=0.3)  # peaked logits: a real test of the argmax path
    prompt = init_prompt(model, 4, "random", seed=0) if with_prompt else None
    rows = [tok(t)["input_ids"] for t in TEXTS]
    pad = tok.pad_token_id
    single = [greedy_generate(model, prompt, [r], 12, pad)[0] for r in rows]
    batched = greedy_generate(model, prompt, rows, 12, pad)
    nocache = greedy_generate(model, prompt, rows, 12, pad, use_cache=False)
    assert batched == single
    assert nocache == batched
    assert all(len(s) == 12 for s in single)
    assert len({tuple(s) for s in single}) > 1  # not a degenerate constant output
    # first-step logits agree to 1e-5 between the padded batch and each row alone
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), pad)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.tensor(r)
        mask[i, T - len(r):] = 1
    with torch.no_grad():
        b = lm_forward(model, *assemble_inputs(model, prompt, ids, mask)).logits[:, -1]
        for i, r in enumerate(rows):
            one = torch.tensor([r])
            s = lm_forward(model, *assemble_inputs(model, prompt, one, torch.ones_like(one))).logits[0, -1]
            torch.testing.assert_close(b[i], s, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_rows_that_stop_leave_the_batch_unchanged(arch):
    """With the KV cache a stopped row leaves the batch; the others decode exactly as before (and as alone)."""
    model, tok = load(arch, init_std=0.3)
    prompt = init_prompt(model, 4, "random", seed=0)
    rows = [tok(t)["input_ids"] for t in TEXTS]
    pad = tok.pad_token_id
    free = greedy_generate(model, prompt, rows, 12, pad)
    stops = sorted({free[0][2], free[1][6], free[3][9]})  # rows stop at different steps
    cached = greedy_generate(model, prompt, rows, 12, pad, stops)
    assert cached == greedy_generate(model, prompt, rows, 12, pad, stops, use_cache=False)
    assert cached == [greedy_generate(model, prompt, [r], 12, pad, stops)[0] for r in rows]
    assert len({len(c) for c in cached}) > 1


def test_stops_at_newline_and_eos():
    model, tok = load("gpt2")
    stops = stop_token_ids(tok)
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    assert tok.eos_token_id in stops and nl[0] in stops
    # a row ends with its first stop token (the trained case is in test_training: the output stops at "\n")
    rows = [tok(t)["input_ids"] for t in TEXTS[:2]]
    out = greedy_generate(model, None, rows, 20, tok.pad_token_id, stops)
    for o in out:
        assert len(o) <= 20
        if any(i in stops for i in o):
            assert o[-1] in stops and all(i not in stops for i in o[:-1])
    assert decode_prediction(tok, tok(" the cat.\nText: more", add_special_tokens=False)["input_ids"]) == "the cat."
    assert decode_prediction(tok, [tok.eos_token_id]) == ""


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_predict_job_writes_the_contract_fields(tmp_path):
    from iclpt.engine.soft_prompt import save_prompt

    train = [{"id": f"t{i}", "split": "train", "input": f"cat {i}", "target": f"the cat {i}.",
              "references": [f"the cat {i}."], "meta": {}} for i in range(4)]
    test = [{"id": f"x{i}", "split": "test", "input": f"dog {i} runs", "target": "y", "references": ["y", "z"],
             "meta": {"group": f"g{i}"}} for i in range(5)]
    ret = [{"id": f"x{i}", "demo_ids": [f"t{(i + 1) % 4}", f"t{i % 4}"], "scores": [0.8, 0.1],
            "retriever": "dense", "config": {}} for i in range(5)]
    _write(tmp_path / "train.jsonl", train)
    _write(tmp_path / "test.jsonl", test)
    _write(tmp_path / "ret.jsonl", ret)
    model, _ = load("gpt2")
    save_prompt(tmp_path / "p.safetensors", init_prompt(model, 3, "vocab", seed=0))
    params = {"task": "dart", "model": "tiny", "method": "ipt", "length": 3, "demos": "retrieved", "seed": 0,
              "n_demos": 1, "input_label": "Triples", "output_label": "Text", "max_new_tokens": 6,
              "batch_size": 2, "max_length": 128, "max_examples": 4, "device": "cpu", "precision": "fp32"}
    out = tmp_path / "pred" / "predictions.jsonl"
    n = predict_job(model_path=tiny_model_dir("gpt2"), test_path=str(tmp_path / "test.jsonl"), out_path=out,
                    params=params, train_path=str(tmp_path / "train.jsonl"),
                    retrieval_path=str(tmp_path / "ret.jsonl"), prompt_path=str(tmp_path / "p.safetensors"))
    assert n == 4
    lines = out.read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [r["id"] for r in rows] == ["x0", "x1", "x2", "x3"]
    keys = {"id", "task", "model", "method", "seed", "prompt_length", "demo_source", "demo_ids", "demo_scores",
            "input_text", "prediction", "references", "meta", "max_new_tokens", "ref_tokens", "ran_on"}
    for line, r in zip(lines, rows):
        assert r["ran_on"]["device"] == "cpu" and r["ran_on"]["precision"] == "fp32"
        assert r["ran_on"]["gpu_name"] is None
        assert set(r) == keys
        assert list(json.loads(line)) == sorted(keys)  # sorted keys
        assert "\n" not in r["prediction"]
    r = rows[1]
    assert r["demo_ids"] == ["t2"] and r["demo_scores"] == [0.8] and r["prompt_length"] == 3
    assert r["input_text"] == "Triples: cat 2\nText: the cat 2.\n\nTriples: dog 1 runs\nText:"
    assert r["references"] == ["y", "z"] and r["meta"] == {"group": "g1"}
    assert r["max_new_tokens"] == 6 and len(r["ref_tokens"]) == 2 and all(n >= 2 for n in r["ref_tokens"])
    # ICL: no prompt, same demos; PT: no demos
    icl = dict(params, method="icl", length=0)
    predict_job(model_path=tiny_model_dir("gpt2"), test_path=str(tmp_path / "test.jsonl"), out_path=out,
                params=icl, train_path=str(tmp_path / "train.jsonl"), retrieval_path=str(tmp_path / "ret.jsonl"))
    assert json.loads(out.read_text().splitlines()[1])["prompt_length"] == 0
    pt = dict(params, method="pt", demos="none", n_demos=0)
    predict_job(model_path=tiny_model_dir("gpt2"), test_path=str(tmp_path / "test.jsonl"), out_path=out,
                params=pt, prompt_path=str(tmp_path / "p.safetensors"))
    r = json.loads(out.read_text().splitlines()[1])
    assert r["demo_ids"] == [] and r["input_text"] == "Triples: dog 1 runs\nText:"


def test_predict_job_zeroshot_is_the_bare_query(tmp_path):
    """No prompt, n_demos 0: the frozen model on the rendered query alone (the method name is only a label)."""
    from iclpt.engine.prompting import Template

    test = [{"id": f"x{i}", "split": "test", "input": f"dog {i} runs", "target": "y", "references": ["y"],
             "meta": {}} for i in range(3)]
    _write(tmp_path / "test.jsonl", test)
    params = {"task": "dart", "model": "tiny", "method": "zeroshot", "length": 0, "demos": "none", "seed": 0,
              "n_demos": 0, "input_label": "Triples", "output_label": "Text", "max_new_tokens": 5,
              "batch_size": 2, "max_length": 128, "max_examples": None, "device": "cpu", "precision": "fp32"}
    out = tmp_path / "predictions.jsonl"
    assert predict_job(model_path=tiny_model_dir("gpt2"), test_path=str(tmp_path / "test.jsonl"), out_path=out,
                       params=params) == 3
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    tpl = Template("Triples", "Text")
    for t, r in zip(test, rows):
        assert r["method"] == "zeroshot" and r["demo_source"] == "none"
        assert r["demo_ids"] == [] and r["demo_scores"] == [] and r["prompt_length"] == 0
        assert r["input_text"] == tpl.query(t["input"]) == f"Triples: {t['input']}\nText:"
        assert "\n" not in r["prediction"]


def test_predict_job_checks_the_demo_inputs(tmp_path):
    base = {"task": "dart", "model": "tiny", "method": "icl", "length": 0, "demos": "retrieved", "seed": 0,
            "n_demos": 1, "input_label": "Triples", "output_label": "Text", "max_new_tokens": 5, "device": "cpu"}
    kw = dict(model_path=tiny_model_dir("gpt2"), test_path=str(tmp_path / "test.jsonl"),
              out_path=tmp_path / "p.jsonl")
    with pytest.raises(ValueError, match="retrieval"):  # demos need the train split and the retrieval file
        predict_job(**kw, params=base, train_path=str(tmp_path / "train.jsonl"))
    with pytest.raises(ValueError, match="without demos"):  # n_demos 0 takes neither
        predict_job(**kw, params=dict(base, n_demos=0, demos="none"), retrieval_path=str(tmp_path / "r.jsonl"),
                    train_path=str(tmp_path / "train.jsonl"))
    with pytest.raises(ValueError, match="without demos"):  # the demo source label must agree
        predict_job(**kw, params=dict(base, n_demos=0))
    with pytest.raises(ValueError, match="n_demos"):
        predict_job(**kw, params={k: v for k, v in base.items() if k != "n_demos"})
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("arch", ARCHS)
def test_precast_bf16_weights_compute_exactly_what_autocast_computes(arch):
    from iclpt.models.loading import autocast, precast_for_autocast

    ref, tok = load(arch, init_std=0.3)
    fast, _ = load(arch, init_std=0.3)
    precast_for_autocast(fast)
    assert fast.get_input_embeddings().weight.dtype == torch.float32
    assert any(p.dtype == torch.bfloat16 for p in fast.parameters())
    prompt = init_prompt(ref, 3, "random", seed=0)
    rows = [tok(t)["input_ids"] for t in TEXTS]
    one = torch.tensor([rows[1]])
    cpu = torch.device("cpu")
    with torch.no_grad(), autocast(cpu, "bf16"):
        a = lm_forward(ref, *assemble_inputs(ref, prompt, one, torch.ones_like(one))).logits
        b = lm_forward(fast, *assemble_inputs(fast, prompt, one, torch.ones_like(one))).logits
    assert torch.equal(a, b)
    assert greedy_generate(ref, prompt, rows, 8, tok.pad_token_id, precision="bf16") == \
        greedy_generate(fast, prompt, rows, 8, tok.pad_token_id, precision="bf16")


def test_decoder_batches_time_and_texts_are_the_greedy_decoder():
    from iclpt.engine.generation import Decoder, generate_texts

    model, tok = load("gpt2", init_std=0.3)
    prompt = init_prompt(model, 2, "random", seed=0)
    rows = [tok(t)["input_ids"] for t in TEXTS]
    dec = Decoder(model, tok, prompt)
    want = greedy_generate(model, prompt, rows, 6, tok.pad_token_id, stop_token_ids(tok))
    new, seconds = dec.timed(rows, 6)
    assert new == want == dec.new_ids(rows, 6) and seconds > 0
    assert dec.texts(rows, 6, batch_size=2) == [decode_prediction(tok, n) for n in want]
    assert generate_texts(model, tok, prompt, rows, 6, batch_size=3) == dec.texts(rows, 6, batch_size=4)


def test_training_and_decoding_jobs_share_one_setup_and_clamp(tmp_path):
    """Both jobs load through iclpt.engine.job: one clamp of the budget to the model's context (256 here), the
    same encoder, and the same rendering of a record's prefix."""
    from iclpt.engine.generation import load_predict_inputs
    from iclpt.engine.job import clamp_max_length
    from iclpt.engine.training import load_train_inputs

    rows = [{"id": f"r{i}", "split": "x", "input": f"dog {i} runs", "target": f"the dog {i}.",
             "references": [f"the dog {i}."], "meta": {}} for i in range(3)]
    _write(tmp_path / "data.jsonl", rows)
    base = {"task": "dart", "model": "tiny", "method": "pt", "length": 2, "demos": "none", "seed": 0, "n_demos": 0,
            "input_label": "Triples", "output_label": "Text", "device": "cpu", "precision": "fp32"}
    data = str(tmp_path / "data.jsonl")
    tr = load_train_inputs(model_path=tiny_model_dir("gpt2"), train_path=data, dev_path=data,
                           params={**base, "train": {"max_length": 10_000, "dev_examples": 2}})
    pr = load_predict_inputs(model_path=tiny_model_dir("gpt2"), test_path=data,
                             params={**base, "length": None, "max_new_tokens": 4, "max_length": 10_000})
    assert tr.job.max_length == pr.max_length == 256 == clamp_max_length(10_000, tr.job.model)
    assert clamp_max_length(100, pr.model) == 100
    assert len(tr.job.examples("dev")) == 2 and len(pr.examples("test")) == 3
    train_row, test_row = tr.job.examples("train")[0], pr.examples("test")[0]
    assert train_row.ids[: len(train_row.ids) - train_row.n_target] == test_row.ids
