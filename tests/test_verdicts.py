"""Three-valued verdicts (iclpt.reporting.verdicts, findings, comparisons, training): the pooled tests are proved by
simulation (coverage of the interval, type-I rate of the test) and each finding's logic is checked both ways."""

import math

import numpy as np
import pandas as pd
import pytest

from iclpt.reporting.comparisons import (
    ALL,
    GATE,
    INTERACTION,
    NO_DUPLICATES,
    RANDOM_VS_PT,
    SLOPE,
    _parts_row,
    slope_values,
)
from iclpt.reporting.findings import Settings, finding1, finding2, finding3, render_findings
from iclpt.reporting.inference import contrast_from, mean_statistics, two_level_draws
from iclpt.reporting.stats import Bootstrap, resample_counts
from iclpt.reporting.training import dev_curve, late_share, training_rows
from iclpt.reporting.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_RUN,
    SUPPORTED,
    combine,
    directional,
    not_above,
    pool,
    resolution,
)
from iclpt.retrieval.summary import summarize_split

ALPHA = 0.05
BOOT = Bootstrap(n_resamples=300, alpha=ALPHA, seed=0)


# ---- simulation: each finding's pooled test -------------------------------------------------------------------
def _method(rng, mu, seeds, ex, seed_sd, int_sd):
    """(S, n) scores: mean mu + a seed effect + the examples' effects + seed × example noise."""
    return mu + seed_sd * rng.standard_normal((seeds, 1)) + ex + int_sd * rng.standard_normal((seeds, len(ex)))


def _row(groups, signs, n, r, extra=None):
    counts = resample_counts(n, BOOT.n_resamples, r)
    parts = [two_level_draws(mean_statistics(g), counts, r, i) for i, g in enumerate(groups)]
    c = contrast_from(parts, signs, ALPHA)
    return {**_parts_row(c, n, ALPHA), "n_seeds_a": len(groups[0]), "n_seeds_b": len(groups[1]), **(extra or {})}


def _interaction_cell(rng, r, effect, n=60, seeds=5):
    """(IPT ret − IPT rand) − (ICL ret − ICL rand) with the given true interaction; ICL retrieved has one seed."""
    ex = rng.standard_normal(n) * 8
    groups = [_method(rng, 30 + effect, seeds, ex, 3, 6), _method(rng, 22, seeds, ex * 0.7, 3, 6),
              _method(rng, 25, 1, ex, 0, 6), _method(rng, 17, seeds, ex * 0.7, 2, 6)]
    return _row(groups, (1.0, -1.0, -1.0, 1.0), n, r)


def _transfer_cell(rng, r, effect, n=60, seeds=5):
    """Transfer (5 seeds) − ICL (one deterministic run) with the given true difference."""
    ex = rng.standard_normal(n) * 8
    return _row([_method(rng, 20 + effect, seeds, ex, 4, 6), _method(rng, 20, 1, ex, 0, 6)], (1.0, -1.0), n, r)


def _slope_cell(rng, r, slope, n=60, seeds=5):
    """Slope of the IPT − PT gain on a similarity in [0, 1]: IPT's example effects carry slope · similarity plus
    their own heterogeneity, and each IPT seed's prompt its own slope (sd 3). (Without those two the gain has no
    seed and no example variance, all is seed × example noise; there the clipped components make the interval
    conservative: 0.97 to 0.99 coverage.)"""
    sim = rng.uniform(0.2, 1.0, n)
    ex = rng.standard_normal(n) * 8
    own = ex + slope * sim + 4 * rng.standard_normal(n)
    ipt = _method(rng, 25, seeds, own, 3, 6) + 3 * rng.standard_normal((seeds, 1)) * sim
    pt = _method(rng, 20, seeds, ex, 3, 6)
    return _row([slope_values(ipt, sim), slope_values(pt, sim)], (1.0, -1.0), n, r)


