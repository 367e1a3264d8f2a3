"""Shared fixtures: the real MSR-VTT reference files (skipped with a reason when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = PROJECT_ROOT.parent / "shared" / "reference" / "msrvtt"


@pytest.fixture(scope="session")
def msrvtt_reference() -> Path:
    """The real MSR-VTT 1k-A annotations and clip video7500.mp4."""
    if not (REFERENCE_DIR / "MSRVTT_JSFUSION_test.csv").exists():
        pytest.skip(f"real MSR-VTT reference files not found at {REFERENCE_DIR} (../shared is absent)")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def diagnosis_session(tmp_path_factory):
    """A tiny app session over 40 generated clips (enough for several twin pairs), shared by the blind-spot and
    counterfactual tests and their browser tests, so the two encodes happen once."""
    from app_support import tiny_session

    return tiny_session(tmp_path_factory.mktemp("diagnosis"), n_test=40)
