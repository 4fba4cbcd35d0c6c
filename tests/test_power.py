"""The power calculation behind the mini's size (iclpt.reporting.power): variance scaling, MDE, the CLI's file."""

import math

import pandas as pd
import pytest

from iclpt.reporting.inference import mde
from iclpt.reporting.power import main, power_table, scaled_variance

ROW = {"comparison": "ipt_vs_pt", "subset": "all", "task": "dart", "model": "m", "metric": "bleu",
       "n_examples": 100, "n_seeds_a": 5, "n_seeds_b": 5, "v_seed": 0.4, "v_interaction": 0.2, "v_example": 1.0}


def test_variance_at_the_measured_size_is_the_sum_of_its_parts():
    assert scaled_variance(pd.Series(ROW), 100, 5) == pytest.approx(1.6)


def test_rows_scale_the_example_parts_and_seeds_scale_the_seed_parts():
    r = pd.Series(ROW)
    assert scaled_variance(r, 400, 5) == pytest.approx(0.4 + 0.2 / 4 + 1.0 / 4)
    assert scaled_variance(r, 100, 10) == pytest.approx(0.4 / 2 + 0.2 / 2 + 1.0)


def test_power_table_gives_the_mde_of_each_size_and_names_missing_kinds():
    cmp_ = pd.DataFrame([ROW, {**ROW, "comparison": "icl_vs_pt"}])
    t = power_table(cmp_, "ipt_vs_pt", [100, 400], [5])
    assert list(t["rows"]) == [100, 400]
    assert t["mde"].iloc[0] == pytest.approx(mde(math.sqrt(1.6)))
    assert t["mde"].iloc[1] < t["mde"].iloc[0]
    with pytest.raises(ValueError, match="no 'nope' rows.*icl_vs_pt, ipt_vs_pt"):
        power_table(cmp_, "nope", [100], [5])


def test_cli_writes_the_printed_table_to_out(tmp_path, capsys):
    src, out = tmp_path / "comparisons.csv", tmp_path / "tables" / "power.md"
    out.parent.mkdir()
    pd.DataFrame([ROW]).to_csv(src, index=False)
    main([str(src), "--rows", "100", "200", "--seeds", "5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert f"| dart | m | bleu | 100 | {mde(math.sqrt(1.6)):.1f} |" in printed
