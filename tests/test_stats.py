"""Bootstrap intervals and paired tests over test examples (iclpt.reporting.stats), against sacrebleu's own
bootstrap."""

import json
import random

import numpy as np
import pytest
from sacrebleu.significance import PairedTest

from iclpt.evaluation.metrics import bleu, bleu_metric, bleu_stats, reference_streams, score_predictions
from iclpt.reporting.stats import (
    Bootstrap,
    bleu_statistic,
    bootstrap_interval,
    full_sample,
    mean_statistic,
    order_interval,
    p_value,
    paired,
    paired_test,
    resample_counts,
)

BOOT = Bootstrap(n_resamples=1000, alpha=0.05, seed=0)
WORDS = "the cat sat on a mat dog ran far away big small red river flows to sea".split()


def _corpus(n=60, keep=0.7, seed=0, refs=None):
    """(hypotheses, references): references of 8 random words, hypotheses keeping each word with prob. keep."""
    rng = random.Random(seed)
    if refs is None:
        refs = [[" ".join(rng.choice(WORDS) for _ in range(8))] for _ in range(n)]
    hyps = [" ".join(w if rng.random() < keep else rng.choice(WORDS) for w in r[0].split()) for r in refs]
    return hyps, refs


def _binary(n, p, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(float) * 100


# ---- resampling -------------------------------------------------------------------------------------------
def test_resamples_are_sacrebleus_draw():
    counts = resample_counts(50, 200, 7)
    idx = np.random.default_rng(7).choice(50, size=(200, 50), replace=True)  # sacrebleu's _bootstrap_resample
    assert counts.shape == (200, 50) and (counts.sum(axis=1) == 50).all()
    assert np.array_equal(counts, np.stack([np.bincount(row, minlength=50) for row in idx]))


def test_stratified_resamples_keep_strata_and_skip_unlabelled():
    strata = np.array([0] * 10 + [1] * 5 + [-1] * 3)
    counts = resample_counts(len(strata), 300, 1, strata)
    assert (counts[:, :10].sum(axis=1) == 10).all() and (counts[:, 10:15].sum(axis=1) == 5).all()
    assert (counts[:, 15:] == 0).all()
    assert not np.array_equal(counts[0], counts[1])


def test_order_interval_is_sacrebleus_convention():
    samples = np.arange(1000, dtype=float)[::-1]  # order must not matter
    assert order_interval(samples, 0.05) == (25.0, 974.0)  # 1000 // 40 and 1000 - 25 - 1
    assert order_interval(samples, 0.10) == (50.0, 949.0)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="alpha"):
        Bootstrap(1000, 1.5, 0)
    with pytest.raises(ValueError, match="n_resamples"):
        Bootstrap(0, 0.05, 0)
    with pytest.raises(ValueError, match="NaN"):
        mean_statistic(np.array([100.0, np.nan]))


# ---- intervals --------------------------------------------------------------------------------------------
def test_all_correct_gives_a_degenerate_interval():
    iv = bootstrap_interval(mean_statistic(np.full(30, 100.0)), 30, BOOT)
    assert (iv.estimate, iv.low, iv.high) == (100.0, 100.0, 100.0)


def test_interval_contains_the_estimate_and_narrows_with_more_examples():
    widths = []
    for n in (40, 400):
        v = _binary(n, 0.6, 3)
        iv = bootstrap_interval(mean_statistic(v), n, BOOT)
        assert iv.estimate == pytest.approx(v.mean())
        assert iv.low < iv.estimate < iv.high
        widths.append(iv.high - iv.low)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n)
    # the binomial standard error: the 95 % interval of 400 examples at p = 0.6 is about ± 4.8 points
    assert widths[1] == pytest.approx(2 * 1.96 * np.sqrt(0.6 * 0.4 / 400) * 100, rel=0.2)


def test_fixed_seed_is_deterministic_and_the_seed_matters():
    v = _binary(50, 0.5, 0)
    a = bootstrap_interval(mean_statistic(v), 50, BOOT)
    assert a == bootstrap_interval(mean_statistic(v), 50, BOOT)
    others = {bootstrap_interval(mean_statistic(v), 50, Bootstrap(1000, 0.05, s)) for s in range(1, 6)}
    assert any(o != a for o in others)


def test_bleu_statistics_give_the_corpus_bleu_back():
    hyps, refs = _corpus(40)
    refs = [r + (["the cat sat"] if i % 3 == 0 else []) for i, r in enumerate(refs)]  # uneven multi-reference
    res = bleu(hyps, refs)
    stats = np.array(res.per_example_stats)
    assert stats.shape == (40, 10) and res.per_example_stats == bleu_stats(hyps, refs)
    assert bleu_statistic(stats)(full_sample(40))[0] == pytest.approx(res.value, abs=1e-9)


def test_bleu_interval_matches_sacrebleus_own_bootstrap(monkeypatch):
    hyps, refs = _corpus(80)
    monkeypatch.setenv("SACREBLEU_SEED", "11")
    metric = bleu_metric()
    score = metric.corpus_score(hyps, reference_streams(refs), n_bootstrap=1000)
    theirs = json.loads(score.format(width=6, signature=str(metric.get_signature()), is_json=True))
    stat = bleu_statistic(np.array(bleu_stats(hyps, refs)))
    samples = stat(resample_counts(80, 1000, 11))
    low, high = order_interval(samples, 0.05)
    assert samples.mean() == pytest.approx(theirs["confidence_mean"], abs=1e-5)
    assert (high - low) / 2 == pytest.approx(theirs["confidence_var"], abs=1e-5)  # sacrebleu prints the half width
    iv = bootstrap_interval(stat, 80, Bootstrap(1000, 0.05, 11))
    assert (iv.low, iv.high) == (low, high) and iv.estimate == pytest.approx(score.score)
    assert iv.low < iv.estimate < iv.high


