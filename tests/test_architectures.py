"""The soft-prompt engine on every architecture it supports, the real models' details included.

Tiny random builds of GPT-2 / OPT / BLOOM and of the two real models' families (Llama = SmolLM2-135M-Instruct:
tied head, grouped-query attention, a tokenizer that adds no BOS; Gemma 3 = Gemma 3 270M: ``sqrt(hidden)``
embedding scale inside the embedding module, sliding-window layers, a tokenizer that adds ``<bos>``). Each test
names the wrong choice it would catch. The generic guarantees (logits equal to PEFT on unpadded rows, left
padding, batch/cache-invariant greedy decoding, fast loss = full forward, bf16 pre-cast) are parametrized over
the same architectures in test_soft_prompt / test_generation / test_training.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_engine import ARCHS, left_pad, load, tiny_model_dir

from iclpt.engine.generation import greedy_generate
from iclpt.engine.prompting import Encoder, Template, build_examples, make_batch
from iclpt.engine.soft_prompt import assemble_inputs, init_prompt
from iclpt.engine.training import TrainConfig, TrainingInterrupted, train_prompt
from iclpt.models.loading import lm_forward, output_cache, target_logits

CPU = torch.device("cpu")
TPL = Template("Input", "Output")
DEMOS = [("red cat", "the red cat."), ("a big dog", "the big dog.")]
LONG = "the old dog sleeps in the big house with a red bird and the small cat eats a fish"


def _module_embed(model, ids):
    """The reference: what the model's embedding module feeds the model for ``ids`` (independent of iclpt)."""
    with torch.no_grad():
        return model.get_input_embeddings()(torch.as_tensor(ids)).float()


def _logits(model, prompt, ids, mask=None):
    mask = torch.ones_like(ids) if mask is None else mask
    with torch.no_grad():
        return lm_forward(model, *assemble_inputs(model, prompt, ids, mask)).logits


# ---- prompt initialisation: on the scale of the text (Gemma's embedding module scales) -------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_text_init_continues_exactly_like_the_text(arch):
    """``text`` init of X, then the tokens of Y, gives the model's logits on X + Y: the prompt vectors are what
    the embedding module feeds the model for X. Fails for Gemma if the init reads the unscaled weight."""
    model, tok = load(arch)
    x, y = "the old dog sleeps", " in the big house with a red bird."
    xi = tok(x, add_special_tokens=False)["input_ids"]
    yi = tok(y, add_special_tokens=False)["input_ids"]
    prompt = init_prompt(model, len(xi), "text", init_text=x, tokenizer=tok)
    ours = _logits(model, prompt, torch.tensor([yi]))[0]
    ref = _logits(model, None, torch.tensor([xi + yi]))[0]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    raw = model.get_input_embeddings().weight.detach()[torch.tensor(xi)]
    if arch == "gemma3":  # the defining property tells the two choices apart
        scale = math.sqrt(model.config.hidden_size)
        torch.testing.assert_close(prompt, raw * scale, atol=1e-6, rtol=1e-6)
        wrong = _logits(model, raw, torch.tensor([yi]))[0]
        assert (wrong - ref).abs().max() > 1e-2
    else:
        assert torch.equal(prompt, raw)


@pytest.mark.parametrize("arch", ARCHS)
def test_vocab_init_rows_are_input_embeddings_of_frequent_ids(arch):
    model, tok = load(arch)
    pool = 60
    p = init_prompt(model, 8, "vocab", seed=3, init_vocab_size=pool)
    table = _module_embed(model, torch.arange(pool))
    for row in p:  # each vector is the module's output for one of the `pool` lowest ids
        assert (table == row).all(dim=1).any()
    text_norm = _module_embed(model, tok(LONG, add_special_tokens=False)["input_ids"]).norm(dim=1).mean()
    ratio = float(p.norm(dim=1).mean() / text_norm)
    assert 0.5 < ratio < 2.0, ratio  # same scale as the text (raw Gemma rows would be sqrt(32) = 5.7x smaller)


