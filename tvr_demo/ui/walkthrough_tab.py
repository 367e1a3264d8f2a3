"""The Walkthrough tab: the papers told with the numbers of the pair on screen, the papers' tables recomputed live
on this gallery, and figures exported as self-contained HTML for slides."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from tvr_demo import TokenFrameExplanation, caption_weights, plots
from tvr_demo.diagnosis.ablations import UNIFY_FUSION_GAIN, AblationRow, ablation_tables
from tvr_demo.errors import QueryError
from tvr_demo.ui.exports import write_html
from tvr_demo.ui.listeners import HEAVY, PROGRESS, listener, wire

if TYPE_CHECKING:
    from tvr_demo import Engine
    from tvr_demo.ui.explain_tab import PairView
    from tvr_demo.ui.page import Page
    from tvr_demo.ui.session import Session


def _best_frame(latent: TokenFrameExplanation, token: int) -> tuple[str, float]:
    """A token's best frame and its s. DRL zeroes padded frames before the max (as the official code), so when every
    real frame scores below 0 the best "frame" is padding, with s = 0."""
    frame = int(latent.token_argmax[token])
    if frame >= latent.cosine.shape[1]:
        return "(padding)", 0.0
    return f"f{frame}", float(latent.cosine[token, frame])


def weight_sentence(tokens: list[str], weights: np.ndarray) -> str:
    """What this caption's weights say, from its own numbers: content words against fillers, and `<eot>`."""
    cw = caption_weights(tokens, weights)
    if cw.content_mean is not None and cw.filler_mean is not None:
        if cw.content_outweighs_fillers:
            words = (f"Here an average content word weighs {cw.content_mean:.3f} against {cw.filler_mean:.3f} for a "
                     "filler (a, the, of, ...): this head has learned that content words count more.")
        else:
            words = (f"Here an average filler (a, the, of, ...) weighs {cw.filler_mean:.3f}, not less than an average "
                     f"content word ({cw.content_mean:.3f}): this head does not favour content words for this query.")
    elif cw.content_mean is not None:
        words = f"Here an average content word weighs {cw.content_mean:.3f}."
    else:
        words = ""
    if cw.eot >= 0.5:
        eot = (f"`<eot>`, the token that has read the whole sentence, takes {cw.eot:.3f} of the weight on its own, "
               "so this score is mostly one sentence vector's best frame match.")
    else:
        eot = f"`<eot>` (the token that has read the whole sentence) weighs {cw.eot:.3f}."
    return f"{words} {eot}".strip()