@pytest.mark.parametrize("cell,truth", [(_interaction_cell, 0.0), (_interaction_cell, 4.0), (_transfer_cell, 0.0),
                                        (_slope_cell, 0.0), (_slope_cell, 10.0)])
def test_pooled_tests_cover_the_truth_and_keep_their_level(cell, truth):
    """500 replications of a finding's pooled test over 2 cells: the 95 % interval covers the true effect in 93-97 %
    of them, and under a true null the two-sided test rejects at most alpha (plus Monte-Carlo slack)."""
    rng = np.random.default_rng(11)
    cover, reject = [], []
    for r in range(500):
        p = pool(pd.DataFrame([cell(rng, 2 * r, truth), cell(rng, 2 * r + 1, truth)]).assign(n_examples=60), ALPHA)
        cover.append(p.low <= truth <= p.high)
        reject.append(p.p_value < ALPHA)
    assert 0.93 <= np.mean(cover) <= 0.97, np.mean(cover)
    if truth == 0:
        assert np.mean(reject) <= ALPHA + 0.02, np.mean(reject)


def test_slope_values_average_to_the_ols_slope_of_each_seed():
    x = np.array([0.1, 0.4, 0.5, 0.9])
    y = np.stack([3.0 + 2.5 * x + np.array([0.1, -0.2, 0.05, 0.0]), 7.0 - x + np.array([0.0, 0.3, -0.1, 0.2])])
    v = slope_values(y, x)
    assert v.mean(axis=1) == pytest.approx([np.polyfit(x, row, 1)[0] for row in y])
    assert slope_values(y + 50.0, x) == pytest.approx(v)  # a shift (intercept, seed effect) does not enter
    with pytest.raises(ValueError, match="all equal"):
        slope_values(y, np.ones(4))


# ---- verdict rules --------------------------------------------------------------------------------------------
def _pooled(diff, se, n=100, seeds=5, cells=1, df=50.0, v=(1.0, 1.0, 1.0)):
    rows = pd.DataFrame([{"diff": diff, "se": se, "df": df, "n_examples": n, "n_seeds_a": seeds, "n_seeds_b": seeds,
                          "v_seed": v[0], "v_interaction": v[1], "v_example": v[2]}] * cells)
    return pool(rows, ALPHA)


def test_pool_of_one_cell_is_that_cell_and_more_cells_shrink_the_se():
    one, four = _pooled(2.0, 1.0), _pooled(2.0, 1.0, cells=4)
    assert one.estimate == 2.0 and one.se == pytest.approx(1.0) and one.df == pytest.approx(50.0)
    assert four.se == pytest.approx(0.5) and four.df == pytest.approx(200.0) and four.p_value < one.p_value
    assert one.low < 2.0 < one.high and one.mde == pytest.approx(2.8016, abs=1e-3)


def test_verdict_rules_are_three_valued():
    assert directional(0.01, 3.0, ALPHA) == SUPPORTED
    assert directional(0.01, -3.0, ALPHA) == CONTRADICTED
    assert directional(0.2, 3.0, ALPHA) == INCONCLUSIVE
    tight_low = _pooled(-2.0, 0.5)  # IPT random clearly below PT: 'not above' supported
    assert not_above(tight_low, tight_low.p_value, ALPHA, margin=1.0) == SUPPORTED
    above = _pooled(3.0, 0.5)
    assert not_above(above, above.p_value, ALPHA, margin=1.0) == CONTRADICTED
    vague = _pooled(0.0, 3.0)
    assert not_above(vague, vague.p_value, ALPHA, margin=1.0) == INCONCLUSIVE
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED
    assert combine([NOT_RUN]) == NOT_RUN


