"""Shared fixtures: small synthetic datasets and a tiny trained bundle, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_MVTEC = REPO.parent / "shared" / "datasets" / "mvtec_ad_256"


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A small MVTec-layout set of synthetic nuts (40 train, 6 test good, 3 of each defect)."""
    from capture.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("data") / "nut", seed=3, n_train=40, n_test_good=6,
                         n_test_defect=3, size=96)


@pytest.fixture(scope="session")
def tiny_bundle(small_dataset, tmp_path_factory) -> Path:
    """A bundle trained for two epochs at 32x32: fast, enough to exercise every code path."""
    from model_builder.build import BuildOptions, build

    out = tmp_path_factory.mktemp("models") / "tiny"
    build(small_dataset, out, BuildOptions(size=32, epochs=2, patience=2, architecture="prototype"), show_progress=False, log=lambda s: None)
    return out
