"""The paper's training details (issue #24 item 4): the vocab init draws the most frequent non-special tokens of
the training text, checkpoint selection counts the initial prompt, selection never reads test rows, and the
decoding budget is checked against the references."""

from __future__ import annotations

import json
import math
import os
import random
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from tiny_engine import load, tiny_model_dir

from iclpt.data.prepare import dev_is_test, hold_out_dev, prepare_task
from iclpt.data.tasks.base import reference_budget
from iclpt.engine.prompting import Encoder, Template
from iclpt.engine.soft_prompt import control_token_ids, embed_ids, frequent_token_ids, init_prompt
from iclpt.engine.training import TrainConfig, train_prompt

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo_data"

# ==== 1. vocab init: the most frequent tokens of the training text, never a special / control token ==============
#: literal special / control strings: tokenizers match added tokens inside plain text, so they would rank first
PROBES = ("<|endoftext|> <|im_start|> <|im_end|> <start_of_turn> <end_of_turn> [multimodal] <start_of_image> "
          "<unused3> <pad> <eos> <bos> <unk> <mask> </s> <s> <repo_name> <filename>")


def _real_tokenizer_dir(model: str) -> Path | None:
    """The converted folder of a packaged model (SmolLM2 / Gemma 3) in a test or user model cache, if any."""
    env = os.environ.get("ICLPT_TEST_MODEL_CACHE", "").strip()
    roots = [Path(env).expanduser()] if env else []
    roots += [Path("~/.cache/iclpt/test-models").expanduser(), Path("~/.cache/iclpt/models").expanduser()]
    for root in roots:
        for prov in sorted(root.glob("folders/*/provenance.json")):
            if json.loads(prov.read_text()).get("model") == model and (prov.parent / "tokenizer.json").is_file():
                return prov.parent
    return None


TOKENIZERS = {  # name -> folder (tiny builds mirror GPT-2 / SmolLM2 / Gemma 3's special tokens and ids)
    "tiny-gpt2": lambda: tiny_model_dir("gpt2"),
    "tiny-llama(smollm2)": lambda: tiny_model_dir("llama"),
    "tiny-gemma3": lambda: tiny_model_dir("gemma3"),
    "smollm2-135m": lambda: _real_tokenizer_dir("smollm2-135m"),
    "gemma-3-270m": lambda: _real_tokenizer_dir("gemma-3-270m"),
}


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    folder = TOKENIZERS[name]()
    if folder is None:
        pytest.skip(f"{name}: no converted folder in the model caches (tests/test_packaged_model.py makes it)")
    return AutoTokenizer.from_pretrained(str(folder))


def _train_text(x_word: str) -> list[str]:
    rng = random.Random(0)
    words = "red blue green cat dog bird table river city".split()
    texts = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(40)]
    texts += [PROBES] * 50  # every special string 50 times: more frequent than any word but x_word
    texts += [" ".join([x_word] * 30)] * 100  # x_word 3,000 times
    texts += ["caf\u00e9 \U0001d538\U0001f600 \u2603"]  # rare characters: byte-fallback pieces for Gemma
    return texts


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_frequent_token_ids_rank_by_frequency_and_drop_special_tokens(name):
    tok = _tokenizer(name)
    texts = _train_text("zebra")  # " zebra" (after the first of a line) is the most frequent token
    x_ids = tok(" zebra", add_special_tokens=False)["input_ids"]
    assert len(x_ids) >= 1
    banned = control_token_ids(tok)
    assert set(tok.all_special_ids) <= banned and tok.eos_token_id in banned
    if tok.pad_token_id is not None:
        assert tok.pad_token_id in banned
    special_in_text = {i for ids in tok(texts, add_special_tokens=False)["input_ids"] for i in ids} & banned
    assert special_in_text, "the probe text must contain special ids for this test to mean anything"
    ids = frequent_token_ids(texts, tok, 10_000)
    assert not set(ids) & banned
    assert ids[0] in x_ids  # the most frequent token of the text comes first
    counts = {}
    for row in tok(texts, add_special_tokens=False)["input_ids"]:
        for i in row:
            counts[i] = counts.get(i, 0) + 1
    freq = [counts[i] for i in ids]
    assert freq == sorted(freq, reverse=True)  # ranked by frequency
    assert set(ids) == set(counts) - banned  # every other id of the text is a candidate
    assert frequent_token_ids(texts, tok, 3) == ids[:3]


