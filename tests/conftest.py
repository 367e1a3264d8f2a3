"""Shared fixtures: the real MSR-VTT reference files (skipped with a reason when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = PROJECT_ROOT.parent / "shared" / "reference" / "msrvtt"


@pytest.fixture(scope="session")
def msrvtt_reference() -> Path:
    """The real MSR-VTT 1k-A annotations and clip video7500.mp4."""
    if not (REFERENCE_DIR / "MSRVTT_JSFUSION_test.csv").exists():
        pytest.skip(f"real MSR-VTT reference files not found at {REFERENCE_DIR} (the reference folder beside the checkout is absent)")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def clip_gallery(msrvtt_reference, tmp_path_factory):
    """The three real reference clips as a user's folder (gym/ a subfolder, plus a corrupt file), without and with a
    captions.csv, and random tiny checkpoints to search them with (tests/clip_folders.py)."""
    from app_support import tiny_checkpoints
    from clip_folders import ClipGallery, clip_folder

    root = tmp_path_factory.mktemp("clip_gallery")
    return ClipGallery(clip_folder(root / "my_clips", msrvtt_reference, captions=False),
                       clip_folder(root / "captioned", msrvtt_reference, captions=True), tiny_checkpoints(root),
                       root / "cache")


# ---------------------------------------------------------------- the app: one tiny session and one server per run


@pytest.fixture(scope="session")
def tiny_app(tmp_path_factory):
    """A Session over a generated 12-clip test split with a random DRL WTI and a random UNIFY checkpoint (tests/
    app_support.py), built once per run: the unit tests of the views, the API tests and the browser tests share it
    (and so share its encoded galleries)."""
    from app_support import tiny_session

    return tiny_session(tmp_path_factory.mktemp("tiny_app"))


@pytest.fixture(scope="session")
def served_app(tiny_app):
    """The tiny session served as `python app.py` serves it; yields (session, url)."""
    from app_support import launched

    with launched(tiny_app) as url:
        yield tiny_app, url


# ---------------------------------------------------------------- random scoring-ready banks with ragged masks


def make_banks(n_texts: int, n_videos: int, tokens: int = 8, frames: int = 5, dim: int = 16, seed: int = 0,
               clustered: bool = False):
    """(TextBank, VideoBank) of random L2-normalised features with ragged prefix masks (garbage at padding) and WTI
    softmax weights over the valid positions. clustered: clips around 20 centres and queries near one clip each, so a
    pooled first stage means something (tests/test_index.py)."""
    import torch

    from tvr_demo.retrieval.scoring import TextBank, VideoBank

    g = torch.Generator().manual_seed(seed)
    if clustered:
        centres = torch.randn(20, dim, generator=g)
        own = centres[torch.randint(20, (n_videos,), generator=g)] + 0.5 * torch.randn(n_videos, dim, generator=g)
        video = own[:, None] + 0.7 * torch.randn(n_videos, frames, dim, generator=g)
        target = own[torch.randint(n_videos, (n_texts,), generator=g)]
        text = target[:, None] + 1.0 * torch.randn(n_texts, tokens, dim, generator=g)
    else:
        text, video = torch.randn(n_texts, tokens, dim, generator=g), torch.randn(n_videos, frames, dim, generator=g)
    tmask = (torch.arange(tokens)[None] < torch.randint(2, tokens + 1, (n_texts,), generator=g)[:, None]).long()
    vmask = (torch.arange(frames)[None] < torch.randint(1, frames + 1, (n_videos,), generator=g)[:, None]).long()

    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    def softmax(n: int, length: int, mask: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, length, generator=g).masked_fill(mask == 0, float("-inf")).softmax(-1)

    eot = unit(text[torch.arange(n_texts), tmask.sum(1) - 1])
    m = vmask[..., None].float()
    pooled = unit((unit(video) * m).sum(1) / m.sum(1))
    return (TextBank(unit(text), tmask, softmax(n_texts, tokens, tmask), eot, torch.zeros_like(tmask), None),
            VideoBank(unit(video), vmask, softmax(n_videos, frames, vmask), pooled, None))


@pytest.fixture(scope="session")
def ragged_banks():
    """The factory make_banks(n_texts, n_videos, tokens=8, frames=5, dim=16, seed=0, clustered=False)."""
    return make_banks


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
