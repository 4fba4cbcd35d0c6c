"""Rendering (golden strings for one example of each task), truncation policy, label masks, batches."""

from __future__ import annotations

import pytest
import torch
from tiny_engine import load

from iclpt.data.tasks import get_task
from iclpt.engine.prompting import IGNORE, Encoder, Template, make_batch, render_text

# one (input, target) and one demo per task; inputs as the adapters linearise them (one line each)
EXAMPLES = {
    "totto": ("<page_title> Alice </page_title> <cell> 1990 <col_header> Year </col_header> </cell>",
              "Alice was born in 1990.",
              ("<page_title> Bob </page_title> <cell> 1980 <col_header> Year </col_header> </cell>",
               "Bob was born in 1980.")),
    "dart": ("Alice | birth_place | Paris", "Alice was born in Paris.",
             ("Bob | birth_place | Rome", "Bob was born in Rome.")),
    "logic2text": ("eq { count { all_rows } ; 3 } = true", "There are 3 rows.",
                   ("eq { count { all_rows } ; 2 } = true", "There are 2 rows.")),
    "spider": ("How many singers are there? | concert_singer | singer : singer_id , name",
               "SELECT count(*) FROM singer",
               ("How many concerts are there? | concert_singer | concert : concert_id",
                "SELECT count(*) FROM concert")),
    "mtop": ("what is the weather in Paris", "[IN:GET_WEATHER [SL:LOCATION Paris ] ]",
             ("set an alarm for 7", "[IN:CREATE_ALARM [SL:DATE_TIME for 7 ] ]")),
}

GOLDEN = {
    "totto": ("Table: <page_title> Bob </page_title> <cell> 1980 <col_header> Year </col_header> </cell>\n"
              "Sentence: Bob was born in 1980.\n\n"
              "Table: <page_title> Alice </page_title> <cell> 1990 <col_header> Year </col_header> </cell>\n"
              "Sentence:"),
    "dart": ("Triples: Bob | birth_place | Rome\nText: Bob was born in Rome.\n\n"
             "Triples: Alice | birth_place | Paris\nText:"),
    "logic2text": ("Logic: eq { count { all_rows } ; 2 } = true\nSentence: There are 2 rows.\n\n"
                   "Logic: eq { count { all_rows } ; 3 } = true\nSentence:"),
    "spider": ("Question: How many concerts are there? | concert_singer | concert : concert_id\n"
               "SQL: SELECT count(*) FROM concert\n\n"
               "Question: How many singers are there? | concert_singer | singer : singer_id , name\nSQL:"),
    "mtop": ("Utterance: set an alarm for 7\nParse: [IN:CREATE_ALARM [SL:DATE_TIME for 7 ] ]\n\n"
             "Utterance: what is the weather in Paris\nParse:"),
}


def _template(task):
    t = get_task(task)
    return Template(t.input_label, t.output_label)


@pytest.mark.parametrize("task", sorted(EXAMPLES))
def test_golden_strings(task):
    x, y, demo = EXAMPLES[task]
    tpl = _template(task)
    icl = render_text(tpl, x, [demo])  # ICL and IPT share the text; IPT adds [P] as embeddings
    assert icl == GOLDEN[task]
    pt = render_text(tpl, x)
    assert pt == GOLDEN[task].split("\n\n")[-1]
    assert tpl.answer(y) == f" {y}\n"
    # the encoder's text and ids agree with the rendering
    _, tok = load("gpt2")
    enc = Encoder(tok, tpl)
    e = enc.encode(x, [demo], target=y, n_virtual=4, max_length=256)
    assert e.text == icl and e.n_demos == 1 and not e.input_truncated
    assert tok.decode(e.ids) == icl + tpl.answer(y)
    assert tok.decode(e.ids[-e.n_target:]) == f" {y}\n"
    p = enc.encode(x, [], n_virtual=4, max_length=256, max_new_tokens=8)
    assert p.text == pt and p.n_target == 0 and tok.decode(p.ids) == pt


def test_demos_order_best_nearest_the_input():
    tpl = Template("Input", "Output")
    text = render_text(tpl, "q", [("best", "B"), ("second", "S")])
    assert text == "Input: second\nOutput: S\n\nInput: best\nOutput: B\n\nInput: q\nOutput:"


