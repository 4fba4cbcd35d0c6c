"""Soft prompt: same logits as PEFT prompt tuning, padding-proof layout, initialisations, files, PEFT export."""

from __future__ import annotations

import pytest
import torch
from tiny_engine import ARCHS, load, tiny_model_dir

from iclpt.engine.soft_prompt import assemble_inputs, export_peft, init_prompt, load_prompt, save_prompt
from iclpt.models.loading import lm_forward


def _peft_model(model, prompt):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    pm = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                  num_virtual_tokens=prompt.shape[0]))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
    return pm


def _ours(model, prompt, ids):
    e, a, p = assemble_inputs(model, prompt, ids, torch.ones_like(ids))
    with torch.no_grad():
        return lm_forward(model, e, a, p).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_peft_prompt_tuning(arch):
    model, tok = load(arch)
    prompt = init_prompt(model, 5, "random", seed=1)
    ids = torch.tensor([tok("the big cat sees a red fish in the river.")["input_ids"],
                        tok("a dog runs with the old bird in a house.")["input_ids"]])
    assert ids.shape[1] > 5
    ours = _ours(model, prompt, ids)
    with torch.no_grad():
        ref = _peft_model(model, prompt)(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padding_never_separates_prompt_and_text(arch):
    model, tok = load(arch)
    prompt = init_prompt(model, 3, "vocab", seed=0)
    rows = [tok(t)["input_ids"] for t in ("a cat.", "the old dog sleeps in the house.", "red")]
    T = max(map(len, rows))
    ids = torch.full((3, T), tok.pad_token_id)
    mask = torch.zeros((3, T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.tensor(r)
        mask[i, T - len(r):] = 1
    e, a, p = assemble_inputs(model, prompt, ids, mask)
    for i, r in enumerate(rows):
        pad = T - len(r)
        assert a[i, :pad].sum() == 0 and a[i, pad:].all()
        torch.testing.assert_close(e[i, pad:pad + 3], prompt)  # prompt right before the first real token
        assert p[i, pad:].tolist() == list(range(3 + len(r)))
    with torch.no_grad():
        batched = lm_forward(model, e, a, p).logits
    for i, r in enumerate(rows):
        single = _ours(model, prompt, torch.tensor([r]))[0]
        torch.testing.assert_close(batched[i, T - len(r):], single, atol=1e-5, rtol=0)


def test_prompt_gets_gradient_through_the_gather():
    model, tok = load("gpt2")
    prompt = torch.nn.Parameter(init_prompt(model, 2, "vocab", seed=0))
    ids = torch.tensor([[1, 1, 5, 6], [7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    e, a, p = assemble_inputs(model, prompt, ids, mask)
    e.sum().backward()
    assert torch.equal(prompt.grad, torch.full_like(prompt, 2.0))  # each prompt vector used once per row


def test_initialisations(tmp_path):
    model, tok = load("gpt2")
    emb = model.get_input_embeddings().weight
    p = init_prompt(model, 6, "vocab", seed=7, init_vocab_size=50)
    assert torch.equal(p, init_prompt(model, 6, "vocab", seed=7, init_vocab_size=50))
    assert not torch.equal(p, init_prompt(model, 6, "vocab", seed=8, init_vocab_size=50))
    for row in p:  # every vector is one of the 50 lowest-id embeddings
        assert (emb[:50] == row).all(dim=1).any()
    r = init_prompt(model, 4, "random", seed=0)
    assert r.shape == (4, emb.shape[1]) and r.abs().max() <= 0.5
    t = init_prompt(model, 5, "text", init_text="the cat", tokenizer=tok)
    ids = tok("the cat", add_special_tokens=False)["input_ids"]
    assert torch.equal(t, emb[torch.tensor((ids * 5)[:5])])
    save_prompt(tmp_path / "p.safetensors", p, {"task": "dart", "best_dev_loss": 1.5})
    loaded, meta = load_prompt(tmp_path / "p.safetensors")
    assert torch.equal(loaded, p) and meta == {"task": "dart", "best_dev_loss": 1.5}
    f = init_prompt(model, 6, "file", init_file=str(tmp_path / "p.safetensors"))
    assert torch.equal(f, p)
    with pytest.raises(ValueError, match="does not match"):
        init_prompt(model, 3, "file", init_file=str(tmp_path / "p.safetensors"))
    with pytest.raises(ValueError):
        init_prompt(model, 3, "nope")


@pytest.mark.parametrize("arch", ["gpt2", "bloom"])
def test_peft_export_loads_and_gives_the_same_logits(tmp_path, arch):
    from peft import PeftModel

    model, tok = load(arch)
    prompt = init_prompt(model, 4, "random", seed=2)
    export_peft(tmp_path / "peft", prompt, model.config, base_model_name_or_path=tiny_model_dir(arch))
    ids = torch.tensor([tok("the cat sees a dog.")["input_ids"]])
    ours = _ours(model, prompt, ids)
    pm = PeftModel.from_pretrained(model, str(tmp_path / "peft"))
    with torch.no_grad():
        ref = pm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    w, _ = load_prompt(tmp_path / "peft" / "adapter_model.safetensors")
    assert torch.equal(w, prompt)


def test_prompt_file_is_byte_stable_and_readable(tmp_path):
    """The same prompt and metadata give the same bytes in separate processes; safe_open reads them back."""
    import subprocess
    import sys

    from safetensors import safe_open

    code = (
        "import torch, sys; from iclpt.engine.soft_prompt import save_prompt; "
        "torch.manual_seed(0); w = torch.randn(3, 8); "
        "save_prompt(sys.argv[1], w, {f'k{i}': i for i in range(20)})"
    )
    paths = [tmp_path / f"p{i}.safetensors" for i in range(3)]
    for p in paths:
        subprocess.run([sys.executable, "-c", code, str(p)], check=True,
                       env={**__import__("os").environ, "PYTHONHASHSEED": "random"})
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()
    with safe_open(str(paths[0]), framework="pt") as fh:
        import torch

        torch.manual_seed(0)
        assert torch.equal(fh.get_tensor("prompt"), torch.randn(3, 8))
        assert fh.metadata()["k7"] == "7"