def test_control_token_ids_of_the_real_tokenizers():
    """SmolLM2: ids 0-16 (incl. <|im_end|> = EOS = pad); Gemma 3: its specials, <unusedN>, the image / multimodal
    markers its GGUF tokenizer leaves unflagged and the 256 byte-fallback pieces; never ordinary text tokens."""
    smol = _tokenizer("smollm2-135m")
    assert set(range(17)) <= control_token_ids(smol) and 17 not in control_token_ids(smol)
    gemma = _tokenizer("gemma-3-270m")
    banned = control_token_ids(gemma)
    names = {gemma.convert_ids_to_tokens(i) for i in banned}
    assert {"<pad>", "<eos>", "<bos>", "<start_of_turn>", "<unused0>", "[multimodal]", "<start_of_image>",
            "<0x41>"} <= names
    assert not {"<table>", "\n", "▁the", "the"} & names  # html tags and text are real text tokens


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3"])
def test_vocab_init_samples_only_the_candidates(arch):
    model, tok = load(arch)
    cands = frequent_token_ids(_train_text("dog"), tok, 12)
    banned = control_token_ids(tok)
    assert len(cands) == 12 and not set(cands) & banned
    table = embed_ids(model, cands)
    special = embed_ids(model, sorted(banned))
    for seed in range(5):
        for n in (5, 30):  # without replacement, and with (more vectors than candidates)
            p = init_prompt(model, n, "vocab", seed=seed, vocab_ids=cands)
            assert p.shape[0] == n
            assert all((table == row).all(dim=1).any() for row in p)
            assert not any((special == row).all(dim=1).any() for row in p)
    p = init_prompt(model, 5, "vocab", seed=1, vocab_ids=cands)
    assert torch.equal(p, init_prompt(model, 5, "vocab", seed=1, vocab_ids=cands))
    with pytest.raises(ValueError, match="no candidate token ids"):
        init_prompt(model, 2, "vocab", vocab_ids=[])
    with pytest.raises(ValueError, match="outside the model's"):
        init_prompt(model, 2, "vocab", vocab_ids=[10**7])