def walkthrough(engine: Engine, view: PairView) -> str:
    """The teaching text: WTI, CDCR and the lexicon branch, each told with this pair's numbers."""
    config, latent, ids = engine.config, view.explanation.latent, engine.bench.video_ids
    video = ids[view.pair.video]
    parts = [f"### The pair on screen\nQuery “{html.escape(view.pair.query)}” against **{video}** (rank {view.rank + 1}) "
             f"with model `{engine.checkpoint.name}`."]
    if isinstance(latent, TokenFrameExplanation):
        top = np.argsort(-latent.token_contrib)[:3]
        n = len(latent.tokens)
        token_lines = "\n".join(
            f"- `{latent.labels[t]}`: weight w_t = {latent.token_weights[t]:.3f}, best frame {_best_frame(latent, t)[0]} "
            f"with s = {_best_frame(latent, t)[1]:.3f}, so it adds {latent.token_weights[t]:.3f} × "
            f"{_best_frame(latent, t)[1]:.3f} = {latent.token_contrib[t]:.4f} to t2v" for t in top)
        weighted = latent.interaction == "wti"
        parts.append(
            "### 1. Token-wise interaction (WTI)\n"
            "Each of the query's tokens looks for its best-matching frame (the circles in the heatmap) and each frame "
            "for its best token (the squares). Instead of one sentence vector against one video vector, the score "
            "is built from these token–frame matches.\n\n"
            + ("A small head gives every token a weight w_t (softmax over the tokens) and every frame a weight w_v. "
               f"{weight_sentence(latent.tokens, latent.token_weights)} Under plain TI each of the {n} tokens would "
               f"weigh 1/{n} = {1 / n:.3f}.\n\n" if weighted else
               f"This model uses TI: every token weighs 1/{n} and every frame 1/{len(latent.frame_weights)}.\n\n")
            + f"The three tokens that add most here:\n{token_lines}\n\n"
            f"Adding every token's share gives t2v = {latent.t2v:.4f}; the frames' shares give v2t = {latent.v2t:.4f}; "
            f"the score is their mean: **S = ({latent.t2v:.4f} + {latent.v2t:.4f}) / 2 = {latent.score:.4f}**.")
    else:
        best = int(np.argmax(latent.frame_cosine))
        parts.append(
            "### 1. Token-wise interaction (WTI)\n"
            f"This model does not use it: it compares one sentence vector (the `<eot>` token) with the mean of the frames "
            f"(S = {latent.score:.4f}). The frame closest to the sentence is f{best} "
            f"(cos {latent.frame_cosine[best]:.4f}). Choose `drl-wti` to see tokens matched to frames one by one.")
    cdcr = config.cdcr
    if cdcr.variant:
        off = ("on: it pushes different channels to carry different information"
               if cdcr.alpha2 > 0 else "**off (α2 = 0), as in every shipped DRL command**: only the diagonal is trained")
        cdcr_text = (f"`{engine.checkpoint.name}` was trained with CDCR variant {cdcr.variant}: α1 = {cdcr.alpha1:g} "
                     f"pulls matched text and video channels to correlation 1, α2 = {cdcr.alpha2:g} on the "
                     f"off-diagonal is {off}. Loss weight {cdcr.weight:g}.")
    else:
        cdcr_text = f"`{engine.checkpoint.name}` was trained without CDCR."
    parts.append(
        "### 2. Channel decorrelation (CDCR)\n"
        "CDCR only acts in training: it standardises the features of matched token–frame pairs and asks their D × D "
        "cross-correlation to be the identity: 1 on the diagonal, 0 elsewhere, so the channels are not redundant. "
        f"It changes the features you see in the heatmap, not the formula. {cdcr_text} The Channels tab shows the "
        "matrix over this gallery beside a model trained without it.")
    lex = view.explanation.lexicon
    if lex is None:
        parts.append("### 3. The lexicon branch (UNIFY)\nThis model has none. Choose `unify` to see each query and video "
                     "as weighted words of CLIP's vocabulary, scored by their shared words.")
    else:
        shared = ", ".join(f"{w.word} ({w.query_weight:.2f}×{w.item_weight:.2f}={w.contribution:.3f})"
                           for w in lex.overlap[:5]) or "none"
        scores = view.explanation.scores
        parts.append(
            "### 3. The lexicon branch (UNIFY)\n"
            "Besides its dense (latent) vector, each query and video gets a sparse vector over CLIP's vocabulary: "
            "one readable weight per word, most of them zero. The lexicon score is the dot product, so only words "
            f"active on both sides count.\n\nQuery words: {', '.join(w for w, _ in lex.query_words[:8]) or 'none'}. "
            f"Video words: {', '.join(w for w, _ in lex.video_words[:8]) or 'none'}. Shared: {shared}; they add up "
            f"to the lexicon score **{lex.score:.4f}**.\n\nRanking uses the fused score: each branch is standardised "
            f"over the gallery (z) and fused = z(latent) + λ·z(lexicon) with λ = {config.unify.fusion_lambda:g}: "
            f"latent {scores.get('latent', 0):.4f}, lexicon {scores.get('lexicon', 0):.4f} → fused "
            f"{scores.get('fused', 0):.4f}. This is our documented interpretation of UNIFY: no official code exists.")
    return "\n\n".join(parts)


HERE = ("here, text → video", "here, video → text")
PAPER = ("paper (MSR-VTT), text → video", "paper (MSR-VTT), video → text")


def _panel(rows: list[AblationRow]) -> tuple[list[str], dict[str, list[float | None]]]:
    labels = [r.row if r.model is None else f"{r.row}<br>({r.model})" for r in rows]
    return labels, {HERE[0]: [r.t2v for r in rows], HERE[1]: [r.v2t for r in rows],
                    PAPER[0]: [r.reported_t2v for r in rows], PAPER[1]: [r.reported_v2t for r in rows]}


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _table(rows: list[AblationRow]) -> str:
    lines = ["| row | checkpoint | t2v R@1 here | v2t R@1 here | t2v R@1 paper | v2t R@1 paper | source |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.row} | {r.model or '(none here)'} | {_cell(r.t2v)} | {_cell(r.v2t)} | {_cell(r.reported_t2v)} | "
              f"{_cell(r.reported_v2t)} | {r.source} |" for r in rows]
    return "\n".join(lines)


