"""Rendering of ICL / PT / IPT inputs, the truncation policy, label masks and left-padded batches.

Template (one per task; the labels come from the task adapter, e.g. DART ``Triples`` / ``Text``)::

    query(x)     = "{input_label}: {x}\\n{output_label}:"
    answer(y)    = " {y}\\n"                      # the training target; decoding stops at the newline
    demo(x, y)   = query(x) + answer(y)
    SEPARATOR    = "\\n"                          # after each demo: one blank line before the next block

    ICL  = [demo_k SEP] ... [demo_1 SEP] query(x)         (no soft prompt)
    PT   = [P] query(x)
    IPT  = [P] [demo_k SEP] ... [demo_1 SEP] query(x)
    transfer_<S> = [P_S] [demos of the target task] query(x)   (IPT layout, prompt trained by PT on task S)
    zero-shot = query(x)                                    (no soft prompt, no demos)

Demos are given best first (retrieval order) and placed so the best demo sits nearest the input
(``demo_1`` above). The soft prompt ``[P]`` is not text: it is prepended as embeddings
(:func:`iclpt.engine.soft_prompt.assemble_inputs`) before the tokenizer's leading special tokens (e.g. OPT's BOS), as
PEFT does.

Tokenisation is per segment (leading special tokens, each demo block, the input head ``"{input_label}: {x}"``,
the tail ``"\\n{output_label}:"``, the answer), so the prefix is tokenised identically in training and decoding
and the target tokens are exactly what decoding must produce.

Truncation to a token budget (``max_length`` counts the soft prompt, the prefix and the target, or
``max_new_tokens`` when decoding): (1) drop demos, least similar first; (2) cut the end of the input head;
(3) training only, as a last resort when even the bare query does not fit: cut the end of the target (counted
in ``target_truncated``). The target is otherwise never truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

SEPARATOR = "\n"
IGNORE = -100


@dataclass(frozen=True)
class Template:
    input_label: str
    output_label: str

    def head(self, x: str) -> str:
        return f"{self.input_label}: {x}"

    def tail(self) -> str:
        return f"\n{self.output_label}:"

    def query(self, x: str) -> str:
        return self.head(x) + self.tail()

    @staticmethod
    def answer(y: str) -> str:
        return f" {y}\n"

    def demo(self, x: str, y: str) -> str:
        return self.query(x) + self.answer(y)


def render_text(template: Template, x: str, demos: Sequence[tuple[str, str]] = ()) -> str:
    """The text part of the model input (without the soft prompt); ``demos`` best first."""
    return "".join(template.demo(dx, dy) + SEPARATOR for dx, dy in reversed(list(demos))) + template.query(x)


@dataclass
class Encoded:
    """One tokenised example: ``ids`` = prefix (+ target when training); loss on the last ``n_target`` ids."""

    ids: list[int]
    n_target: int
    text: str
    n_demos: int
    n_demos_dropped: int = 0
    input_truncated: bool = False
    target_truncated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


class Encoder:
    """Tokenises examples with a fixed template and budget (caches the constant segments)."""

    def __init__(self, tokenizer: Any, template: Template):
        self.tok = tokenizer
        self.template = template
        self.special_prefix = _special_prefix(tokenizer)
        self.tail_ids = self._ids(template.tail())

    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def encode(self, x: str, demos: Sequence[tuple[str, str]] = (), target: str | None = None,
               n_virtual: int = 0, max_length: int = 1024, max_new_tokens: int = 0) -> Encoded:
        """Tokenise ``[special][demos][query](+answer)`` within ``max_length`` (soft prompt included)."""
        t = self.template
        demo_ids = [self._ids(t.demo(dx, dy) + SEPARATOR) for dx, dy in demos]  # best first
        head = self._ids(t.head(x))
        tgt = self._ids(t.answer(target)) if target is not None else []
        reserve = len(tgt) if target is not None else int(max_new_tokens)
        budget = int(max_length) - int(n_virtual) - reserve
        fixed = len(self.special_prefix) + len(self.tail_ids)

        kept = len(demo_ids)
        while kept > 0 and fixed + len(head) + sum(len(d) for d in demo_ids[:kept]) > budget:
            kept -= 1
        demo_ids = demo_ids[:kept]
        used = fixed + sum(len(d) for d in demo_ids)
        input_truncated = False
        if used + len(head) > budget:
            head = head[: max(0, budget - used)]
            input_truncated = True
        target_truncated = False
        if used + len(head) > budget:  # even the bare query does not fit
            if target is None:
                raise ValueError(
                    f"max_length {max_length} leaves no room for the query (soft prompt {n_virtual}, "
                    f"{max_new_tokens} new tokens, {fixed} template tokens)")
        if target is not None and used + len(head) + len(tgt) > int(max_length) - int(n_virtual):
            room = int(max_length) - int(n_virtual) - used - len(head)
            if room < 1:
                raise ValueError(f"max_length {max_length} leaves no room for the target")
            tgt = tgt[:room]
            target_truncated = True

        prefix_text_parts = [t.demo(dx, dy) + SEPARATOR for dx, dy in reversed(list(demos)[:kept])]
        head_text = t.head(x) if not input_truncated else self.tok.decode(head)
        text = "".join(prefix_text_parts) + head_text + t.tail()
        ids = list(self.special_prefix)
        for d in reversed(demo_ids):
            ids += d
        ids += head + self.tail_ids + tgt
        return Encoded(ids=ids, n_target=len(tgt), text=text, n_demos=kept,
                       n_demos_dropped=len(list(demos)) - kept, input_truncated=input_truncated,
                       target_truncated=target_truncated)


def _special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before the text by default (e.g. OPT's ``</s>``); usually none."""
    probe = "a"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe)["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i]
    return []


@dataclass
class Batch:
    """Left-padded token batch. ``labels`` is IGNORE except on target tokens."""

    input_ids: torch.Tensor
    token_mask: torch.Tensor
    labels: torch.Tensor
    n_target: int

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.token_mask.to(device), self.labels.to(device), self.n_target)