def _job_rows(n, seed, target="the cat sleeps."):
    rng = random.Random(seed)
    words = "red blue green cat dog bird".split()
    return [{"id": f"r{seed}-{i}", "split": "x", "input": " ".join(rng.choice(words) for _ in range(4)),
             "target": target, "references": [target], "meta": {}} for i in range(n)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _job_params(**train):
    return {"task": "dart", "model": "tiny", "method": "pt", "length": 3, "demos": "none", "seed": 0, "n_demos": 0,
            "input_label": "Input", "output_label": "Output",
            "prompt": {"init": "vocab", "init_vocab_size": 5, "init_text": None, "init_file": None},
            "train": {"lr": 0.05, "max_steps": 2, "warmup_steps": 0, "batch_size": 4, "eval_every": 1,
                      "checkpoint_every": 1, "dev_examples": 4, "max_length": 64, **train},
            "device": "cpu", "precision": "fp32"}


def test_train_job_draws_from_the_training_texts_frequent_tokens(tmp_path, caplog):
    import logging

    from iclpt.engine.training import load_train_inputs

    _write(tmp_path / "train.jsonl", _job_rows(12, 0))
    _write(tmp_path / "dev.jsonl", _job_rows(4, 1))
    params = _job_params()
    x = load_train_inputs(model_path=tiny_model_dir("llama"), train_path=str(tmp_path / "train.jsonl"),
                          dev_path=str(tmp_path / "dev.jsonl"), params=params)
    recs = x.job.splits["train"].records
    cands = frequent_token_ids([t for r in recs for t in (r["input"], r["target"])], x.job.tokenizer, 5)
    table = embed_ids(x.job.model, cands)
    assert x.init_vocab == {"requested": 5, "candidates": 5}
    assert all((table == row).all(dim=1).any() for row in x.init_prompt)
    params["prompt"]["init_vocab_size"] = 100_000  # more than the text's distinct tokens: what it has, logged
    with caplog.at_level(logging.INFO):
        msgs = []
        x = load_train_inputs(model_path=tiny_model_dir("llama"), train_path=str(tmp_path / "train.jsonl"),
                              dev_path=str(tmp_path / "dev.jsonl"), params=params, log=msgs.append)
    assert x.init_vocab["candidates"] < 100_000
    assert any("fewer than init_vocab_size = 100000" in m for m in msgs), msgs


# ==== 2. checkpoint selection: the initial prompt is a candidate; max_steps 0 ======================================
def _examples(tok, n, seed, n_virtual=4):
    enc = Encoder(tok, Template("Input", "Output"))
    return [enc.encode(r["input"], target=r["target"], n_virtual=n_virtual, max_length=64)
            for r in _job_rows(n, seed)]


def test_a_run_whose_dev_loss_only_rises_returns_the_initial_prompt():
    model, tok = load("gpt2", hidden=64, init_std=0.3)
    enc = Encoder(tok, Template("Input", "Output"))
    # trained towards one sentence, judged on another: the dev loss rises once the prompt has learnt the first
    train = [enc.encode(r["input"], target=r["target"], n_virtual=4, max_length=64) for r in _job_rows(16, 0)]
    dev = [enc.encode(r["input"], target=r["target"], n_virtual=4, max_length=64)
           for r in _job_rows(6, 1, target="a red bird sees a dog.")]
    init = init_prompt(model, 4, "vocab", seed=0)
    cfg = TrainConfig(lr=0.3, max_steps=16, warmup_steps=0, batch_size=8, eval_every=8, max_length=64)
    res = train_prompt(model, init, train, dev, cfg, 0, tok.pad_token_id, torch.device("cpu"))
    later = [r["dev_loss"] for r in res.log if "dev_loss" in r]
    assert len(later) == 2 and min(later) > res.initial_dev_loss  # the premise: every later dev loss is worse
    assert res.best_step == 0 and res.best_dev_loss == res.initial_dev_loss
    assert torch.equal(res.best_prompt, init)
    assert not torch.equal(res.final_prompt, init)


def test_a_run_that_improves_does_not_return_the_initial_prompt():
    model, tok = load("gpt2", hidden=64, init_std=0.3)
    train = _examples(tok, 16, 0)
    cfg = TrainConfig(lr=0.3, max_steps=20, warmup_steps=2, batch_size=8, eval_every=10, max_length=64)
    res = train_prompt(model, init_prompt(model, 4, "vocab", seed=0), train, train[:6], cfg, 0, tok.pad_token_id,
                       torch.device("cpu"))
    assert res.best_step in (10, 20) and res.best_dev_loss < res.initial_dev_loss


def test_max_steps_zero_returns_the_initial_prompt_without_a_dev_pass(tmp_path, monkeypatch):
    from iclpt.engine import training

    def no_dev_pass(*a, **k):
        raise AssertionError("max_steps 0 must not run a dev pass")

    monkeypatch.setattr(training, "dev_loss", no_dev_pass)
    model, tok = load("gpt2")
    init = init_prompt(model, 4, "vocab", seed=0)
    res = train_prompt(model, init, _examples(tok, 8, 0), _examples(tok, 4, 1), TrainConfig(max_steps=0), 0,
                       tok.pad_token_id, torch.device("cpu"))
    assert res.best_step == 0 and res.steps == 0 and res.log == []
    assert torch.equal(res.best_prompt, init) and torch.equal(res.final_prompt, init)
    assert math.isnan(res.best_dev_loss) and math.isnan(res.initial_dev_loss)
    # the whole job: meta.json says null for the dev losses, the prompt file holds the initialised prompt
    _write(tmp_path / "train.jsonl", _job_rows(8, 0))
    _write(tmp_path / "dev.jsonl", _job_rows(4, 1))
    from iclpt.engine.soft_prompt import load_prompt
    from iclpt.engine.training import load_train_inputs, train_job

    kw = dict(model_path=tiny_model_dir("gpt2"), train_path=str(tmp_path / "train.jsonl"),
              dev_path=str(tmp_path / "dev.jsonl"), params=_job_params(max_steps=0))
    meta = train_job(**kw, out_dir=tmp_path / "out", checkpoint_root=tmp_path / "ckpt")
    assert meta["steps"] == 0 and meta["best_step"] == 0
    assert meta["initial_dev_loss"] is None and meta["best_dev_loss"] is None
    written = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert written["best_step"] == 0 and written["initial_dev_loss"] is None
    prompt, _ = load_prompt(tmp_path / "out" / "prompt.safetensors")
    assert torch.equal(prompt, load_train_inputs(**kw).init_prompt)


def test_resume_keeps_the_initial_prompt_as_the_best(tmp_path, monkeypatch):
    """Interrupted after a checkpoint, the resumed run still returns the initial prompt (the checkpoint holds
    best_step 0 and the initial dev loss) and writes what the uninterrupted run writes. The dev loss here is the
    prompt's distance from the initial one (+1): it rises whenever training moves the prompt."""
    from iclpt.engine import training
    from iclpt.engine.training import TrainingInterrupted, load_train_inputs, train_job

    _write(tmp_path / "train.jsonl", _job_rows(12, 0))
    _write(tmp_path / "dev.jsonl", _job_rows(4, 1))
    kw = dict(model_path=tiny_model_dir("gpt2"), train_path=str(tmp_path / "train.jsonl"),
              dev_path=str(tmp_path / "dev.jsonl"), params=_job_params(max_steps=4, eval_every=2, checkpoint_every=2))
    init = load_train_inputs(**kw).init_prompt
    monkeypatch.setattr(training, "dev_loss", lambda model, prompt, *a: 1.0 + float((prompt.cpu() - init).norm()))
    whole = train_job(**kw, out_dir=tmp_path / "a", checkpoint_root=tmp_path / "ck1")
    assert whole["best_step"] == 0 and whole["best_dev_loss"] == whole["initial_dev_loss"] == 1.0
    assert whole["final_dev_loss"] > 1.0
    with pytest.raises(TrainingInterrupted):
        train_job(**kw, out_dir=tmp_path / "b", checkpoint_root=tmp_path / "ck2", stop_after=2)
    resumed = train_job(**kw, out_dir=tmp_path / "b", checkpoint_root=tmp_path / "ck2")
    assert resumed["resumed_from_step"] == 2
    for k in ("best_step", "best_dev_loss", "initial_dev_loss", "final_dev_loss"):
        assert resumed[k] == whole[k], k
    assert (tmp_path / "a" / "prompt.safetensors").read_bytes() == (tmp_path / "b" / "prompt.safetensors").read_bytes()
    from iclpt.engine.soft_prompt import load_prompt

    assert torch.equal(load_prompt(tmp_path / "b" / "prompt.safetensors")[0], init)


# ==== 3. selection never reads test rows: dev held out of train where dev and test are one file ===================
def _spider_files(tmp_path):
    """The demo Spider files with dev.json as dev and test; the demo train file repeats 5 dev questions, so the
    copy here marks every train question (a train row can then equal no test row, whichever split it lands in)."""
    import shutil

    s = tmp_path / "spider"
    shutil.copytree(DEMO / "spider", s)
    rows = json.loads((s / "train_spider.json").read_text())
    for r in rows:
        r["question"] += " (train)"
    (s / "train_spider.json").write_text(json.dumps(rows))
    return {"train": s / "train_spider.json", "dev": s / "dev.json", "test": s / "dev.json"}


def _rows_key(r):
    return (r["input"], tuple(r["references"]))


def test_spider_dev_is_held_out_of_train_by_whole_databases(tmp_path):
    files = _spider_files(tmp_path)
    original = prepare_task("spider", files)
    out = prepare_task("spider", files, dev_from_train=8)
    dev, train, test = out["dev"], out["train"], out["test"]
    assert test == original["test"]
    assert not {_rows_key(r) for r in dev} & {_rows_key(r) for r in test}  # no test row in dev
    assert all(r["id"].startswith("spider-train-") and r["split"] == "dev" for r in dev)
    assert all(r["meta"]["held_out_from"] == "train" for r in dev)
    assert len(dev) >= 8
    assert not {r["meta"]["db_id"] for r in dev} & {r["meta"]["db_id"] for r in train}  # whole databases
    assert sorted(r["id"] for r in dev + train) == sorted(r["id"] for r in original["train"])  # moved, not copied
    assert out == prepare_task("spider", files, dev_from_train=8)  # seeded
    # a config whose dev and test files differ keeps its dev file (dev_from_train ignored)
    other = dict(files, dev=DEMO / "spider" / "train_spider.json")
    assert not dev_is_test(other)


def test_totto_dev_is_held_out_by_whole_tables(tmp_path):
    t = DEMO / "totto"
    rows = [json.loads(x) for x in (t / "train.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows[:6]):  # three tables with two examples each
        src = rows[6 + i // 2]
        r.update(table_webpage_url=src["table_webpage_url"], table_section_title=src["table_section_title"])
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = {"train": tmp_path / "train.jsonl", "dev": t / "test.jsonl", "test": t / "test.jsonl"}
    out = prepare_task("totto", files, dev_from_train=5, seed=3)
    dev_tables = {r["meta"]["table"] for r in out["dev"]}
    assert dev_tables and not dev_tables & {r["meta"]["table"] for r in out["train"]}
    assert len(out["dev"]) >= 5 and len(out["train"]) + len(out["dev"]) == len(rows)
    assert not {_rows_key(r) for r in out["dev"]} & {_rows_key(r) for r in out["test"]}


def test_hold_out_dev_limits():
    rows = [{"id": str(i), "meta": {"group": str(i), "db": str(i % 4)}} for i in range(20)]
    train, dev = hold_out_dev(rows, 100, "db", seed=0)  # asks for everything: at most half the groups
    assert len({r["meta"]["db"] for r in dev}) == 2 and len(train) == 10
    train, dev = hold_out_dev(rows, 1, "db", seed=0)
    assert len(dev) == 5 and len(train) == 15  # one whole group
    assert [r["id"] for r in train] == sorted((r["id"] for r in train), key=int)  # original order
    from iclpt.io import DataError

    with pytest.raises(DataError, match="at least two"):
        hold_out_dev([{"id": "a", "meta": {"group": "a", "db": "x"}}], 1, "db", seed=0)


def test_paper_config_selects_on_train_for_totto_and_spider_only():
    """config/config.yaml: ToTTo's and Spider's dev files are their test files, so their dev comes from train
    (common.smk's dev_from_train gives the prepare rule a size exactly there), the other tasks keep their dev."""
    from snakemake.utils import validate

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    same = {}
    for task, t in cfg["tasks"].items():  # the files as common.smk's task_files resolves them
        root = os.path.join(cfg["download_dir"], task) if t["source"] == "download" else cfg["data_root"]
        same[task] = dev_is_test({s: os.path.join(root, f) for s, f in t["files"].items()})
    assert same == {"totto": True, "spider": True, "dart": False, "logic2text": False, "mtop": False}
    assert all(t["dev_from_train"] is None for t in cfg["tasks"].values())  # null: train.dev_examples rows
    assert cfg["train"]["dev_examples"] >= 1
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    data = (ROOT / "workflow" / "rules" / "data.smk").read_text()
    assert "dev_is_test(task_files(task))" in common and "dev_from_train=lambda wc: dev_from_train(wc.task)" in data


@pytest.mark.slow
def test_the_prepare_rule_holds_dev_out_and_reruns_when_its_size_changes(tmp_path):
    """Through the real Snakefile (tiny config, Spider's dev file is its test file): the prepared dev shares no row
    with test and no database with train; changing train.dev_examples reruns Spider's prepare only."""
    from workflow_helpers import copy_repo, dry_run, snakemake, write_config

    work = copy_repo(tmp_path / "w")
    cfg = yaml.safe_load((work / "config" / "tiny.yaml").read_text())
    cfg["tasks"] = {t: cfg["tasks"][t] for t in ("mtop", "spider")}
    cfg["experiments"] = {"transfer": False}  # the data stage is what this test is about
    path = write_config(work, cfg)
    snakemake(work, "--cores", "1", "--configfile", str(path), "--until", "prepare", timeout=600)
    data = work / "results" / "tiny" / "data" / "spider"
    read = lambda split: [json.loads(x) for x in (data / f"{split}.jsonl").read_text().splitlines()]  # noqa: E731
    dev, train, test = read("dev"), read("train"), read("test")
    assert len(dev) >= cfg["train"]["dev_examples"] and len(test) == 20  # test: all of dev.json
    assert all(r["id"].startswith("spider-train-") for r in dev)  # rows of the train file, not of dev.json = test
    train_file = json.loads((work / "resources/demo_data/spider/train_spider.json").read_text())
    assert {r["input"].split(" | ")[0] for r in dev} <= {r["question"] for r in train_file}
    assert not {r["meta"]["db_id"] for r in dev} & {r["meta"]["db_id"] for r in train}
    assert json.loads((data / "prepare.json").read_text())["dev_source"] == "held out of train"
    changed = dict(cfg, train={**cfg["train"], "dev_examples": cfg["train"]["dev_examples"] + 20})
    counts, out = dry_run(work, write_config(work, changed, "changed.yaml"), "--until", "prepare")
    assert dict(counts) == {"prepare": 1} and "spider" in out


# ==== 4. decoding budgets ========================================================================================
def test_reference_budget_counts_unreachable_references():
    b = reference_budget([3, 5, 9, 12], 8)
    assert b == {"max_new_tokens": 8, "n_refs": 4, "n_unreachable_refs": 2, "ref_tokens_p99": 12}
    assert reference_budget([3, 5, 9, 12], 12)["n_unreachable_refs"] == 0  # a budget that covers every reference
    assert reference_budget(list(range(1, 201)), 64)["ref_tokens_p99"] == 198  # nearest rank
    assert reference_budget([], 8) == {"max_new_tokens": 8, "n_refs": 0, "n_unreachable_refs": 0,
                                       "ref_tokens_p99": None}


def test_predict_counts_references_beyond_the_budget_and_score_reports_them(tmp_path, caplog):
    import logging

    from iclpt.engine.generation import predict_job, reference_token_counts

    long_ref = " ".join(["the old dog sleeps in the house"] * 6)
    test = [{"id": f"x{i}", "split": "test", "input": f"dog {i} runs", "target": "the cat.",
             "references": ["the cat.", long_ref] if i == 0 else ["the cat."], "meta": {}} for i in range(3)]
    _write(tmp_path / "test.jsonl", test)
    params = {"task": "dart", "model": "tiny", "method": "zeroshot", "length": 0, "demos": "none", "seed": 0,
              "n_demos": 0, "input_label": "Triples", "output_label": "Text", "max_new_tokens": 8, "batch_size": 4,
              "max_length": 128, "max_examples": None, "device": "cpu", "precision": "fp32"}
    out, covered = tmp_path / "run" / "predictions.jsonl", tmp_path / "covered" / "predictions.jsonl"
    with caplog.at_level(logging.WARNING):
        predict_job(model_path=tiny_model_dir("gpt2"), test_path=str(tmp_path / "test.jsonl"), out_path=out,
                    params=params)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    _, tok = load("gpt2")
    assert rows[0]["ref_tokens"] == reference_token_counts(tok, ["the cat.", long_ref])
    assert rows[0]["ref_tokens"][1] > 8 >= rows[0]["ref_tokens"][0]
    assert all(r["max_new_tokens"] == 8 for r in rows)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot reach 1 of 4 references" in m for m in warned), warned
    caplog.clear()  # a budget that covers every reference: no warning
    with caplog.at_level(logging.WARNING):
        predict_job(model_path=tiny_model_dir("gpt2"), test_path=str(tmp_path / "test.jsonl"), out_path=covered,
                    params=dict(params, max_new_tokens=64))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    # the score script writes the summary into metrics.json, beside the run's identity
    run = {"task": "dart", "model": "tiny", "method": "zeroshot", "length": 0, "demos": "none", "seed": 0}
    for path, unreachable in ((out, 1), (covered, 0)):
        metrics, scores = path.parent / "metrics.json", path.parent / "scores.jsonl"
        sm = SimpleNamespace(log=[str(path.parent / "score.log")],
                             input=SimpleNamespace(predictions=str(path), test=str(tmp_path / "test.jsonl")),
                             output=SimpleNamespace(metrics=str(metrics), scores=str(scores)),
                             params=SimpleNamespace(metrics=["bleu"], database_dir=None, exec_timeout_s=1.0, run=run,
                                                    max_examples=None))
        runpy.run_path(str(ROOT / "workflow" / "scripts" / "score.py"), init_globals={"snakemake": sm})
        doc = json.loads(metrics.read_text())
        assert doc["decoding_budget"]["n_unreachable_refs"] == unreachable, path
        assert doc["decoding_budget"]["n_refs"] == 4 and doc["metric_names"] == ["bleu"]
        assert all(doc[k] == v for k, v in run.items())
