"""iclpt.orchestration.calibrate: the measured run plan (rule facts from the workflow, token counts, cost model,
and estimates checked against real runs)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import yaml

from iclpt.data.tasks import get_task
from iclpt.engine.training import TrainConfig
from iclpt.orchestration.calibrate import RuleFacts, calibrate, format_calibrated, job_kind
from iclpt.orchestration.calibrate import rules as R
from iclpt.orchestration.calibrate.estimate import n_dev_passes
from iclpt.orchestration.calibrate.workload import (
    Workload,
    configured_files,
    eval_tokens,
    stand_in_retrieval,
    step_tokens,
    task_sample,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def validated(cfg: dict) -> dict:
    from snakemake.utils import validate

    validate(cfg, str(SCHEMA), set_default=True)
    return cfg


def small_config(run: str = "caltest", **over) -> dict:
    cfg = {
        "run": run, "data_root": str(ROOT / "resources" / "demo_data"), "device": "cpu", "precision": "fp32",
        "seeds": [0],
        "tasks": {"mtop": {"files": {"train": "mtop/train.json", "dev": "mtop/dev.json", "test": "mtop/test.json"},
                           "max_new_tokens": 8}},
        "models": {"tiny": {"build": {"architecture": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                      "vocab_size": 400, "max_positions": 512}}},
        "methods": ["zeroshot", "pt"],
        "prompt": {"length": 4, "lengths": [4]},
        "train": {"max_steps": 20, "batch_size": 4, "eval_every": 10, "dev_examples": 8, "warmup_steps": 1,
                  "checkpoint_every": 100, "max_length": 256},
        "predict": {"batch_size": 8, "max_length": 256},
        "experiments": {"similarity": False, "stability": False, "transfer": False},
        "resources": {"default": {"threads": 1}},
    }
    cfg.update(over)
    return validated(cfg)


def workflow_facts(cfg: dict, tmp_path: Path) -> dict[str, RuleFacts]:
    """The rule facts plan.py reads from the workflow parsed with ``cfg``."""
    spec = importlib.util.spec_from_file_location("plan_script", ROOT / "workflow" / "scripts" / "plan.py")
    plan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plan)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return {n: RuleFacts(n, **r) for n, r in plan.workflow_rules(None, [str(path)], ROOT, 2).items()}


def test_cost_model_pieces():
    # 3 dev passes: the initial prompt, step 15, step 30 (the last); 4 for 10 steps every 4 (4, 8, 10)
    assert n_dev_passes(TrainConfig(max_steps=30, eval_every=15)) == 3
    assert n_dev_passes(TrainConfig(max_steps=10, eval_every=4)) == 4
    # unbucketed sampler over lengths 1..8 in batches of 4: each batch padded to its longest row (+ 2 prompt)
    lengths = [1, 2, 3, 4, 5, 6, 7, 8]
    from iclpt.engine.training import epoch_batches

    batches = epoch_batches(lengths, 4, 0, 0, False)
    want = sum(4 * (max(lengths[i] for i in b) + 2) for b in batches) / 2
    assert step_tokens(lengths, 4, 2, bucket=False) == pytest.approx(want)
    # bucketing sorts within a window: [1..4] and [5..8] -> (4 + 2) * 4 and (8 + 2) * 4
    assert step_tokens(lengths, 4, 2, bucket=True) == pytest.approx((24 + 40) / 2)
    assert eval_tokens([5, 1, 3], 2, 1) == 2 * (3 + 1) + 1 * (5 + 1)


def test_threads_and_slots():
    train = RuleFacts("t", threads=4, gpu=1)
    assert R.rule_threads(train, 2) == 2  # scaled down to --cores, as Snakemake does
    assert R.rule_threads(RuleFacts("p", threads=1), 8) == 1
    assert R.slots(RuleFacts("p", threads=1), 2, None) == 2
    assert R.slots(train, 8, None) == 2
    assert R.slots(train, 8, 1) == 1  # one GPU: its jobs run one at a time
    assert R.slots(RuleFacts("s", threads=1), 8, 1) == 8  # rules without a GPU are not limited by --gpus


def test_rule_facts_come_from_the_workflow(tmp_path):
    """Threads, gpu and kinds as the rule files define them for the config (no copy in the package)."""
    cfg = small_config(resources={"default": {"threads": 1}, "train_prompt": {"threads": 3, "gpu": 1}})
    facts = workflow_facts(cfg, tmp_path)
    assert facts["train_prompt"].threads == 3 and facts["train_prompt"].gpu == 1
    assert facts["predict"].threads == 1 and facts["predict"].gpu == 0
    assert facts["score"].threads == 1 and facts["all"].script is None
    kinds = {n: job_kind(f) for n, f in facts.items()}
    assert kinds["train_prompt"] == R.TRAIN and kinds["predict"] == R.DECODE
    assert kinds["build_tiny_model"] == kinds["fetch_model"] == R.MAKES_MODEL
    assert kinds["embed"] == R.ENCODER and kinds["download"] == R.NETWORK and kinds["all"] == R.NO_WORK
    assert kinds["score"] == kinds["prepare"] == kinds["retrieve"] == R.STARTUP
    assert {n for n, f in facts.items() if f.loads_model} == {"train_prompt", "predict"}
    # a model rule's constraint names the configured models it makes
    assert facts["build_tiny_model"].makes(["tiny", "other"]) == ["tiny"] and facts["fetch_model"].makes(["tiny"]) == []
    # one more thread in the config: the facts follow it
    cfg["resources"]["default"]["threads"] = 2
    assert workflow_facts(cfg, tmp_path)["predict"].threads == 2


def test_demo_files_are_the_tiny_configs():
    tiny = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    assert {t: v["files"] for t, v in tiny["tasks"].items()} == {t: dict(get_task(t).demo_files) for t in tiny["tasks"]}


def test_task_sample_sources(tmp_path):
    cfg = small_config()
    s = task_sample(cfg, "mtop", tmp_path)
    assert s.source == "data files (adapter)" and s.counts["test"] == len(s.records["test"]) > 0
    # data not present (not downloaded yet): the adapter on resources/demo_data, sizes from max_examples
    cfg = small_config(data_root=str(tmp_path / "nowhere"))
    cfg["tasks"]["mtop"]["max_examples"] = {"test": 48, "dev": 16}
    s = task_sample(cfg, "mtop", tmp_path)
    assert s.source.startswith("adapter statistics") and s.counts["test"] == 48 and s.counts["dev"] == 16
    cfg["tasks"]["mtop"]["max_examples"] = {}
    assert task_sample(cfg, "mtop", tmp_path).counts["test"] == get_task("mtop").published_sizes["test"]
    # prepared data wins
    d = tmp_path / "results" / "caltest" / "data" / "mtop"
    d.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (d / f"{split}.jsonl").write_text('{"id": "a", "input": "x", "target": "y", "references": ["y"]}\n')
    s = task_sample(cfg, "mtop", tmp_path)
    assert s.source == "prepared data" and s.counts == {"train": 1, "dev": 1, "test": 1}


def test_stand_in_demos_go_through_the_jobs_builder(tmp_path):
    """Stand-in retrieval lines skip the query's own group; the rows are the jobs' encoding of those demos."""
    from tiny_engine import load

    from iclpt.engine.prompting import Encoder, Template

    train = [{"id": f"t{i}", "input": f"play song {i}", "target": f"[IN:PLAY {i} ]", "meta": {"group": f"g{i % 3}"}}
             for i in range(6)]
    lines = stand_in_retrieval(train[:2], train, 2, "retrieved")
    assert [len(lines[q["id"]]["demo_ids"]) for q in train[:2]] == [2, 2]
    for q in train[:2]:
        assert all(int(d[1:]) % 3 != int(q["id"][1:]) % 3 for d in lines[q["id"]]["demo_ids"])
    assert stand_in_retrieval(train, train, 0, "retrieved") is None
    drawn = stand_in_retrieval(train[:2], train, 2, "random")
    assert drawn == stand_in_retrieval(train[:2], train, 2, "random") and set(drawn) == {"t0", "t1"}

    _, tok = load("llama")
    sample = task_sample(small_config(), "mtop", tmp_path)
    work = Workload(small_config(), sample, tok, 256)
    row = work.rows("dev", 1, "retrieved", 4)[0]
    q = work.splits["dev"][0]
    demo = work.pool[stand_in_retrieval([q], work.train_pool, 1, "retrieved")[q["id"]]["demo_ids"][0]]
    enc = Encoder(tok, Template(get_task("mtop").input_label, get_task("mtop").output_label))
    assert row.ids == enc.encode(q["input"], [(demo["input"], demo["target"])], target=q["target"], n_virtual=4,
                                 max_length=256).ids
    assert row.meta["demo_ids"] == [demo["id"]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A workdir with the run's prepared data and its built tiny model (as the pipeline leaves them)."""
    from iclpt.data.prepare import prepare_task
    from iclpt.io import write_jsonl_atomic
    from iclpt.models.tiny import build_tiny_model, texts_from_records

    work = tmp_path_factory.mktemp("cal")
    cfg = small_config()
    splits = prepare_task("mtop", configured_files(cfg, "mtop", work), {}, 0)
    data = work / "results" / "caltest" / "data" / "mtop"
    for split, recs in splits.items():
        write_jsonl_atomic(data / f"{split}.jsonl", recs)
    b = dict(cfg["models"]["tiny"]["build"])
    build_tiny_model(texts_from_records(splits["train"]), work / "results" / "caltest" / "models" / "tiny",
                     b.pop("architecture"), **b)
    return work