def make_batch(examples: Sequence[Encoded], pad_id: int) -> Batch:
    T = max(len(e.ids) for e in examples)
    B = len(examples)
    ids = torch.full((B, T), int(pad_id), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        L = len(e.ids)
        row = torch.tensor(e.ids, dtype=torch.long)
        ids[i, T - L:] = row
        mask[i, T - L:] = 1
        if e.n_target:
            labels[i, T - e.n_target:] = row[L - e.n_target:]
    return Batch(ids, mask, labels, sum(e.n_target for e in examples))


def demo_pairs(demo_ids: Sequence[str], pool: dict[str, dict[str, Any]], n: int,
               exclude: str | None = None) -> tuple[list[tuple[str, str]], list[str], list[int]]:
    """The first ``n`` usable demos of a retrieval list: ((input, target) pairs, their ids, their ranks)."""
    pairs: list[tuple[str, str]] = []
    ids: list[str] = []
    ranks: list[int] = []
    for rank, did in enumerate(demo_ids):
        if len(pairs) >= n:
            break
        if did == exclude:
            continue
        rec = pool.get(did)
        if rec is None:
            raise KeyError(f"demo id {did!r} is not in the train split")
        pairs.append((rec["input"], rec["target"]))
        ids.append(did)
        ranks.append(rank)
    return pairs, ids, ranks


# ---- records -> encoded examples (shared by training and decoding) ------------------------------
def demo_count(params: dict[str, Any], what: str) -> int:
    """``params["n_demos"]``: the explicit switch between the demo layout (> 0) and the bare query (0).

    ``params["demos"]`` (the demo source, a label) must agree: ``"none"`` exactly when ``n_demos`` is 0.
    """
    if "n_demos" not in params:
        raise ValueError(f"{what}: params need n_demos (0: no demos)")
    n = int(params["n_demos"])
    if n < 0:
        raise ValueError(f"{what}: n_demos must be >= 0, got {n}")
    src = params.get("demos", "none")
    if n == 0 and src != "none":
        raise ValueError(f"{what}: n_demos 0 runs without demos; got demos {src!r}")
    if n > 0 and src == "none":
        raise ValueError(f"{what}: n_demos {n} needs demos (retrieved|random), got demos 'none'")
    return n


def build_examples(encoder: Encoder, records: Sequence[dict[str, Any]], retrieval: dict[str, dict[str, Any]] | None,
                   train_pool: dict[str, dict[str, Any]], n_demos: int, n_virtual: int, max_length: int,
                   with_target: bool = True, max_new_tokens: int = 0, exclude_self: bool = True,
                   ) -> tuple[list[Encoded], dict[str, int]]:
    """Encode records (with their first ``n_demos`` retrieved demos when ``retrieval`` is given)."""
    from iclpt.io import DataError

    out: list[Encoded] = []
    stats = {"n": 0, "demos_dropped": 0, "input_truncated": 0, "target_truncated": 0}
    for r in records:
        demos: list[tuple[str, str]] = []
        meta: dict[str, Any] = {"demo_ids": [], "demo_scores": []}
        if retrieval is not None and n_demos > 0:
            line = retrieval.get(r["id"])
            if line is None:
                raise DataError(f"no retrieval line for example {r['id']!r}")
            demos, ids, ranks = demo_pairs(line["demo_ids"], train_pool, n_demos,
                                           exclude=r["id"] if exclude_self else None)
            scores = line.get("scores") or []
            meta = {"demo_ids": ids, "demo_scores": [scores[k] if k < len(scores) else None for k in ranks]}
        try:
            e = encoder.encode(r["input"], demos, target=r["target"] if with_target else None,
                               n_virtual=n_virtual, max_length=max_length, max_new_tokens=max_new_tokens)
        except ValueError as err:
            raise DataError(f"example {r['id']!r}: {err} (max_length = {max_length} after the model's context; "
                            "raise train.max_length / predict.max_length or shorten the soft prompt)") from None
        # the demos actually used (after truncation dropped the least similar ones)
        meta = {"demo_ids": meta["demo_ids"][:e.n_demos], "demo_scores": meta["demo_scores"][:e.n_demos]}
        e.meta = meta
        out.append(e)
        stats["n"] += 1
        stats["demos_dropped"] += e.n_demos_dropped
        stats["input_truncated"] += int(e.input_truncated)
        stats["target_truncated"] += int(e.target_truncated)
    if n_demos > 0 and out and all(e.n_demos == 0 for e in out):
        raise DataError(f"max_length {max_length} leaves no room for any demo: all {len(out)} examples lost "
                        f"their {n_demos} demo(s) (soft prompt {n_virtual}); raise train.max_length / "
                        "predict.max_length")
    return out, stats


def load_retrieval(path: str, queries: Sequence[dict[str, Any]], pool: dict[str, dict[str, Any]], n_demos: int,
                   split_file: str = "the split", train_file: str = "the train split",
                   exclude_self: bool = True) -> dict[str, dict[str, Any]]:
    """The retrieval file's lines keyed by query id, checked against the split they serve (DataError naming the
    file and the first bad id): one line per query and no line for an id outside the split (a file left from
    another run or task), demo ids of the train split only, at least ``n_demos`` usable demos per line (the
    query itself excluded when ``exclude_self``), and as many scores as demo ids."""
    from iclpt.io import DataError, read_jsonl

    lines = index_by_id(read_jsonl(path, required=("id", "demo_ids")), str(path))
    ids = {r["id"] for r in queries}
    stray = next((i for i in lines if i not in ids), None)
    if stray is not None:
        raise DataError(f"{path}: id {stray!r} is not an example of {split_file} (a retrieval file from another "
                        f"run, task or data version?); delete it so that it is recomputed")
    absent = next((r["id"] for r in queries if r["id"] not in lines), None)
    if absent is not None:
        raise DataError(f"{path}: no line for example {absent!r} of {split_file}")
    for qid, line in lines.items():
        _check_retrieval_line(path, qid, line, pool, n_demos, train_file, exclude_self)
    return lines


def _check_retrieval_line(path: str, qid: str, line: dict[str, Any], pool: dict[str, dict[str, Any]],
                          n_demos: int, train_file: str, exclude_self: bool) -> None:
    from iclpt.io import DataError

    demos = line["demo_ids"]
    if not isinstance(demos, list) or not all(isinstance(d, str) for d in demos):
        raise DataError(f"{path}: line of {qid!r}: demo_ids must be a list of ids, got {demos!r:.60}")
    scores = line.get("scores")
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(demos)):
        raise DataError(f"{path}: line of {qid!r}: {len(demos)} demo ids but scores {scores!r:.60}")
    usable = [d for d in demos if not (exclude_self and d == qid)]  # the query itself is skipped, never used
    bad = next((d for d in usable if d not in pool), None)
    if bad is not None:
        raise DataError(f"{path}: line of {qid!r}: demo id {bad!r} is not in {train_file}")
    if len(usable) < n_demos:
        raise DataError(f"{path}: line of {qid!r} lists {len(usable)} usable demo(s), fewer than n_demos = "
                        f"{n_demos} (retrieved with a smaller retrieval.k than demos.n_demos?)")


def index_by_id(rows: Sequence[dict[str, Any]], what: str) -> dict[str, dict[str, Any]]:
    """Rows keyed by their ``id`` (a duplicate id is a :class:`iclpt.io.DataError`)."""
    from iclpt.io import DataError

    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["id"] in out:
            raise DataError(f"{what}: duplicate id {r['id']!r}")
        out[r["id"]] = r
    return out