# ---- paired tests -----------------------------------------------------------------------------------------
def test_identical_systems_are_within_noise():
    v = _binary(60, 0.5, 1)
    c = paired_test(mean_statistic(v), mean_statistic(v.copy()), 60, BOOT)
    assert (c.diff, c.low, c.high, c.p_value, c.within_noise) == (0.0, 0.0, 0.0, 1.0, True)
    hyps, refs = _corpus(30)
    s = bleu_statistic(np.array(bleu_stats(hyps, refs)))
    assert paired_test(s, s, 30, BOOT).p_value == 1.0


def test_a_clearly_better_system_is_significant():
    good, bad = _binary(60, 0.9, 2), _binary(60, 0.2, 3)
    c = paired_test(mean_statistic(good), mean_statistic(bad), 60, BOOT)
    assert c.diff == pytest.approx(good.mean() - bad.mean()) and c.diff > 40
    assert c.p_value == pytest.approx(1 / 1001) and not c.within_noise
    assert c.low < c.diff < c.high and c.low > 0
    assert paired_test(mean_statistic(bad), mean_statistic(good), 60, BOOT).p_value == pytest.approx(1 / 1001)


def test_one_differing_example_is_within_noise():
    a = _binary(100, 0.5, 4)
    b = a.copy()
    b[np.flatnonzero(a == 100)[0]] = 0.0  # b misses one example a gets right
    c = paired_test(mean_statistic(a), mean_statistic(b), 100, BOOT)
    assert c.diff == pytest.approx(1.0) and c.within_noise and c.p_value > 0.05


def test_within_noise_needs_p_below_alpha_and_an_interval_clear_of_zero():
    from iclpt.reporting.stats import within_noise

    assert not within_noise(0.01, 1.0, 5.0, 0.05) and not within_noise(0.01, -5.0, -1.0, 0.05)
    assert within_noise(0.05, 1.0, 5.0, 0.05)  # p = alpha is within noise
    assert within_noise(0.04, -0.5, 5.0, 0.05)  # sacrebleu's p below alpha, but the interval reaches 0


def test_paired_p_value_is_sacrebleus_formula_on_shared_resamples():
    a, b = _binary(70, 0.6, 5), _binary(70, 0.5, 6)
    idx = np.random.default_rng(BOOT.seed).choice(70, size=(1000, 70), replace=True)
    d = np.abs(a[idx].mean(axis=1) - b[idx].mean(axis=1))
    expect = (np.sum(d - d.mean() > abs(a.mean() - b.mean())) + 1) / 1001
    assert paired_test(mean_statistic(a), mean_statistic(b), 70, BOOT).p_value == pytest.approx(expect)
    assert p_value(np.zeros(10), 0.0) == 1.0


def test_bleu_paired_test_matches_sacrebleus_paired_bootstrap(monkeypatch):
    hyps_a, refs = _corpus(60, keep=0.7, seed=0)
    hyps_b, _ = _corpus(60, keep=0.6, seed=1, refs=refs)
    monkeypatch.setenv("SACREBLEU_SEED", "5")
    _, res = PairedTest([("b", hyps_b), ("a", hyps_a)], {"BLEU": bleu_metric()}, reference_streams(refs),
                        test_type="bs", n_samples=1000)()
    theirs = res["BLEU"][1].p_value
    ours = paired_test(bleu_statistic(np.array(bleu_stats(hyps_a, refs))),
                       bleu_statistic(np.array(bleu_stats(hyps_b, refs))), 60, Bootstrap(1000, 0.05, 5))
    assert ours.p_value == pytest.approx(theirs, abs=1.5 / 1001)
    assert theirs == pytest.approx(16 / 1001)  # seeded (SACREBLEU_SEED=5): significant, above the 1/1001 floor
    assert ours.diff == pytest.approx(bleu(hyps_a, refs).value - bleu(hyps_b, refs).value)


# ---- seed means -------------------------------------------------------------------------------------------
def test_seed_mean_applies_one_resample_to_every_seed():
    seeds = np.stack([_binary(50, 0.5, s) for s in range(3)])
    counts = resample_counts(50, 500, 9)
    joint = mean_statistic(seeds)(counts)
    assert np.allclose(joint, np.mean([mean_statistic(v)(counts) for v in seeds], axis=0))
    assert mean_statistic(seeds)(full_sample(50))[0] == pytest.approx(seeds.mean())
    corpora = [_corpus(30, keep=k, seed=s) for s, k in enumerate((0.5, 0.7))]
    stats = np.stack([np.array(bleu_stats(h, r)) for h, r in corpora])
    assert bleu_statistic(stats)(full_sample(30))[0] == pytest.approx(np.mean([bleu(h, r).value for h, r in corpora]))
    sub = counts[:20, :30]
    assert np.allclose(bleu_statistic(stats)(sub), np.mean([bleu_statistic(s)(sub) for s in stats], axis=0))
    assert paired(mean_statistic(seeds), mean_statistic(seeds), counts, 0.05).within_noise


def test_scores_lines_carry_bleu_statistics():
    hyps, refs = _corpus(5)
    rows = [{"id": f"e{i}", "prediction": h, "references": r, "meta": {}} for i, (h, r) in enumerate(zip(hyps, refs))]
    body, lines = score_predictions(rows, ["bleu"], task="dart")
    assert [ln["stats"]["bleu"] for ln in lines] == bleu_stats(hyps, refs)
    assert bleu_statistic(np.array([ln["stats"]["bleu"] for ln in lines]))(full_sample(5))[0] == pytest.approx(
        body["metrics"]["bleu"])
    _, em = score_predictions(rows, ["exact_match"], task="mtop")
    assert all("stats" not in ln for ln in em)