def test_calibrated_estimate_matches_real_jobs(run_dir, tmp_path):
    """The calibrated seconds of a train and a predict job (start-up aside) against the same jobs run here."""
    import torch

    from iclpt.engine.generation import load_predict_inputs, run_prediction
    from iclpt.engine.training import load_train_inputs, run_training
    from iclpt.models.loading import max_positions
    from iclpt.orchestration.runs import plan

    torch.set_num_threads(1)
    cfg = small_config()
    cfg["models"]["gone"] = {"path": "iclpt-test/no-such-model"}  # a hub id this offline test cannot reach
    cfg["resources"]["predict"] = {"gpu_hours_per_job": 0.5}
    facts = workflow_facts(cfg, tmp_path)
    p = plan(cfg)
    counts = {"train_prompt": len(p.train), "predict": len(p.predict), "score": len(p.predict), "all": 1}
    guesses = {"predict": 0.5}
    res = calibrate(cfg, counts, facts, run_dir, 2, lambda r: (guesses.get(r, 0.0), f"resources.{r}"), steps=3,
                    probe_seconds=1.0)
    rules = {r["rule"]: r for r in res["rules"]}
    tiny = res["models"]["tiny"]
    assert tiny["source"]["how"] == "the run's model folder" and res["tasks"]["mtop"]["source"] == "prepared data"
    assert res["models"]["gone"]["source"]["path"] is None
    # the unloadable model's predict jobs keep the guess, and say so; its train jobs have no guess (0 h)
    n_gone = sum(r.model == "gone" for r in p.predict)
    assert rules["predict"]["kind"] == "measured+guess" and rules["predict"]["guessed_jobs"] == n_gone
    assert rules["predict"]["guessed_seconds"] == pytest.approx(n_gone * 0.5 * 3600)
    assert "predict" in res["guessed_rules"] and "GUESSES" in format_calibrated(res, "t")
    assert rules["score"]["kind"] == "measured" and 0 < rules["score"]["seconds_per_job"] < 30
    assert rules["all"]["job_hours"] == 0
    # wall = job-hours / slots (2 single-threaded slots on 2 cores) + the DAG build; job-hours carry the measured
    # slowdown of 2 jobs at once (>= 1)
    assert res["total_wall_hours"] == pytest.approx(sum(r["job_hours"] / 2 for r in res["rules"]))
    slow = res["concurrency"]["2 jobs x 1 threads"]
    assert slow >= 1.0

    startup = tiny["startup_s"]
    assert 0 < startup < 120
    pt = next(r for r in p.train if r.model == "tiny")
    train_est = tiny["train_runs"]["/".join(map(str, pt))] - startup  # one job alone, as run below
    assert rules["train_prompt"]["measured_seconds"] == pytest.approx(
        slow * sum(v for v in tiny["train_runs"].values()))
    params = {**pt.wildcards(), "n_demos": 0, "input_label": "Utterance", "output_label": "Parse",
              "prompt": {"init": "vocab"}, "train": dict(cfg["train"]), "device": "cpu", "precision": "fp32"}
    data = run_dir / "results" / "caltest" / "data" / "mtop"
    inputs = load_train_inputs(model_path=str(run_dir / "results/caltest/models/tiny"),
                               train_path=str(data / "train.jsonl"), dev_path=str(data / "dev.jsonl"), params=params)
    job = inputs.job
    # the estimate counts the job's own tokens: the calibrator renders the same rows to the same lengths, and its
    # seconds are those tokens at the measured rates (wall-clock agreement is the benchmarks' business)
    work = Workload(cfg, task_sample(cfg, "mtop", run_dir), job.tokenizer, max_positions(job.model))
    lengths = {split: sorted(work.lengths(split, 0, "retrieved", pt.length)) for split in ("train", "dev")}
    assert lengths["train"] == sorted(len(e.ids) for e in job.examples("train"))
    assert lengths["dev"] == sorted(len(e.ids) for e in job.examples("dev"))
    tc = inputs.cfg
    rate = tiny["train"]["mtop/no demos"]
    job_tl = [len(e.ids) for e in job.examples("train")]
    expected = (tc.max_steps * tc.grad_accum * step_tokens(job_tl, tc.batch_size, pt.length, tc.bucket_by_length)
                / rate["padded_tokens_per_s"]
                + n_dev_passes(tc) * eval_tokens(lengths["dev"], tc.batch_size, pt.length)
                / rate["eval_tokens_per_s"])
    assert train_est == pytest.approx(expected)
    # and the job it stands for runs: its outcome is a trained prompt of the planned length
    outcome = run_training(inputs)
    assert outcome.result.best_prompt.shape[0] == pt.length and outcome.result.steps == tc.max_steps

    zs = next(r for r in p.predict if r.model == "tiny" and r.method == "zeroshot")
    params = {**zs.wildcards(), "n_demos": 0, "input_label": "Utterance", "output_label": "Parse",
              "max_new_tokens": 8, "batch_size": 8, "max_length": 256, "device": "cpu", "precision": "fp32"}
    pjob = load_predict_inputs(model_path=str(run_dir / "results/caltest/models/tiny"),
                               test_path=str(data / "test.jsonl"), params=params)
    rate = tiny["decode"]["mtop/query"]
    # the decoding probe ran whole batches of the config's size on the job's rendering of the test rows
    assert rate["rows"] == int(cfg["predict"]["batch_size"]) and rate["batches"] >= 1
    test_rows = sorted(work.lengths("test", 0, "retrieved", 0))
    assert test_rows == sorted(len(e.ids) for e in pjob.examples("test"))
    assert len(run_prediction(pjob, 8)) == len(pjob.examples("test"))
    # the plan's figure for this run counts the same test rows the job decodes, in the config's batches
    bs = int(cfg["predict"]["batch_size"])
    assert tiny["predict_runs"]["/".join(map(str, zs))] == pytest.approx(
        startup + math.ceil(len(pjob.examples("test")) / bs) * rate["seconds_per_batch"])