@pytest.mark.parametrize("arch", ARCHS)
def test_init_uses_the_embedding_module_like_peft(arch):
    """PEFT's TEXT init calls the embedding module on the tokens of the text *with* the tokenizer's special
    tokens; ours takes the text tokens alone (the BOS stays at the start of each row's text)."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, tok = load(arch)
    text = "the cat sees a dog"
    full = tok(text)["input_ids"]
    plain = tok(text, add_special_tokens=False)["input_ids"]
    n_special = len(full) - len(plain)
    assert full[n_special:] == plain
    cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=len(full), prompt_tuning_init="TEXT",
                             prompt_tuning_init_text=text, tokenizer_name_or_path=tiny_model_dir(arch))
    pm = get_peft_model(model, cfg)
    peft_init = pm.prompt_encoder["default"].embedding.weight.detach()
    ours = init_prompt(model, len(plain), "text", init_text=text, tokenizer=tok)
    torch.testing.assert_close(peft_init, _module_embed(model, full), atol=0, rtol=0)
    torch.testing.assert_close(ours, peft_init[n_special:], atol=0, rtol=0)
    assert n_special == (1 if arch == "gemma3" else 0)


# ---- BOS: once, at the start of the text part, after the soft prompt (PEFT's order) ----------------------
def _specials(tok):
    return {i for i in tok.all_special_ids}


@pytest.mark.parametrize("arch", ARCHS)
def test_bos_appears_exactly_as_the_tokenizer_puts_it(arch):
    """Gemma: one <bos>, at the start of every row, never repeated before demos, the tail or the target;
    SmolLM2-like Llama and the GPT-2-like builds: no special token at all (their tokenizers add none)."""
    _, tok = load(arch)
    enc = Encoder(tok, TPL)
    pool = {f"t{i}": {"id": f"t{i}", "input": x, "target": y} for i, (x, y) in enumerate(DEMOS)}
    ret = {"q": {"id": "q", "demo_ids": ["t0", "t1"], "scores": [0.9, 0.5]}}
    recs = [{"id": "q", "input": "a fish", "target": "the fish."}]
    rows = [enc.encode("a fish", DEMOS, target="the fish.", n_virtual=4, max_length=128),
            enc.encode("a fish", DEMOS, n_virtual=4, max_length=128, max_new_tokens=8),
            enc.encode("a fish", n_virtual=4, max_length=128, max_new_tokens=8)]
    rows += build_examples(enc, recs, ret, pool, n_demos=2, n_virtual=4, max_length=128)[0]
    rows += build_examples(enc, recs, None, pool, n_demos=0, n_virtual=4, max_length=128, with_target=False,
                           max_new_tokens=8)[0]
    special = _specials(tok)
    for e in rows:
        found = [i for i in e.ids if i in special]
        if arch == "gemma3":
            assert tok.bos_token_id == 2 and found == [2] and e.ids[0] == 2
        else:
            assert found == [], (arch, found)
        # the text part is exactly what the tokenizer makes of the rendered text (one leading BOS at most)
        assert tok.decode(e.ids[:len(e.ids) - e.n_target], skip_special_tokens=True) == e.text
    if arch == "llama":
        assert (tok.bos_token, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == ("<|im_start|>", 1, 2, 2)


@pytest.mark.parametrize("arch", ARCHS)
def test_encoded_rows_with_prompt_give_peft_logits_in_a_padded_batch(arch):
    """Rows as the jobs encode them (the tokenizer's BOS included), left padded in one batch with the soft prompt:
    each row's logits equal PEFT prompt tuning on that row alone (PEFT: [P] before every token, BOS included)."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, tok = load(arch)
    enc = Encoder(tok, TPL)
    prompt = init_prompt(model, 5, "vocab", seed=1, init_vocab_size=100)
    exs = [enc.encode("a fish", DEMOS, n_virtual=5, max_length=128, max_new_tokens=4),
           enc.encode(LONG, n_virtual=5, max_length=128, max_new_tokens=4),
           enc.encode("red", [DEMOS[0]], n_virtual=5, max_length=128, max_new_tokens=4)]
    ids, mask = left_pad([e.ids for e in exs], tok.pad_token_id)
    e, a, p = assemble_inputs(model, prompt, ids, mask)
    if arch == "gemma3":  # [pad][P][<bos>][text]: the BOS embedding right after the prompt
        for i, ex in enumerate(exs):
            pad = ids.shape[1] - len(ex.ids)
            torch.testing.assert_close(e[i, pad + 5], _module_embed(model, [tok.bos_token_id])[0])
    with torch.no_grad():
        batched = lm_forward(model, e, a, p).logits
    pm = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
        for i, ex in enumerate(exs):
            one = torch.tensor([ex.ids])
            ref = pm(input_ids=one, attention_mask=torch.ones_like(one)).logits[0]
            torch.testing.assert_close(batched[i, ids.shape[1] - len(ex.ids):], ref, atol=1e-5, rtol=0)


# ---- Gemma's sliding-window layers with left padding ----------------------------------------------------
def test_sliding_window_with_left_padding_and_the_cache():
    """Rows far longer than the window (4) next to rows shorter than it, so pads outnumber the window: greedy
    output alone = in the batch = without the cache, the first-step logits agree, and the window really
    changes the outputs of these inputs (a model with a full-width window differs)."""
    model, tok = load("gemma3", init_std=0.3)
    w = model.config.sliding_window
    assert w == 4 and set(model.config.layer_types) == {"sliding_attention", "full_attention"}
    prompt = init_prompt(model, 3, "vocab", seed=0, init_vocab_size=100)
    texts = [LONG, "a cat", "fish", "the tree is new and green with a bird"]
    rows = [tok(t)["input_ids"] for t in texts]
    lengths = sorted(map(len, rows))
    assert lengths[0] < w < lengths[-1] - w  # padding longer than the window
    pad = tok.pad_token_id
    single = [greedy_generate(model, prompt, [r], 10, pad)[0] for r in rows]
    assert greedy_generate(model, prompt, rows, 10, pad) == single
    assert greedy_generate(model, prompt, rows, 10, pad, use_cache=False) == single
    assert len({tuple(s) for s in single}) > 1

    ids, mask = left_pad(rows, pad)
    e, a, p = assemble_inputs(model, prompt, ids, mask)
    for i, r in enumerate(rows):  # positions count from the prompt, whatever the padding
        assert p[i, ids.shape[1] - len(r):].tolist() == list(range(3 + len(r)))
    with torch.no_grad():
        out = lm_forward(model, e, a, p, use_cache=True)
    kinds = [type(layer).__name__ for layer in output_cache(out).layers]
    assert kinds == ["DynamicSlidingWindowLayer", "DynamicLayer"], kinds
    for i, r in enumerate(rows):
        one = _logits(model, prompt, torch.tensor([r]))[0]
        torch.testing.assert_close(out.logits[i, ids.shape[1] - len(r):], one, atol=1e-5, rtol=0)
    # the test inputs exercise the window: widening it changes the long row's logits
    model.config.sliding_window = 1024
    try:
        wide = _logits(model, prompt, torch.tensor([rows[0]]))[0]
    finally:
        model.config.sliding_window = w
    narrow = _logits(model, prompt, torch.tensor([rows[0]]))[0]
    assert (wide[-1] - narrow[-1]).abs().max() > 1e-3


def test_fast_loss_applies_gemma_softcapping():
    """The training loss's head-on-targets path applies ``final_logit_softcapping`` like the full forward."""
    model, tok = load("gemma3", init_std=0.3)
    enc = Encoder(tok, TPL)
    batch = make_batch([enc.encode(x, target=f"the {x}.", n_virtual=2, max_length=96) for x in ("cat", LONG)],
                       tok.pad_token_id)
    prompt = init_prompt(model, 2, "vocab", seed=0)
    e, a, p = assemble_inputs(model, prompt, batch.input_ids, batch.token_mask)
    m = torch.zeros(a.shape, dtype=torch.bool)
    m[:, -4:] = True
    model.config.final_logit_softcapping = 0.5
    try:
        with torch.no_grad():
            fast = target_logits(model, e, a, p, m)
            full = lm_forward(model, e, a, p).logits[m]
    finally:
        model.config.final_logit_softcapping = None
    assert fast.abs().max() <= 0.5
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)