def test_resolution_says_what_would_detect_the_observed_effect():
    p = _pooled(1.0, 2.0, n=100, seeds=5, v=(0.0, 0.0, 4.0))  # example variance only: rows resolve it
    text = resolution(p, ALPHA)
    # Var = 4 / f ≤ (1 / 2.8016)² → f = 4 · 2.8016² ≈ 31.4 → 3,140 rows
    assert "about 3,140 test rows per cell at 5 seeds" in text
    assert "no number of seeds at 100 rows" in text
    q = _pooled(1.0, 2.0, n=100, seeds=5, v=(4.0, 0.0, 0.0))  # seed variance only: seeds resolve it
    assert "no number of test rows" in resolution(q, ALPHA) and "about 157 seeds" in resolution(q, ALPHA)
    assert "no size of run" in resolution(_pooled(0.0, 1.0), ALPHA)


# ---- findings from comparison rows -------------------------------------------------------------------------------
PRIMARY = {"dart": "bleu", "mtop": "exact_match"}
CELLS = (("dart", "m"), ("mtop", "m"))


def _cmp(kind, task, diff, se, subset=ALL, source="", n=120, seeds=(5, 5)):
    half = 2.0 * se
    from iclpt.reporting.inference import two_sided_p

    return {"comparison": kind, "task": task, "model": "m", "metric": PRIMARY[task], "method": "", "source": source,
            "subset": subset, "a": "a", "b": "b", "n_examples": n, "n_seeds_a": seeds[0], "n_seeds_b": seeds[1],
            "mean_a": 10.0 + diff, "mean_b": 10.0, "diff": diff, "diff_ci_low": diff - half,
            "diff_ci_high": diff + half, "se": se, "df": 60.0, "p_value": two_sided_p(diff, se, 60.0),
            "within_noise": False, "mde": 2.8 * se, "v_seed": se**2 / 2, "v_interaction": 0.0,
            "v_example": se**2 / 2, "test": "t"}


def _training(levelled=True, tasks=("dart", "mtop")):
    return pd.DataFrame([{"task": t, "model": "m", "method": "pt", "length": 16, "demos": "none", "seed": s,
                          "late_share": 0.02 if levelled else 0.4, "levelled": levelled}
                         for t in tasks for s in range(5)])


def _f1_rows(gate=8.0, inter=6.0, rand=-3.0, slope=12.0, se=1.0):
    rows = []
    for task, _ in CELLS:
        rows += [_cmp(GATE, task, gate, 1.0, seeds=(5, 1)),
                 {**_cmp("ipt_vs_pt", task, 2.0, se), "n_dup_input": 30, "n_dup_pair": 12},
                 _cmp(INTERACTION, task, inter, se), _cmp(RANDOM_VS_PT, task, rand, se),
                 _cmp(SLOPE, task, slope, se * 3), _cmp(INTERACTION, task, inter / 2, se, subset=NO_DUPLICATES),
                 _cmp(SLOPE, task, slope / 2, se * 3, subset=NO_DUPLICATES)]
    return pd.DataFrame(rows)


def test_finding1_supported_contradicted_inconclusive_and_gated():
    s = Settings()
    yes = finding1(_f1_rows(), PRIMARY, _training(), 16, s)
    assert yes.status == SUPPORTED and yes.criteria == {INTERACTION: SUPPORTED, RANDOM_VS_PT: SUPPORTED,
                                                        SLOPE: SUPPORTED}
    assert sorted(yes.gated) == sorted(CELLS)
    text = "\n".join(yes.lines)
    assert "Without those rows" in text
    assert "identical input: dart / m 25.0 % (30 of 120; identical target too: 10.0 %)" in text
    no = finding1(_f1_rows(inter=-6.0), PRIMARY, _training(), 16, s)
    assert no.status == CONTRADICTED and no.criteria[INTERACTION] == CONTRADICTED
    vague = finding1(_f1_rows(inter=0.5, se=3.0), PRIMARY, _training(), 16, s)
    assert vague.status == INCONCLUSIVE and vague.criteria[INTERACTION] == INCONCLUSIVE
    assert "MDE" in "\n".join(vague.lines) and "would take" in "\n".join(vague.lines)
    # the gate: PT not above zero-shot, or its dev loss still falling → nothing is interpreted
    floor = finding1(_f1_rows(gate=0.5), PRIMARY, _training(), 16, s)
    assert floor.status == INCONCLUSIVE and floor.gated == [] and "PT not trained" in floor.lines[0]
    falling = finding1(_f1_rows(), PRIMARY, _training(levelled=False), 16, s)
    assert falling.status == INCONCLUSIVE and "had not levelled off" in "\n".join(falling.lines)
    unknown = finding1(_f1_rows(), PRIMARY, None, 16, s)
    assert unknown.status == INCONCLUSIVE and "cannot tell" in "\n".join(unknown.lines)
    assert finding1(_f1_rows(), PRIMARY, _training(), 16, s, similarity_run=False).status == NOT_RUN