def test_truncation_drops_demos_first_then_input_end_never_target():
    _, tok = load("gpt2")
    tpl = Template("Input", "Output")
    enc = Encoder(tok, tpl)
    x = "the old cat sees a big red fish in the river with the dog"
    y = "the cat eats the fish."
    demos = [("a dog runs in the house", "the dog runs."), ("a bird sleeps on the tree", "the bird sleeps.")]
    full = enc.encode(x, demos, target=y, n_virtual=3, max_length=1000)
    one_demo = enc.encode(x, demos[:1], target=y, n_virtual=3, max_length=1000)
    no_demo = enc.encode(x, [], target=y, n_virtual=3, max_length=1000)
    # budget fits exactly one demo: the least similar (second) is dropped, the input is intact
    e = enc.encode(x, demos, target=y, n_virtual=3, max_length=len(one_demo.ids) + 3)
    assert e.n_demos == 1 and e.n_demos_dropped == 1 and not e.input_truncated
    assert e.ids == one_demo.ids and "a dog runs" in e.text and "bird" not in e.text
    # one token short of the bare query: every demo dropped, then the end of the input is cut
    e = enc.encode(x, demos, target=y, n_virtual=3, max_length=len(no_demo.ids) + 3 - 1)
    assert e.n_demos == 0 and e.input_truncated and not e.target_truncated
    assert e.ids[-e.n_target:] == no_demo.ids[-no_demo.n_target:]  # target intact
    assert e.text.startswith("Input: the old cat") and e.text.endswith("\nOutput:")
    assert len(e.ids) + 3 == len(no_demo.ids) + 3 - 1
    assert len(full.ids) > len(one_demo.ids) > len(no_demo.ids)
    # decoding: the budget reserves max_new_tokens
    d = enc.encode(x, demos, n_virtual=3, max_length=len(no_demo.ids) - no_demo.n_target + 3 + 10,
                   max_new_tokens=10)
    assert d.n_demos == 0 and not d.input_truncated
    with pytest.raises(ValueError, match="no room"):
        enc.encode(x, demos, n_virtual=3, max_length=8, max_new_tokens=10)


def test_label_mask_covers_target_tokens_only():
    _, tok = load("gpt2")
    enc = Encoder(tok, Template("Input", "Output"))
    a = enc.encode("a cat", [], target="the cat.", n_virtual=2, max_length=64)
    b = enc.encode("the old dog sleeps in the house", [("x", "y")], target="a dog sleeps.", n_virtual=2,
                   max_length=64)
    batch = make_batch([a, b], tok.pad_token_id)
    T = batch.input_ids.shape[1]
    assert batch.n_target == a.n_target + b.n_target
    for i, e in enumerate((a, b)):
        pad = T - len(e.ids)
        assert (batch.input_ids[i, :pad] == tok.pad_token_id).all() and batch.token_mask[i, :pad].sum() == 0
        assert batch.input_ids[i, pad:].tolist() == e.ids
        lab = batch.labels[i]
        assert (lab[: T - e.n_target] == IGNORE).all()
        assert lab[T - e.n_target:].tolist() == e.ids[-e.n_target:]
    assert isinstance(batch.labels, torch.Tensor)


def test_demo_count_is_the_explicit_layout_switch():
    from iclpt.engine.prompting import demo_count

    assert demo_count({"n_demos": 2, "demos": "retrieved"}, "job") == 2
    assert demo_count({"n_demos": 0, "demos": "none"}, "job") == 0
    assert demo_count({"n_demos": 0}, "job") == 0  # no demo source: none
    with pytest.raises(ValueError, match="n_demos"):
        demo_count({"demos": "none"}, "job")
    with pytest.raises(ValueError, match=">= 0"):
        demo_count({"n_demos": -1, "demos": "retrieved"}, "job")
    with pytest.raises(ValueError, match="without demos"):
        demo_count({"n_demos": 0, "demos": "random"}, "job")
    with pytest.raises(ValueError, match="needs demos"):
        demo_count({"n_demos": 1, "demos": "none"}, "job")


def test_index_by_id_rejects_duplicates():
    from iclpt.engine.prompting import index_by_id
    from iclpt.io import DataError

    assert index_by_id([{"id": "a"}, {"id": "b"}], "f") == {"a": {"id": "a"}, "b": {"id": "b"}}
    with pytest.raises(DataError, match="duplicate id 'a'"):
        index_by_id([{"id": "a"}, {"id": "a"}], "f")
