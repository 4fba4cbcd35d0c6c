"""README blocks generated from a run's files (iclpt.reporting.readme): stamps, splicing, errors."""

from __future__ import annotations

import json

import pytest

from iclpt.reporting.readme import ReadmeError, block_body, read_info, splice, stamp_end, stamp_start

README = "intro\n<!-- BEGIN GENERATED mini -->\nold table\n<!-- END GENERATED mini -->\ntail\n"


def _run(tmp_path, finished=True):
    run = tmp_path / "results" / "mini"
    stamp_start(run, now=1_000_000.0)
    if finished:
        stamp_end(run, now=1_000_000.0 + 5 * 60 + 7.4)
    (run / "tables").mkdir(parents=True, exist_ok=True)
    (run / "tables" / "main.md").write_text("| model | method | dart (BLEU) |\n|---|---|---|\n| m | PT | 11.5 |\n")
    (run / "findings.md").write_text("# Findings\n\n1. inconclusive\n")
    (run / "tables" / "training.csv").write_text("task,steps\ndart,100\n")
    return run


def test_stamp_records_commit_machine_and_wall(tmp_path):
    run = _run(tmp_path)
    info = json.loads((run / "run_info.json").read_text())
    assert info["wall_s"] == 307.4 and info["ended"] - info["started"] == pytest.approx(307.4)
    assert info["cpus"] >= 1 and info["cpu"] and isinstance(info["native_bf16"], bool)
    assert info["commit"] and "dirty" in info


def test_splice_replaces_only_the_block_and_is_idempotent(tmp_path):
    run = _run(tmp_path)
    body = block_body(run, ["tables/main.md", "findings.md", "tables/training.csv"])
    out = splice(README, "mini", body)
    assert out.startswith("intro\n<!-- BEGIN GENERATED mini -->\n")
    assert out.endswith("<!-- END GENERATED mini -->\ntail\n")
    assert "old table" not in out and "| m | PT | 11.5 |" in out and "1. inconclusive" in out
    assert "5 min 07 s wall" in out and "make readme-tables" in out
    assert "```\ntask,steps\ndart,100\n```" in out  # a non-Markdown file is fenced, verbatim
    assert splice(out, "mini", body) == out


@pytest.mark.parametrize("readme", ["no markers\n", "<!-- END GENERATED mini -->\n<!-- BEGIN GENERATED mini -->\n",
                                    "<!-- BEGIN GENERATED demo -->\n<!-- END GENERATED demo -->\n"])
def test_splice_without_the_blocks_markers_is_an_error(readme):
    with pytest.raises(ReadmeError, match="BEGIN GENERATED mini"):
        splice(readme, "mini", "x")


def test_missing_file_or_unfinished_run_is_an_error_naming_it(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(ReadmeError, match="tables/comparisons.csv: not found"):
        block_body(run, ["tables/comparisons.csv"])
    unfinished = _run(tmp_path / "other", finished=False)
    with pytest.raises(ReadmeError, match="never finished"):
        block_body(unfinished, ["findings.md"])
    with pytest.raises(ReadmeError, match="no run stamp"):
        read_info(tmp_path / "nowhere")


def test_the_readme_has_the_blocks_the_makefile_fills(repo_root):
    text = (repo_root / "README.md").read_text()
    for block in ("demo", "mini"):
        assert splice(text, block, "x").count("<!-- BEGIN GENERATED") == text.count("<!-- BEGIN GENERATED")
