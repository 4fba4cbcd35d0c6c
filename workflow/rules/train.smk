# train stage: one soft prompt per (task, model, method in {pt, ipt}, length, demos, seed) (docs/architecture.md).
#   results/<run>/prompts/<task>/<model>/<method>/L<len>/<demos>/s<seed>/
#     prompt.safetensors, meta.json, train_log.jsonl, peft/{adapter_config.json, adapter_model.safetensors}
# Resumable: checkpoints under results/<run>/.checkpoints/<key> (key = hash of the job's params and inputs).
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from iclpt.tasks import get_task  # noqa: E402

PROMPT_SETTINGS = ("init", "init_vocab_size", "init_text", "init_file")
PROMPT_DEFAULTS = {"init": "vocab", "init_vocab_size": 5000, "init_text": None, "init_file": None}


def task_text(task):
    """The task's template labels and decoding budget (adapter values; tasks.<task>.max_new_tokens overrides)."""
    t = get_task(task)
    return {
        "input_label": t.input_label,
        "output_label": t.output_label,
        "max_new_tokens": int(task_cfg(task).get("max_new_tokens") or t.max_new_tokens),
    }


def prompt_settings():
    p = config.get("prompt", {})
    return {k: p.get(k, PROMPT_DEFAULTS[k]) for k in PROMPT_SETTINGS}


def train_inputs(wc):
    d = {
        "model": model_inputs(wc.model),
        "train": DATA.format(task=wc.task, split="train"),
        "dev": DATA.format(task=wc.task, split="dev"),
    }
    if wc.method == "ipt":
        r = demo_retriever(wc.demos, wc.seed, wc.task)
        d["train_retrieval"] = RETRIEVAL.format(task=wc.task, retriever=r, split="train")
        d["dev_retrieval"] = RETRIEVAL.format(task=wc.task, retriever=r, split="dev")
    return d


def train_params(wc):
    if (wc.method == "pt") != (wc.demos == "none"):
        raise ValueError(f"train_prompt: method {wc.method} with demos {wc.demos} (pt takes none, ipt retrieved|random)")
    text = task_text(wc.task)
    return {
        "task": wc.task,
        "model": wc.model,
        "method": wc.method,
        "length": int(wc.length),
        "demos": wc.demos,
        "seed": int(wc.seed),
        "n_demos": int(config["demos"]["n_demos"]) if wc.method == "ipt" else 0,
        "input_label": text["input_label"],
        "output_label": text["output_label"],
        "prompt": prompt_settings(),
        "train": dict(config.get("train", {})),
        "device": config.get("device", "auto"),
        "precision": config.get("precision", "auto"),
    }


rule train_prompt:
    """Train a soft prompt (PT: [P][input]; IPT: [P][demo][input]) on the frozen model; keep the best by dev loss."""
    input:
        unpack(train_inputs),
    output:
        prompt=PROMPT_DIR + "/prompt.safetensors",
        meta=PROMPT_DIR + "/meta.json",
        train_log=PROMPT_DIR + "/train_log.jsonl",
        peft_config=PROMPT_DIR + "/peft/adapter_config.json",
        peft_model=PROMPT_DIR + "/peft/adapter_model.safetensors",
    wildcard_constraints:
        method="pt|ipt",
    params:
        model_path=lambda wc: model_path(wc.model),
        checkpoint_root=CHECKPOINTS,
        job=train_params,
    log:
        RES + "/logs/train_prompt/" + RUN_DIR + ".log",
    threads: res("train_prompt", "threads", 2)
    resources:
        mem_mb=mem_mb("train_prompt", 4000),
        runtime=res("train_prompt", "runtime", 120),
        gpu=res("train_prompt", "gpu", 0),
    conda:
        "../../envs/iclpt.yaml"
    script:
        "../scripts/train_prompt.py"
