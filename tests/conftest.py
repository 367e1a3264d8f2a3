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
    """The bundled drl-wti and unify (trained: random weights fail every twin pair alike, which would let a swapped
    score pass) over 120 generated test clips, about a fifth of them in twin pairs; shared by the blind-spot and
    counterfactual tests and their browser tests, so the two encodes happen once."""
    from tvr_demo.data.synthetic import SyntheticConfig, generate
    from tvr_demo.ui.session import Session

    root = tmp_path_factory.mktemp("diagnosis")
    bench = generate(root / "bench", SyntheticConfig(n_train=0, n_val=0, n_test=120), progress=False, num_workers=0)
    return Session(["drl-wti", "unify"], bench, "test", device="cpu", cache_root=root / "cache")


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
