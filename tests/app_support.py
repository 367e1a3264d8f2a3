"""What the app tests share: a small generated benchmark, random-weight tiny checkpoints and a launched app."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from tvr_demo.data.synthetic import SyntheticConfig, generate
from tvr_demo.models import ModelConfig, TVRModel, UnifyConfig
from tvr_demo.models.backbone import clip_config
from tvr_demo.models.checkpoints import save_checkpoint
from tvr_demo.ui.session import Session

MODELS = {  # name -> config; random weights are enough to drive every view
    "drl-wti": dict(interaction="wti"),
    "unify": dict(interaction="dp", unify=UnifyConfig(latent="dp", top_k=64)),
}


def tiny_checkpoints(root: Path) -> list[str]:
    """One random tiny checkpoint per entry of MODELS, saved under root/checkpoints; their folders."""
    specs = []
    for name, fields in MODELS.items():
        torch.manual_seed(0)
        model = TVRModel(ModelConfig(clip=clip_config("tvr-tiny"), **fields)).eval()
        specs.append(str(save_checkpoint(model, root / "checkpoints" / name, {"description": f"{name}, random weights"})))
    return specs


def tiny_session(root: Path, n_test: int = 12) -> Session:
    """A session over a generated test split of n_test clips and one random tiny checkpoint per entry of MODELS."""
    bench = generate(root / "bench", SyntheticConfig(n_train=0, n_val=0, n_test=n_test), progress=False, num_workers=0)
    return Session(tiny_checkpoints(root), bench, "test", device="cpu", cache_root=root / "cache")


class Listeners:
    """Every tab's listeners bound to one session, as `app.build_demo` makes them (wrapped by their declared guard,
    priority and GPU use), for calling without a browser: `Listeners(session).run_search(...)`."""

    def __init__(self, session: Session) -> None:
        import app
        from tvr_demo.ui.page import Page

        self.tabs = [tab(session) for tab in app.TABS]
        self.page = Page(session, self.tabs)

    def __getattr__(self, name: str):
        for owner in (self.page, *self.tabs):
            if hasattr(type(owner), name):
                return getattr(owner, name)
        raise AttributeError(name)


@contextlib.contextmanager
def launched(session: Session) -> Iterator[str]:
    """The app served in this process (as `python app.py` would) at a free local port; yields its URL."""
    import app

    demo = app.build_demo(session)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, show_error=False,
                            allowed_paths=[str(root) for root in session.data_roots])
    try:
        yield url
    finally:
        demo.close()


def open_app_page(browser, url: str, width: int):
    """A new page on the app, once its header (which names the device) has rendered; the caller closes it."""
    page = browser.new_page(viewport={"width": width, "height": 1100})
    page.goto(url)
    page.get_by_text("Device").first.wait_for(timeout=30_000)
    return page
