"""The page around the tabs: the title, the header that names the device, model and gallery, the model / gallery /
split fields every tab reads, and the load listener that fills each tab's pickers for the chosen model and gallery."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import gradio as gr

from tvr_demo.ui.labels import model_summary
from tvr_demo.ui.listeners import PROGRESS, listener, wire

if TYPE_CHECKING:
    from tvr_demo import Engine
    from tvr_demo.ui.explain_tab import ExplainTab
    from tvr_demo.ui.session import Session

INTRO = ("Text-video retrieval, explained. **Search** the gallery, click a result to see in **Explain** how the "
         "model matched each word to each frame (DRL) or which words it shared (UNIFY), browse **Failures**, compare "
         "**Channels** with and without CDCR, and find clusters on the **Map**. UNIFY here is our documented "
         "interpretation of the paper: no official code exists.")
SPLITS = ["test", "val", "train"]


class Tab(Protocol):
    """What a tab gives the page: its layout, the components the load listener updates, and its own wiring."""

    title: str
    id: str

    def layout(self, page: Page) -> None: ...

    @property
    def load_outputs(self) -> list: ...

    def loaded(self, engine: Engine) -> tuple: ...

    def wire(self, page: Page) -> None: ...


class Page:
    """The tabs laid out in order under the shared header and fields; `wire` then connects every listener."""

    def __init__(self, session: Session, tabs: list[Tab]) -> None:
        self.session, self.tab_list = session, tabs

    def layout(self) -> None:
        session = self.session
        gr.Markdown(f"## Text-video retrieval: DRL and UNIFY\n{INTRO}")
        self.header = gr.Markdown("Loading…")
        with gr.Row(equal_height=True):
            self.model = gr.Dropdown(list(session.models), value=session.default_model, label="Model", scale=2)
            # blank stands for the gallery given at start: the page never shows where the server keeps it
            start = f"the gallery given at start ({Path(session.dataset).name}/)" if session.dataset else \
                "the bundled synthetic benchmark"
            self.dataset = gr.Textbox("", label="Gallery folder", scale=3, placeholder=f"blank = {start}")
            self.split = gr.Dropdown(SPLITS, value=session.split, label="Split", scale=1)
            self.load_btn = gr.Button("Load", scale=0, min_width=100)
        with gr.Tabs() as self.tabs:
            for tab in self.tab_list:
                with gr.Tab(tab.title, id=tab.id) as self.current_tab:
                    tab.layout(self)

    @property
    def context(self) -> list:
        """The fields every listener takes last: (model, gallery folder, split)."""
        return [self.model, self.dataset, self.split]

    def tab(self, tab_id: str) -> Tab:
        return next(t for t in self.tab_list if t.id == tab_id)

    @property
    def explain(self) -> ExplainTab:
        return self.tab("explain")

    @property
    def figures(self) -> dict[str, gr.Plot]:
        """Every figure a user may export, by name, from the tabs laid out so far."""
        return {name: plot for t in self.tab_list for name, plot in getattr(t, "figures", {}).items()}

    def wire(self, demo: gr.Blocks) -> None:
        outputs = [self.header] + [c for tab in self.tab_list for c in tab.load_outputs]
        wire([demo.load, self.model.change, self.split.change, self.load_btn.click, self.dataset.submit], self.load,
             self.context, outputs, api_name="load")
        for tab in self.tab_list:
            tab.wire(self)

    @listener(gpu_seconds=180, background=True)
    def load(self, model: str, dataset: str, split: str, progress: gr.Progress = PROGRESS) -> tuple:
        """The header, and every tab's pickers for this model and gallery (built on first use)."""
        engine = self.session.engine(model, dataset, split, progress)
        return (self.header_text(engine, model), *[value for tab in self.tab_list for value in tab.loaded(engine)])

    def header_text(self, engine: Engine, model: str) -> str:
        """What is served: the device and scorer, the model, the gallery, and the videos that could not be read."""
        session, bench = self.session, engine.bench
        scorer, description = session.scorer, engine.checkpoint.meta.get("description", "")
        return (f"**Device** `{session.device}`, token-wise scorer `{scorer.name}` ({scorer.reason}) · "
                f"**Model** `{model}`: {model_summary(engine.config)} · **Gallery** "
                f"{bench.name}/{bench.split}: {bench.num_videos} videos, {bench.num_captions} captions "
                f"(`{session.display_path(bench.root)}`)" + (f"\n\n{description}" if description else "")
                + gallery_notes(engine))


SHOWN_SKIPPED = 5  # undecodable files named in the header; the rest are counted


def gallery_notes(engine: Engine) -> str:
    """A folder gallery's slices, the files that could not be decoded (named inside the gallery, with the reason),
    and what a gallery without captions can show."""
    bench, notes = engine.bench, []
    if bench.folders is not None:
        counts = Counter(bench.folders)
        notes.append("**Slices** (subfolders): " + ", ".join(f"{name} ({n})" for name, n in sorted(counts.items())))
    if engine.skipped:
        named = "; ".join(f"`{path}`: {reason}" for path, reason in engine.skipped[:SHOWN_SKIPPED])
        more = len(engine.skipped) - SHOWN_SKIPPED
        notes.append(f"⚠ {len(engine.skipped)} videos could not be decoded and are never retrieved: {named}"
                     + (f"; and {more} more" if more > 0 else ""))
    if not bench.num_captions and bench.folders is not None:
        notes.append("No captions: search by text or by clip, explain, which word decides, the map and the channels "
                     "work; a `captions.csv` beside the clips (columns `video,caption`) turns on metrics, failures, "
                     "blind spots and the papers' tables.")
    return "".join(f"\n\n{note}" for note in notes)