# ---- training: frozen base, tied head untouched, bit-identical resume -----------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_training_freezes_the_base_and_resumes_bit_identically(arch, tmp_path):
    model, tok = load(arch)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert head.weight is emb.weight  # tied, as in SmolLM2 and Gemma 3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    enc = Encoder(tok, TPL)
    xs = ["red cat", "a big dog", "the fish", LONG, "green bird", "old tree"]
    train = [enc.encode(x, [DEMOS[i % 2]], target=f"the {x}.", n_virtual=3, max_length=96) for i, x in enumerate(xs)]
    init = init_prompt(model, 3, "vocab", seed=0, init_vocab_size=100)
    cfg = TrainConfig(lr=0.05, max_steps=5, warmup_steps=1, batch_size=3, eval_every=2, checkpoint_every=2,
                      max_length=96)
    kw = dict(seed=0, pad_id=tok.pad_token_id, device=CPU)
    full = train_prompt(model, init, train, train[:2], cfg, **kw)
    assert not torch.equal(full.final_prompt, init)
    after = model.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # bit-identical base
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied

    with pytest.raises(TrainingInterrupted):
        train_prompt(model, init, train, train[:2], cfg, checkpoint_dir=tmp_path, stop_after=3, **kw)
    resumed = train_prompt(model, init, train, train[:2], cfg, checkpoint_dir=tmp_path, **kw)
    assert resumed.resumed_from == 2
    assert torch.equal(resumed.final_prompt, full.final_prompt)
    assert torch.equal(resumed.best_prompt, full.best_prompt)
    assert resumed.log == full.log