def papers_view(engines: Mapping[str, Engine]) -> tuple[go.Figure, str]:
    """Grouped bars (measured solid, published hatched) and the sentences, then both tables in numbers."""
    tables = ablation_tables(engines)
    panels = {"DRL: interaction ablation": _panel(tables.drl)}
    notes = {}
    if tables.unify:
        name = f"UNIFY: branch ablation ({tables.unify[0].model})"
        panels[name] = _panel(tables.unify)
        notes[name] = (f"paper: fused = latent + {UNIFY_FUSION_GAIN:.1f} t2v R@1 on MSR-VTT<br>"
                       "(it gives no absolute numbers)")  # two lines: the panel is three bar groups wide
    fig = plots.ablation_figure(panels, notes, title=f"The papers' ablations, live on {tables.gallery}<br><span "
                                                     "style='font-size:12px'>published numbers: MSR-VTT 1k-A, CLIP "
                                                     "ViT-B/32</span>")
    text = "\n".join(f"- {s}" for s in tables.sentences)
    return fig, (f"#### Where the orderings agree\n{text}\n\n{_table(tables.drl + tables.unify)}\n\n"
                 "Our checkpoints are tiny models trained from scratch on the synthetic benchmark; the papers' are "
                 "CLIP ViT-B/32 fine-tuned on MSR-VTT, so compare orderings, not absolute numbers.")


class WalkthroughTab:
    """The papers taught with the pair on screen, their tables recomputed live, and figures exported for slides."""

    title, id = "Walkthrough", "walkthrough"

    def __init__(self, session: Session) -> None:
        self.session = session

    def layout(self, page: Page) -> None:
        self.story = gr.Markdown("Explain a pair first: this page then tells its story with its numbers.")
        gr.Markdown("#### The papers' tables, live\nDRL's interaction ablation and UNIFY's branch ablation, "
                    "recomputed on this gallery with every served checkpoint, beside the papers' MSR-VTT numbers.")
        self.papers_btn = gr.Button("Compute the papers' tables on this gallery")
        self.papers_fig = gr.Plot(label="Ablations: this gallery vs the papers", elem_id="papers-plot")
        self.papers_md = gr.Markdown(elem_id="papers-text")
        gr.Markdown("#### Export a figure for slides\nPNG: the camera icon on any figure. HTML (interactive, "
                    "self-contained):")
        self.exportable = list(page.figures)  # the tabs before this one, laid out already
        with gr.Row():
            with gr.Column(scale=1):
                self.which = gr.Dropdown(self.exportable, value=self.exportable[0], label="Figure")
                self.export_btn = gr.Button("Export HTML", elem_id="export-button")
            self.export_file = gr.File(label="Download", interactive=False, scale=1)

    load_outputs: list = []

    def loaded(self, engine: Engine) -> tuple:
        return ()

    def wire(self, page: Page) -> None:
        wire(self.papers_btn.click, self.run_papers, [page.dataset, page.split], [self.papers_fig, self.papers_md],
             api_name="paper_tables")
        figures = [page.figures[name] for name in self.exportable]
        wire(self.export_btn.click, self.export_html, [self.which, *figures], self.export_file,
             api_name="export_html")

    @listener(HEAVY, gpu_seconds=600, background=True)
    def run_papers(self, dataset: str, split: str, progress: gr.Progress = PROGRESS) -> tuple:
        """The papers' ablations over every served checkpoint on this gallery (each encodes it once, then cached)."""
        return papers_view({n: self.session.engine(n, dataset, split, progress) for n in self.session.models})

    @listener()
    def export_html(self, which: str, *figures) -> str:
        """One shown figure as a standalone HTML file."""
        plot = dict(zip(self.exportable, figures, strict=True)).get(which)
        if plot is None or getattr(plot, "type", None) != "plotly":
            raise QueryError(f"the {str(which)[:60]!r} figure is empty: show it first, then export it")
        return write_html(plot.plot, str(which))