def test_finding1_holm_adjusts_over_its_criteria():
    """A criterion at p ≈ 0.03 alone is significant, but not after Holm over three criteria whose others are null."""
    rows = _f1_rows(inter=0.0, rand=0.0, slope=0.0)
    rows.loc[rows["comparison"] == INTERACTION, "diff"] = 3.1  # pooled over 2 cells: se 1/√2, t ≈ 4.4 → still sig
    weak = _f1_rows(inter=1.55, rand=0.0, slope=0.0)  # pooled t ≈ 2.19, p ≈ 0.03 > 0.05/3
    f = finding1(weak, PRIMARY, _training(), 16, Settings())
    assert f.criteria[INTERACTION] == INCONCLUSIVE
    assert finding1(rows, PRIMARY, _training(), 16, Settings()).criteria[INTERACTION] == SUPPORTED


def _runs(ipt_sd, pt_sd, lengths=(16,), seeds=5, pt_trend=0.0, ipt_trend=0.0):
    rng = np.random.default_rng(3)
    rows = []
    for task, _ in CELLS:
        for L in lengths:
            for s in range(seeds):
                for method, demos, sd, mu, tr in (("ipt", "retrieved", ipt_sd, 40, ipt_trend),
                                                  ("pt", "none", pt_sd, 30, pt_trend)):
                    rows.append({"task": task, "model": "m", "method": method, "length": L, "demos": demos,
                                 "seed": s, "metric": PRIMARY[task], "primary": True,
                                 "value": mu + tr * math.log(L) + sd * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_finding2_tests_the_pooled_spread_ratio_and_leaves_floor_cells_out():
    gate = pd.DataFrame([_cmp(GATE, t, 8.0, 1.0) for t, _ in CELLS])
    yes = finding2(_runs(0.3, 6.0), gate, PRIMARY, 16, Settings(), stability_run=False)
    assert yes.status == SUPPORTED, yes.lines
    no = finding2(_runs(6.0, 0.3), gate, PRIMARY, 16, Settings(), stability_run=False)
    assert no.status == CONTRADICTED
    same = finding2(_runs(2.0, 2.0), gate, PRIMARY, 16, Settings(), stability_run=False)
    assert same.status == INCONCLUSIVE and "80 % power" in "\n".join(same.lines)
    floor_gate = pd.DataFrame([_cmp(GATE, "dart", 0.2, 1.0), _cmp(GATE, "mtop", 8.0, 1.0)])
    f = finding2(_runs(0.3, 6.0), floor_gate, PRIMARY, 16, Settings(), stability_run=False)
    assert "dart / m (PT not above zero-shot" in "\n".join(f.lines) and "(1 cells: mtop" in "\n".join(f.lines)


def test_finding2_length_criterion_needs_three_lengths_and_separates_the_trend():
    gate = pd.DataFrame([_cmp(GATE, t, 8.0, 1.0) for t, _ in CELLS])
    two = finding2(_runs(1.0, 1.0, lengths=(4, 16)), gate, PRIMARY, 16, Settings())
    assert "2 prompt lengths; the test needs at least 3" in "\n".join(two.lines)
    trend = finding2(_runs(0.5, 0.5, lengths=(2, 4, 8, 16, 32), pt_trend=20.0), gate, PRIMARY, 16, Settings())
    assert "Length trends" in "\n".join(trend.lines)
    assert trend.criteria["lengths"] != SUPPORTED  # a steep PT trend is not PT dispersion


def _f3_rows(vs_icl=5.0, vs_control=4.0, gate=8.0, control=True):
    rows = [_cmp(GATE, t, gate, 1.0) for t, _ in CELLS]
    for task, src in (("dart", "mtop"), ("mtop", "dart")):
        rows.append(_cmp("transfer_vs_icl", task, vs_icl, 1.0, source=src))
        rows.append(_cmp("transfer_vs_pt", task, -1.0, 1.0, source=src))
        if control:
            rows.append(_cmp("transfer_vs_untrained", task, vs_control, 1.0, source=src))
    return pd.DataFrame(rows)


def test_finding3_needs_to_beat_icl_and_the_untrained_control():
    s = Settings()
    assert finding3(_f3_rows(), PRIMARY, _training(), 16, s).status == SUPPORTED
    only_icl = finding3(_f3_rows(vs_control=0.2), PRIMARY, _training(), 16, s)
    assert only_icl.status == INCONCLUSIVE and only_icl.criteria["transfer_vs_icl"] == SUPPORTED
    assert finding3(_f3_rows(vs_icl=-5.0), PRIMARY, _training(), 16, s).status == CONTRADICTED
    no_control = finding3(_f3_rows(control=False), PRIMARY, _training(), 16, s)
    assert no_control.status == INCONCLUSIVE and "has no runs" in "\n".join(no_control.lines)
    assert finding3(_f3_rows(gate=0.1), PRIMARY, _training(), 16, s).status == INCONCLUSIVE
    assert finding3(None, PRIMARY, None, 16, s, transfer_run=False).status == NOT_RUN


def test_render_findings_prints_three_valued_verdicts():
    s = Settings()
    text = render_findings("x", {1: finding1(_f1_rows(), PRIMARY, _training(), 16, s),
                                 2: finding2(_runs(0.3, 6.0), _f1_rows(), PRIMARY, 16, s, stability_run=False),
                                 3: finding3(_f3_rows(vs_control=0.2), PRIMARY, _training(), 16, s)}, s, 1000)
    assert "## Finding 1: **supported**" in text and "## Finding 3: **inconclusive**" in text
    assert "not supported" not in text and "Holm" in text


# ---- training curves and duplicates -----------------------------------------------------------------------------
def test_late_share_and_levelled(tmp_path):
    flat_end = dev_curve([{"step": 25, "dev_loss": 2.0}, {"step": 50, "dev_loss": 1.5}, {"step": 75, "dev_loss": 1.49},
                          {"step": 100, "dev_loss": 1.49}], 3.0)
    assert flat_end[0] == (0, 3.0)
    assert late_share(flat_end, 100) == pytest.approx(0.01 / 1.51)
    falling = dev_curve([{"step": 50, "dev_loss": 2.5}, {"step": 100, "dev_loss": 1.0}], 3.0)
    assert late_share(falling, 100) == pytest.approx(0.75)
    assert late_share(dev_curve([{"step": 12, "dev_loss": 2.0}], 3.0), 12) is None  # one evaluation: cannot tell
    d = tmp_path / "p"
    d.mkdir()
    (d / "meta.json").write_text('{"task": "dart", "model": "m", "method": "pt", "prompt_length": 16, '
                                 '"demo_source": "none", "seed": 0, "steps": 100, "initial_dev_loss": 3.0, '
                                 '"best_dev_loss": 1.49, "best_step": 75, "final_dev_loss": 1.49}')
    (d / "train_log.jsonl").write_text("".join(f'{{"step": {s}, "loss": 1.0, "dev_loss": {v}}}\n' for s, v in
                                               ((25, 2.0), (50, 1.5), (75, 1.49), (100, 1.49))) + '{"step": 99}\n')
    t = training_rows([d])
    assert t.loc[0, "n_evals"] == 4 and bool(t.loc[0, "levelled"]) is True


def test_retrieval_summary_lists_duplicate_inputs_and_pairs():
    train = [{"id": "t1", "input": "a", "target": "x", "references": ["x"]},
             {"id": "t2", "input": "b", "target": "y", "references": ["y"]}]
    queries = [{"id": "q1", "input": "a", "target": "x", "references": ["x"]},
               {"id": "q2", "input": "b", "target": "z", "references": ["z"]},
               {"id": "q3", "input": "c", "target": "x", "references": ["x"]}]
    lines = [{"id": q, "demo_ids": [d], "scores": [0.9]} for q, d in (("q1", "t1"), ("q2", "t2"), ("q3", "t1"))]
    s = summarize_split(lines, queries, train)
    assert s["first_demo_identical_input_ids"] == ["q1", "q2"] and s["first_demo_identical_input"] == 2
    assert s["first_demo_identical_pair_ids"] == ["q1"] and s["first_demo_identical_pair_fraction"] == pytest.approx(
        1 / 3, abs=1e-6)


def test_power_table_scales_the_measured_variance_parts(tmp_path):
    from iclpt.reporting.power import main, power_table

    row = {**_cmp("ipt_vs_pt", "dart", 2.0, 1.0, n=100, seeds=(5, 5)), "v_seed": 0.5, "v_interaction": 0.1,
           "v_example": 0.4}
    t = power_table(pd.DataFrame([row]), "ipt_vs_pt", rows=[100, 400], seeds=[5, 20])
    at = t.set_index(["rows", "seeds"])["mde"]
    z = 2.8016  # z_0.975 + z_0.8
    assert at[(100, 5)] == pytest.approx(z * 1.0, abs=1e-3)  # the measured size gives the measured SE back
    assert at[(400, 5)] == pytest.approx(z * math.sqrt(0.5 + 0.1 / 4 + 0.4 / 4), abs=1e-3)
    assert at[(100, 20)] == pytest.approx(z * math.sqrt(0.5 / 4 + 0.1 / 4 + 0.4), abs=1e-3)
    with pytest.raises(ValueError, match="no 'slope' rows"):
        power_table(pd.DataFrame([row]), "slope", [1], [1])
    pd.DataFrame([row]).to_csv(tmp_path / "c.csv", index=False)
    main([str(tmp_path / "c.csv"), "--rows", "100", "400", "--seeds", "5"])


def test_a_proportion_contrast_where_every_row_agrees_still_has_a_width():
    """0 of 12 for both methods: the SE is floored (half a discordant example each side), not 0."""
    from iclpt.reporting.inference import comparison_from, proportion_floor

    zeros = np.zeros((2, 12))
    counts = resample_counts(12, BOOT.n_resamples, 0)
    a, b = (two_level_draws(mean_statistics(zeros), counts, 0, i) for i in (0, 1))
    raw = comparison_from(a, b, ALPHA)
    assert raw.se == 0 and raw.low == raw.high == 0
    c = proportion_floor(raw, 12, 2, ALPHA)
    assert c.se == pytest.approx(100 / math.sqrt(12 * 14)) and c.low < 0 < c.high and c.p_value == 1
    assert _parts_row(c, 12, ALPHA)["mde"] == pytest.approx(2.8016 * c.se, rel=0.01)
    wide = _method(np.random.default_rng(0), 50, 3, np.zeros(40), 10, 30)
    big = comparison_from(*(two_level_draws(mean_statistics(x), resample_counts(40, 300, 0), 0, i)
                            for i, x in enumerate((wide, wide[::-1] + 5))), ALPHA)
    assert proportion_floor(big, 40, 2, ALPHA) is big  # the floor only acts at the boundary
