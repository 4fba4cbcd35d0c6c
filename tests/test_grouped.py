"""Decoding many runs of one (task, model) together (issue 28 item 2): mixed rows laid out as alone, the same tokens
and texts as per-run decoding on the five tiny architectures and SmolLM2, byte-identical predictions files, and the
out-of-memory halving of the batch size."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tiny_engine import ARCHS, load, tiny_model_dir

from iclpt.engine import grouped
from iclpt.engine.generation import Decoder, greedy_generate, predict_job, stop_token_ids
from iclpt.engine.grouped import (
    CPU_BATCH_SIZE,
    DecodeRun,
    RunFiles,
    assemble_mixed,
    decode_in_batches,
    decode_runs,
    decode_runs_ids,
    greedy_mixed,
    grouped_order,
    predict_group,
    resolve_batch_size,
)
from iclpt.engine.soft_prompt import assemble_inputs, init_prompt

QUERIES = ["a cat", "the old dog sleeps in the big house with a red bird", "fish", "the tree is new and green",
           "red blue green small big old new", "dog", "the city has a river and a table", "bird eats fish"]
DEMO = "the red cat sleeps on the old table.\n\n"
CPU = torch.device("cpu")


def _mixed_runs(model, tok):
    """Runs of every kind a (task, model) group holds: zero-shot, ICL (demos, no prompt), PT at two prompt lengths,
    IPT (prompt + demos), a transfer-like run sharing a prompt object with another; each its own budget."""
    plain = [tok(q)["input_ids"] for q in QUERIES]
    demos = [tok(DEMO + q)["input_ids"] for q in QUERIES]
    p4, p9 = init_prompt(model, 4, "random", seed=0), init_prompt(model, 9, "random", seed=1)
    return [DecodeRun(plain, 7, None, "zeroshot"), DecodeRun(demos, 10, None, "icl"),
            DecodeRun(plain[:5], 12, p4, "pt-L4"), DecodeRun(plain[3:], 6, p9, "pt-L9"),
            DecodeRun(demos[2:], 9, p4, "ipt-L4"), DecodeRun(demos[:3], 11, p9, "transfer-L9")]


def test_assemble_mixed_lays_out_every_row_as_alone():
    model, tok = load("llama")
    p2, p5 = init_prompt(model, 2, "random", seed=0), init_prompt(model, 5, "random", seed=1)
    rows = [tok(q)["input_ids"] for q in QUERIES[:4]]
    prompts = [None, p2, p5, p2]
    with torch.no_grad():
        e, a, p = assemble_mixed(model, prompts, rows, tok.pad_token_id, CPU)
        assert e.shape[1] == max(len(r) + (0 if q is None else q.shape[0]) for r, q in zip(rows, prompts))
        for i, (r, q) in enumerate(zip(rows, prompts)):
            one = torch.tensor([r])
            e1, a1, p1 = assemble_inputs(model, q, one, torch.ones_like(one))
            L = e1.shape[1]
            assert torch.equal(e[i, -L:], e1[0]) and torch.equal(a[i, -L:], a1[0]) and torch.equal(p[i, -L:], p1[0])
            assert not a[i, :-L].any() and not p[i, :-L].any()
        # one prompt for all rows: exactly what assemble_inputs gives the padded batch
        T = max(map(len, rows))
        ids = torch.full((len(rows), T), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, T - len(r):] = torch.tensor(r)
            mask[i, T - len(r):] = 1
        for q in (None, p5):
            got, want = assemble_mixed(model, [q] * len(rows), rows, tok.pad_token_id, CPU), \
                assemble_inputs(model, q, ids, mask)
            assert all(torch.equal(x, y) for x, y in zip(got, want))
    with pytest.raises(ValueError, match="hidden size"):
        assemble_mixed(model, [torch.zeros(2, 7)], rows[:1], tok.pad_token_id, CPU)
    with pytest.raises(ValueError, match="empty row"):
        assemble_mixed(model, [None], [[]], tok.pad_token_id, CPU)


@pytest.mark.parametrize("arch", ARCHS)
def test_grouped_decode_equals_per_run_decode(arch):
    """fp32 CPU: every run's new ids and texts equal its per-run decode (batch 16, as predict_job), for batches of
    1, 5 and the CPU default, with runs of mixed prompt lengths, demos and budgets in each batch."""
    model, tok = load(arch, init_std=0.3)  # peaked logits: the argmax path is exercised, not a constant output
    runs = _mixed_runs(model, tok)
    stops = stop_token_ids(tok)
    free = [greedy_generate(model, r.prompt, r.rows, r.max_new_tokens, tok.pad_token_id) for r in runs]
    # stop tokens drawn from the free run so rows stop at different steps; plus the real stop ids
    cut = sorted({free[0][0][2], free[2][1][4], free[1][3][1]} | set(stops))
    per_run = [greedy_generate(model, r.prompt, r.rows, r.max_new_tokens, tok.pad_token_id, cut) for r in runs]
    assert len({len(x) for run in per_run for x in run}) > 2  # rows stop at different steps and budgets
    for bs in (1, 5, "auto"):
        assert decode_runs_ids(model, runs, tok.pad_token_id, cut, bs) == per_run, bs
    texts = [Decoder(model, tok, r.prompt).texts(r.rows, r.max_new_tokens, batch_size=16) for r in runs]
    assert decode_runs(model, tok, runs, batch_size=7) == texts
    assert len({t for run in texts for t in run}) > 3


def test_greedy_mixed_checks_its_arguments_and_budgets():
    model, tok = load("gpt2", init_std=0.3)
    rows = [tok(q)["input_ids"] for q in QUERIES[:3]]
    out = greedy_mixed(model, [None] * 3, rows, [1, 4, 2], tok.pad_token_id)
    assert [len(x) for x in out] == [1, 4, 2]  # no stop ids: each row runs to its own budget
    with pytest.raises(ValueError, match="budgets"):
        greedy_mixed(model, [None] * 3, rows, [4, 4], tok.pad_token_id)
    with pytest.raises(ValueError, match=">= 1"):
        greedy_mixed(model, [None] * 3, rows, [4, 0, 4], tok.pad_token_id)


def test_grouped_order_is_longest_prefix_first():
    a, b = torch.zeros(3, 8), torch.zeros(1, 8)
    runs = [DecodeRun([[1, 2], [1, 2, 3, 4]], 5), DecodeRun([[1, 2], [1]], 5, a), DecodeRun([[1, 2, 3]], 5, b)]
    assert grouped_order(runs) == [(1, 0), (0, 1), (1, 1), (2, 0), (0, 0)]  # lengths 5, 4, 4, 4, 2


# ---- batch size: CPU default, CUDA auto (largest that fits, halved on out-of-memory) --------------------------
def test_resolve_batch_size():
    assert resolve_batch_size("auto", CPU, 1000) == (CPU_BATCH_SIZE, False)
    assert resolve_batch_size("auto", torch.device("cuda"), 1000, max_batch_size=256) == (256, True)
    assert resolve_batch_size("auto", torch.device("cuda"), 37) == (37, True)
    assert resolve_batch_size(24, CPU, 1000) == (24, False)
    assert resolve_batch_size(24, torch.device("cuda"), 1000) == (24, True)
    with pytest.raises(ValueError, match="batch_size"):
        resolve_batch_size(0, CPU, 10)


def _fake_decode(limit: int, calls: list[int], err: type[BaseException] = torch.OutOfMemoryError):
    """A decode that runs out of memory above ``limit`` rows (what a GPU does), else returns each index x 10."""

    def decode(idx: list[int]) -> list[int]:
        calls.append(len(idx))
        if len(idx) > limit:
            raise err("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [i * 10 for i in idx]

    return decode


def test_out_of_memory_halves_the_batch_size_until_it_fits():
    calls: list[int] = []
    logs: list[str] = []
    got = decode_in_batches(range(100), _fake_decode(20, calls), 64, halve_on_oom=True, log=logs.append)
    assert got == {i: i * 10 for i in range(100)}
    assert calls[:3] == [64, 32, 16]  # halved twice, then 16 for every later batch (longest rows come first)
    assert set(calls[2:]) == {16, 4} and sum(calls[2:]) == 100  # 6 x 16 + the last 4
    assert any("halving to 16" in m for m in logs)
    # a RuntimeError saying "out of memory" (older PyTorch / other allocators) is handled alike
    calls.clear()
    assert len(decode_in_batches(range(9), _fake_decode(2, calls, RuntimeError), 8, halve_on_oom=True)) == 9
    assert calls[:3] == [8, 4, 2]


def test_out_of_memory_propagates_without_halving_or_at_size_one():
    with pytest.raises(torch.OutOfMemoryError):
        decode_in_batches(range(10), _fake_decode(3, []), 8, halve_on_oom=False)
    calls: list[int] = []
    with pytest.raises(torch.OutOfMemoryError):
        decode_in_batches(range(10), _fake_decode(0, calls), 8, halve_on_oom=True)
    assert calls == [8, 4, 2, 1]

    def broken(idx):
        raise ValueError("not a memory error")

    with pytest.raises(ValueError, match="not a memory"):
        decode_in_batches(range(4), broken, 4, halve_on_oom=True)


def test_grouped_decode_after_halving_gives_the_same_tokens(monkeypatch):
    """The decode itself under the halving loop: a fake device that runs out of memory above 3 rows, auto batch."""
    model, tok = load("llama", init_std=0.3)
    runs = _mixed_runs(model, tok)
    want = decode_runs_ids(model, runs, tok.pad_token_id, [], 64)
    real = grouped.greedy_mixed
    sizes: list[int] = []

    def small_device(model, prompts, rows, *a, **kw):
        sizes.append(len(rows))
        if len(rows) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(model, prompts, rows, *a, **kw)

    monkeypatch.setattr(grouped, "greedy_mixed", small_device)
    monkeypatch.setattr(grouped, "resolve_batch_size", lambda bs, dev, n, mx: (min(mx, n), True))  # CUDA's auto
    assert decode_runs_ids(model, runs, tok.pad_token_id, [], "auto", max_batch_size=16) == want
    assert sizes[:4] == [16, 8, 4, 2] and max(sizes[3:]) == 2


# ---- the job level: one model load, byte-identical predictions files ----------------------------------------
def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_predict_group_writes_the_files_predict_job_writes(tmp_path, arch):
    from iclpt.engine.soft_prompt import save_prompt

    train = [{"id": f"t{i}", "split": "train", "input": f"cat {i} red", "target": f"the cat {i} is red.",
              "references": [f"the cat {i} is red."], "meta": {}} for i in range(6)]
    test = [{"id": f"x{i}", "split": "test", "input": " ".join(QUERIES[i % 8].split()[: 2 + i % 5]) + f" {i}",
             "target": "y", "references": ["y", "the dog"], "meta": {"group": f"g{i}"}} for i in range(9)]
    ret = [{"id": f"x{i}", "demo_ids": [f"t{(i + 1) % 6}", f"t{i % 6}"], "scores": [0.8, 0.1],
            "retriever": "dense", "config": {}} for i in range(9)]
    for name, rows in (("train", train), ("test", test), ("ret", ret)):
        _write(tmp_path / f"{name}.jsonl", rows)
    model, _ = load(arch, init_std=0.3)
    save_prompt(tmp_path / "p3.safetensors", init_prompt(model, 3, "random", seed=0))
    save_prompt(tmp_path / "p6.safetensors", init_prompt(model, 6, "random", seed=1))
    base = {"task": "dart", "model": "tiny", "seed": 0, "input_label": "Triples", "output_label": "Text",
            "batch_size": 4, "max_length": 128, "device": "cpu", "precision": "fp32", "max_examples": None}
    demo = {"n_demos": 2, "demos": "retrieved", "train_path": str(tmp_path / "train.jsonl"),
            "retrieval_path": str(tmp_path / "ret.jsonl")}
    none = {"n_demos": 0, "demos": "none"}
    kinds = {  # name: (params, prompt file, demo files)
        "zeroshot": ({"method": "zeroshot", "length": 0, "max_new_tokens": 5, **none}, None),
        "icl": ({"method": "icl", "length": 0, "max_new_tokens": 8, **demo}, None),
        "pt3": ({"method": "pt", "length": 3, "max_new_tokens": 6, **none}, "p3"),
        "pt6": ({"method": "pt", "length": 6, "max_new_tokens": 6, "max_examples": 5, **none}, "p6"),
        "ipt3": ({"method": "ipt", "length": 3, "max_new_tokens": 7, "n_demos": 1, **{**demo, "n_demos": 1}},
                 "p3"),
        "transfer6": ({"method": "transfer_mtop", "length": 6, "max_new_tokens": 4, **demo}, "p6"),
    }
    runs, singles = [], []
    for name, (extra, prompt) in kinds.items():
        files = {k: extra.pop(k) for k in ("train_path", "retrieval_path") if k in extra}
        params = {**base, **extra}
        pp = str(tmp_path / f"{prompt}.safetensors") if prompt else None
        single = tmp_path / "single" / name / "predictions.jsonl"
        predict_job(model_path=tiny_model_dir(arch, 32, 0.3), test_path=str(tmp_path / "test.jsonl"),
                    out_path=single, params=params, prompt_path=pp, **files)
        singles.append(single)
        runs.append(RunFiles(params, str(tmp_path / "test.jsonl"), prompt_path=pp,
                             out_path=tmp_path / "group" / name / "predictions.jsonl", **files))
    logs: list[str] = []
    counts = predict_group(model_path=tiny_model_dir(arch, 32, 0.3), runs=runs, batch_size=5, log=logs.append)
    assert counts == [9, 9, 9, 5, 9, 9]
    assert any("one model load" in m for m in logs)
    for single, run in zip(singles, runs):
        assert Path(run.out_path).read_bytes() == single.read_bytes(), run.params["method"]
    preds = [json.loads(x)["prediction"] for s in singles for x in s.read_text().splitlines()]
    assert len(set(preds)) > 3  # the files hold varied predictions, not one constant text


def test_load_group_needs_one_device_and_precision(tmp_path):
    _write(tmp_path / "test.jsonl", [{"id": "x", "input": "dog", "references": ["y"]}])
    p = {"task": "dart", "model": "tiny", "method": "zeroshot", "n_demos": 0, "demos": "none", "input_label": "A",
         "output_label": "B", "max_new_tokens": 3, "device": "cpu", "precision": "fp32"}
    test = str(tmp_path / "test.jsonl")
    runs = [RunFiles(p, test), RunFiles({**p, "precision": "bf16"}, test)]
    with pytest.raises(ValueError, match="precision"):
        grouped.load_group(tiny_model_dir("gpt2"), runs)
    assert grouped.load_group(tiny_model_dir("gpt2"), []) == []


# ---- SmolLM2-135M (the converted folder in the model cache) ---------------------------------------------------
def _smollm2_dir() -> Path | None:
    env = os.environ.get("ICLPT_TEST_MODEL_CACHE", "").strip()
    roots = [Path(env).expanduser()] if env else []
    roots += [Path("~/.cache/iclpt/test-models").expanduser(), Path("~/.cache/iclpt/models").expanduser()]
    for root in roots:
        for prov in sorted(root.glob("folders/*/provenance.json")):
            smollm2 = json.loads(prov.read_text()).get("model") == "smollm2-135m"
            if smollm2 and (prov.parent / "model.safetensors").is_file():
                return prov.parent
    return None


MTOP = ["set an alarm for 7 am", "what is the weather in Rome today", "remind me to call mom at noon",
        "play some jazz music in the kitchen", "how long is my commute to work", "cancel all my alarms for tomorrow",
        "send a message to Anna saying I am late", "what time does the bakery close", "turn the volume up",
        "add milk and eggs to my shopping list", "who is calling me", "show my reminders for this week"]
MTOP_DEMOS = [("set a timer for ten minutes", "[IN:CREATE_TIMER [SL:METHOD_TIMER timer ] [SL:DATE_TIME for ten "
               "minutes ] ]"), ("what is the weather like in Paris", "[IN:GET_WEATHER [SL:LOCATION Paris ] ]"),
              ("call my sister", "[IN:CREATE_CALL [SL:CONTACT my sister ] ]")]


@pytest.mark.slow
def test_grouped_decode_equals_per_run_decode_on_smollm2():
    """SmolLM2-135M, fp32 CPU, runs of every kind mixed: the same tokens as per-run decoding at batch 16."""
    from iclpt.engine.prompting import Encoder, Template
    from iclpt.models.loading import load_model

    folder = _smollm2_dir()
    if folder is None:
        pytest.skip("no converted SmolLM2 folder in the model caches (tests/test_packaged_model.py makes it)")
    model, tok = load_model(str(folder), device="cpu", precision="fp32")
    enc = Encoder(tok, Template("Utterance", "Parse"))
    plain = [enc.encode(q, max_length=512).ids for q in MTOP]
    with_demos = [enc.encode(q, demos=MTOP_DEMOS[: 1 + i % 3], max_length=512).ids for i, q in enumerate(MTOP)]
    p4, p12 = init_prompt(model, 4, "vocab", seed=0), init_prompt(model, 12, "vocab", seed=1)
    runs = [DecodeRun(with_demos, 24, None, "icl"), DecodeRun(plain, 16, p4, "pt-L4"),
            DecodeRun(with_demos, 24, p4, "ipt-L4"), DecodeRun(plain[4:], 20, p12, "pt-L12"),
            DecodeRun(plain[:6], 8, None, "zeroshot")]
    stops = stop_token_ids(tok)
    per_run = []
    for r in runs:
        rows, out = r.rows, [None] * len(r.rows)
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
        for s in range(0, len(order), 16):  # Decoder.texts' batches
            idx = order[s:s + 16]
            for i, n in zip(idx, greedy_generate(model, r.prompt, [rows[i] for i in idx], r.max_new_tokens,
                                                 tok.pad_token_id, stops)):
                out[i] = n
        per_run.append(out)
    got = decode_runs_ids(model, runs, tok.pad_token_id, stops, 64)
    differ = [(r.name, i) for r, g, w in zip(runs, got, per_run) for i, (a, b) in enumerate(zip(g, w)) if a != b]
    assert not differ, f"{len(differ)} of {sum(len(r.rows) for r in runs)} rows differ: {differ}"
    assert sum(len(x) for run in got for x in run) > 100
