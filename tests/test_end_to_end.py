"""A demo-sized run of the whole chain must separate the synthetic defects."""

from __future__ import annotations

import pytest

from app.demo import run_demo


@pytest.mark.slow
def test_demo_chain_separates_synthetic_defects(tmp_path):
    lines: list[str] = []
    bundle, summary = run_demo(tmp_path / "datasets", tmp_path / "models", n_parts=40, log=lines.append)
    evaluation = bundle.info.evaluation
    assert evaluation["images"]["good"] == 20
    # The dataset's own test split and the conveyor stream both separate good from defective.
    assert evaluation["auroc_combined"] >= 0.9, evaluation
    assert len(summary.verdicts) == 40
    assert summary.auroc(bundle) >= 0.9
    op = summary.operating_point()
    assert op.accuracy >= 0.8
    assert any(line.startswith("confusion:") for line in lines)
    # A second run reuses the model instead of rebuilding it.
    again: list[str] = []
    run_demo(tmp_path / "datasets", tmp_path / "models", n_parts=30, log=again.append)
    assert any("using model" in line for line in again)
