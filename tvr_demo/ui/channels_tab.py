"""The Channels tab: CDCR's text x video channel cross-correlation over the split, for a model trained with it
beside one trained without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import plotly.graph_objects as go

from tvr_demo import plots
from tvr_demo.errors import QueryError
from tvr_demo.ui.labels import model_summary
from tvr_demo.ui.listeners import HEAVY, PROGRESS, listener, wire

if TYPE_CHECKING:
    from tvr_demo import Engine
    from tvr_demo.ui.page import Page
    from tvr_demo.ui.session import Session


def correlation_view(engines: dict[str, Engine]) -> tuple[go.Figure, str]:
    """The D x D cross-correlation of matched text and video features per model, and its statistics."""
    gallery = next(iter(engines.values())).bench
    if gallery.num_captions == 1:  # a correlation over one pair is 0 / 0
        raise QueryError(f"the channel correlation needs at least 2 captions; {gallery.name}/{gallery.split} has 1")
    matrices = {name: engine.analysis.channel_correlation() for name, engine in engines.items()}
    lines = ["| model | training | D | mean c_ii | min c_ii | mean abs c_ij | RMS c_ij | max abs c_ij |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in matrices.items():
        s = plots.correlation_stats(c)
        lines.append(f"| {name} | {model_summary(engines[name].config)} | {int(s['dim'])} | {s['diag_mean']:.3f} | "
                     f"{s['diag_min']:.3f} | {s['offdiag_mean_abs']:.3f} | {s['offdiag_rms']:.3f} | "
                     f"{s['offdiag_max_abs']:.3f} |")
    notes = []
    for name, engine in engines.items():
        cdcr = engine.config.cdcr
        if cdcr.variant and cdcr.alpha2 == 0:
            notes.append(f"`{name}` has CDCR with α2 = 0: only the diagonal term was trained, nothing decorrelates "
                         "the channels (the official DRL commands all do this).")
    title = (f"CDCR's text × video channel cross-correlation c over {gallery.name}/{gallery.split} (matched pairs)"
             "<br><span style='font-size:12px'>the training loss's own statistic: standardised channels, weighted "
             "token-frame rows; not a Pearson correlation, so not bounded by ±1</span>")
    if not gallery.num_captions:  # no matched pairs (Analysis.channel_correlation)
        title = (f"video × video channel correlation over {gallery.name}/{gallery.split} (no captions: the video "
                 "features against themselves)")
        notes.append("Without captions there are no matched text-video pairs: each model's video features are "
                     "correlated with themselves, so the diagonal is 1 by construction and the off-diagonal shows the "
                     "redundancy between channels that CDCR's second term penalises.")
    return plots.correlation_figure(matrices, title=title), "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "")




class ChannelsTab:
    """What CDCR does to the channels: the correlation matrix of matched text and video features, side by side."""

    title, id = "Channels", "channels"
    load_outputs: tuple = ()

    def __init__(self, session: Session) -> None:
        self.session = session

    def layout(self, page: Page) -> None:
        names = list(self.session.models)
        with gr.Row(equal_height=True):
            self.model_a = gr.Dropdown(names, value="drl-wti-cdcr" if "drl-wti-cdcr" in names else names[0],
                                       label="Model (with CDCR)")
            self.model_b = gr.Dropdown(names, value="drl-wti" if "drl-wti" in names else names[-1],
                                       label="Model (without CDCR)")
            self.button = gr.Button("Compute", variant="primary")
        self.figure = gr.Plot(label="Channel cross-correlation", elem_id="correlation-plot")
        self.summary = gr.Markdown()

    def loaded(self, engine: Engine) -> tuple:
        return ()

    @property
    def figures(self) -> dict[str, gr.Plot]:
        return {"channel correlation": self.figure}

    def wire(self, page: Page) -> None:
        wire(self.button.click, self.run_correlation, [self.model_a, self.model_b, page.dataset, page.split],
             [self.figure, self.summary], api_name="correlation")

    @listener(HEAVY, gpu_seconds=60, background=True)
    def run_correlation(self, model_a: str, model_b: str, dataset: str, split: str,
                        progress: gr.Progress = PROGRESS) -> tuple[go.Figure, str]:
        """The channel cross-correlation of one or two models."""
        names = list(dict.fromkeys([model_a, model_b]))
        return correlation_view({n: self.session.engine(n, dataset, split, progress) for n in names})
