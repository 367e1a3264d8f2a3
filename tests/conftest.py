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


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for every browser test module: one Playwright per process (a second sync_playwright
    beside a running one fails)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium not found: run `bash scripts/install_browser.sh`")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
