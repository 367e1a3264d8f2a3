"""The Explain tab: why a video scored what it did for a query, side by side with the pair that matters most (the
ground truth, or the video that beat it), and which word of the query decides the video's rank."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
import plotly.graph_objects as go

from tvr_demo import PooledExplanation, TokenFrameExplanation, plots
from tvr_demo.diagnosis.counterfactual import Counterfactual, counterfactual
from tvr_demo.errors import QueryError
from tvr_demo.ui.inputs import BRANCHES, ranking_branch, resolve_video
from tvr_demo.ui.labels import score_kind
from tvr_demo.ui.listeners import MODEL, PROGRESS, listener, wire
from tvr_demo.ui.media import frame_thumbnails
from tvr_demo.ui.walkthrough_tab import walkthrough

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tvr_demo import Benchmark, Engine, PairExplanation, ScoreRow
    from tvr_demo.ui.page import Page
    from tvr_demo.ui.session import Session

ExplainFields = tuple[gr.Tabs, str, str, str, str]  # the explain tab, its two queries and two videos (by id)


def pick(items: Sequence, index, what: str):
    """items[index] for an index a browser event sent, which a client may forge."""
    if isinstance(index, (list, tuple)):
        index = index[0] if index else None
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
        raise QueryError(f"no {what} at position {str(index)[:20]}: there are {len(items)}; click one again")
    return items[index]


def open_pair(bench: Benchmark, query: str, video: int | None, compare_query: str = "",
              compare_video: int | None = None) -> ExplainFields:
    """Switch to the explain tab with its fields filled (videos by id); the explain listener runs next."""
    ids = bench.video_ids
    return (gr.Tabs(selected="explain"), query, "" if video is None else ids[video], compare_query,
            "" if compare_video is None or compare_video < 0 else ids[compare_video])


@dataclass
class Pair:
    query: str
    video: int
    role: str  # what this pair is, in words: "ground truth, rank 3", "rank 1: beat the ground truth", ...


@dataclass
class PairView:
    pair: Pair
    explanation: PairExplanation
    rank: int  # 0-based rank of the video for the query in the ranking branch
    is_ground_truth: bool


def role(row: ScoreRow, video: int) -> str:
    """What a pair is, in words: its rank and how it stands against the query's ground truth."""
    rank, gt = row.rank(video) + 1, row.ground_truth
    if video in gt:
        return f"ground truth, rank {rank}"
    if gt:
        return f"rank {rank}: {'beat' if rank <= row.ground_truth_rank else 'below'} the ground truth"
    return f"rank {rank}" + (": top result" if rank == 1 else "")


def contrast_video(row: ScoreRow, video: int) -> int | None:
    """The video to show beside (query, video): the ground truth when the video is not it; the video that beat the
    ground truth when it is; else the runner-up (the top result for a free-text query)."""
    gt = row.ground_truth
    if gt and video not in gt:
        return gt[0]
    if gt and row.ground_truth_rank:
        return next(int(v) for v in row.top(len(gt) + 1) if v not in gt)
    if row.size < 2:
        return None
    first, second = (int(v) for v in row.top(2))
    return second if first == video else first


def view_pair(engine: Engine, row: ScoreRow, video: int) -> PairView:
    return PairView(Pair(row.query, video, role(row, video)), engine.explain(row, video), row.rank(video),
                    video in row.ground_truth)


def latent_figure(engine: Engine, view: PairView) -> go.Figure:
    """DRL's token x frame figure (WTI/TI) or the pooled figure (dp/meanP), with the frames the model saw."""
    latent, config = view.explanation.latent, engine.config
    thumbs, labels = frame_thumbnails(str(engine.bench.video_paths[view.pair.video]),
                                      config.sampling(engine.bench.end_s))
    n_frames = latent.cosine.shape[1] if isinstance(latent, TokenFrameExplanation) else len(latent.frame_cosine)
    if len(thumbs) != n_frames:  # undecodable clip, or sampling changed: numbers only
        thumbs, labels = (), None
    title = f"{engine.bench.video_ids[view.pair.video]} — {view.pair.role}"
    if isinstance(latent, PooledExplanation):
        return plots.pooled_figure(latent.tokens, latent.frame_cosine, latent.score, frame_labels=labels,
                                   thumbnails=thumbs, title=title, sentence=view.pair.query)
    return plots.token_frame_figure(
        latent.labels, latent.cosine, latent.token_weights, latent.frame_weights, latent.token_argmax,
        latent.frame_argmax, latent.token_contrib, latent.frame_contrib, latent.t2v, latent.v2t, latent.score,
        weighted=latent.interaction == "wti", frame_labels=labels, thumbnails=thumbs, title=title)


def lexicon_figure(engine: Engine, view: PairView) -> go.Figure | None:
    lex = view.explanation.lexicon
    if lex is None:
        return None
    shared = [(w.word, w.query_weight, w.item_weight) for w in lex.overlap]
    return plots.lexicon_figure(lex.query_words, lex.video_words, shared, view.explanation.scores,
                                title=f"{engine.bench.video_ids[view.pair.video]}: " + " · ".join(
                                    f"{b} {s:.4f}" for b, s in view.explanation.scores.items()))


def _contributions(view: PairView) -> dict[str, float]:
    return {w.word: w.contribution for w in view.explanation.lexicon.overlap}


def difference_figure(engine: Engine, a: PairView, b: PairView) -> go.Figure | None:
    """UNIFY, same query: the words that put one video above the other."""
    if a.explanation.lexicon is None or a.pair.query != b.pair.query:
        return None
    ids = engine.bench.video_ids
    return plots.lexicon_difference_figure(_contributions(a), _contributions(b), ids[a.pair.video], ids[b.pair.video])


def pair_markdown(engine: Engine, view: PairView) -> str:
    """The pair's header: what it is, its rank and every branch's score, and the formula with the numbers."""
    ids, latent = engine.bench.video_ids, view.explanation.latent
    gt = " · ✓ ground truth" if view.is_ground_truth else ""
    scores = " · ".join(f"{score_kind(engine.config, b)} **{s:.4f}**" for b, s in view.explanation.scores.items())
    lines = [f"#### {ids[view.pair.video]} — {view.pair.role}",
             f"Query “{html.escape(view.pair.query)}” · rank **{view.rank + 1}** of {engine.gallery_size}{gt}", f"Scores: {scores}"]
    if isinstance(latent, TokenFrameExplanation):
        lines.append(f"S = (t2v + v2t) / 2 = ({latent.t2v:.4f} + {latent.v2t:.4f}) / 2 = **{latent.score:.4f}**: the "
                     "orange bars are each token's w_t·max_v s (they add up to t2v) and each frame's w_v·max_t s "
                     "(they add up to v2t).")
    else:
        lines.append(f"S = cos(sentence vector, mean of the frames) = **{latent.score:.4f}**")
    lex = view.explanation.lexicon
    if lex is not None:
        missing = [w for w, _ in lex.query_words if w not in {o.word for o in lex.overlap}]
        lines.append(f"Lexicon: {len(lex.overlap)} shared words, Σ q_j·v_j = **{lex.score:.4f}**"
                     + (f"; query words this video does not activate: {', '.join(missing)}" if missing else ""))
    return "\n\n".join(lines)


@dataclass
class ExplainOutput:
    markdown_a: str
    latent_a: go.Figure
    lexicon_a: go.Figure | None
    markdown_b: str
    latent_b: go.Figure | None
    lexicon_b: go.Figure | None
    difference: go.Figure | None
    walkthrough: str


def explain(engine: Engine, query: str, video: str | None, compare_query: str | None = None,
            compare_video: str | None = None) -> ExplainOutput:
    """Explain (query, video) and a contrast pair: the one given, else the automatic one. A blank video means the
    query's top result."""
    row = engine.score_text(query, mode="exact")
    index = resolve_video(engine, video)
    if index is None:
        index = int(row.top(1)[0])
    compare_query = (compare_query or "").strip()
    same_query = not compare_query or compare_query == (query or "").strip()
    compare = resolve_video(engine, compare_video)
    if compare is None:  # same query: the automatic contrast; another query: the same video
        compare = contrast_video(row, index) if same_query else index
    view_a = view_pair(engine, row, index)
    markdown_a = pair_markdown(engine, view_a) + (f"\n\n⚠ {row.notice}" if row.notice else "")
    if compare is None:
        return ExplainOutput(markdown_a, latent_figure(engine, view_a), lexicon_figure(engine, view_a), "", None, None,
                             None, walkthrough(engine, view_a))
    row_b = row if same_query else engine.score_text(compare_query, mode="exact")
    view_b = view_pair(engine, row_b, compare)
    markdown_b = pair_markdown(engine, view_b) + (f"\n\n⚠ {row_b.notice}" if row_b.notice and not same_query else "")
    return ExplainOutput(markdown_a, latent_figure(engine, view_a), lexicon_figure(engine, view_a), markdown_b,
                         latent_figure(engine, view_b), lexicon_figure(engine, view_b),
                         difference_figure(engine, view_a, view_b), walkthrough(engine, view_a))


def counterfactual_view(engine: Engine, query: str, video: str | None, branch: str | None) -> tuple[go.Figure, str]:
    """Which word decides the clip's rank (blank clip = the query's top result), and for a failure the smallest fix."""
    cf = counterfactual(engine, query, resolve_video(engine, video), engine.ranking_branch(branch))
    ids = engine.bench.video_ids
    labels = [f"{r.edit.changes[0][0] + 1}. {r.edit.label}" for r in cf.results]
    figure = plots.counterfactual_figure(
        labels, [r.edit.text for r in cf.results], [r.score for r in cf.results], [r.rank for r in cf.results],
        ["replaced" if r.edit.attribute else "removed" for r in cf.results], cf.score, cf.rank,
        [r.truth_rank == 0 and cf.truth_rank not in (None, 0) for r in cf.results],
        title=f"which word decides: {ids[cf.video]} for “{html.escape(cf.query)}” "
              f"({score_kind(engine.config, cf.branch)})", gallery_size=engine.gallery_size)
    return figure, _markdown(engine, cf)


def _markdown(engine: Engine, cf: Counterfactual) -> str:
    ids = engine.bench.video_ids
    lines = [f"**{ids[cf.video]}** is at rank **{cf.rank + 1}** (score {cf.score:.4f}, "
             f"{score_kind(engine.config, cf.branch)}) for the query; "
             f"{len(cf.results)} one-word edits scored against all {engine.gallery_size} videos."]
    if cf.results:
        best = min(cf.results, key=lambda r: (r.rank, -r.score))
        worst = max(cf.results, key=lambda r: (r.rank, -r.score))
        lines.append(f"Best for this clip: {best.edit.label} → rank **{best.rank + 1}**; worst: {worst.edit.label} → "
                     f"rank **{worst.rank + 1}**.")
    if cf.fix is not None:
        lines.append(f"Smallest edit that brings the ground truth **{ids[cf.ground_truth]}** from rank "
                     f"{cf.truth_rank + 1} to rank **1**: {cf.fix.edit.label} (“{html.escape(cf.fix.edit.text)}”)"
                     + (f"; {cf.fix_note}." if cf.fix_note else "."))
    elif cf.ground_truth is not None and cf.truth_rank:
        lines.append(f"Ground truth **{ids[cf.ground_truth]}** at rank {cf.truth_rank + 1}: {cf.fix_note}.")
    if cf.notice:
        lines.append(f"⚠ {cf.notice}: the edits are of the words the model reads.")
    return "\n\n".join(lines)


class ExplainTab:
    """Explain a (query, video) pair beside a contrast pair, and which word decides the video's rank."""

    title, id = "Explain", "explain"

    def __init__(self, session: Session) -> None:
        self.session = session

    def layout(self, page: Page) -> None:
        with gr.Row(equal_height=True):
            self.query = gr.Textbox(label="Query", scale=3)
            self.video = gr.Textbox(label="Video (id or index; blank = top result)", scale=1)
            self.compare_query = gr.Textbox(label="Compare: query (blank = same)", scale=2)
            self.compare_video = gr.Textbox(label="Compare: video (blank = ground truth / what beat it)", scale=1)
            self.explain_btn = gr.Button("Explain", variant="primary", scale=1)
        with gr.Row():
            with gr.Column():
                self.md_a = gr.Markdown()
                self.fig_a = gr.Plot(label="Pair A", elem_id="explain-a")
                with gr.Column(visible=False) as self.lex_col_a:
                    self.lex_a = gr.Plot(label="Lexicon words A (UNIFY)", elem_id="lexicon-a")
            with gr.Column():
                self.md_b = gr.Markdown()
                self.fig_b = gr.Plot(label="Pair B", elem_id="explain-b")
                with gr.Column(visible=False) as self.lex_col_b:
                    self.lex_b = gr.Plot(label="Lexicon words B (UNIFY)", elem_id="lexicon-b")
        with gr.Column(visible=False) as self.diff_col:
            self.diff = gr.Plot(label="Words that separate A from B (UNIFY, same query)")
        with gr.Accordion("Which word decides: the query with each word removed or replaced", open=True):
            with gr.Row(equal_height=True):
                self.cf_branch = gr.Dropdown(BRANCHES, value="auto", label="Branch", scale=1)
                self.cf_btn = gr.Button("Which word decides? (the query and video above)", scale=2)
            self.cf_md = gr.Markdown(elem_id="counterfactual-summary")
            self.cf_fig = gr.Plot(label="Score and rank of the video after each one-word edit",
                                  elem_id="counterfactual-plot")
        self.page = page

    @property
    def load_outputs(self) -> list:
        return [self.lex_col_a, self.lex_col_b, self.diff_col]

    def loaded(self, engine: Engine) -> tuple:
        """UNIFY's lexicon panels show for UNIFY models only."""
        return (gr.Column(visible=engine.is_unify),) * 3

    @property
    def figures(self) -> dict[str, gr.Plot]:
        return {"explain A": self.fig_a, "explain B": self.fig_b, "lexicon A": self.lex_a, "lexicon B": self.lex_b,
                "words A vs B": self.diff}

    @property
    def inputs(self) -> list:
        return [self.query, self.video, self.compare_query, self.compare_video, *self.page.context]

    @property
    def outputs(self) -> list:
        return [self.md_a, self.fig_a, self.lex_a, self.md_b, self.fig_b, self.lex_b, self.diff,
                self.page.tab("walkthrough").story]

    def opens(self, trigger: Callable, fn: Callable, inputs: list) -> None:
        """Wire a listener that fills this tab's fields (`open_pair`) and then explains them."""
        opened = wire(trigger, fn, inputs, [self.page.tabs, self.query, self.video, self.compare_query,
                                            self.compare_video], api_visibility="private")
        wire(opened.success, self.run_explain, self.inputs, self.outputs, api_visibility="private")

    def wire(self, page: Page) -> None:
        wire(self.explain_btn.click, self.run_explain, self.inputs, self.outputs, api_name="explain")
        wire(self.query.submit, self.run_explain, self.inputs, self.outputs, api_visibility="private")
        wire(self.cf_btn.click, self.run_counterfactual, [self.query, self.video, self.cf_branch, *page.context],
             [self.cf_fig, self.cf_md], api_name="counterfactual")

    # ------------------------------------------------------------------ listeners

    @listener(MODEL, gpu_seconds=60)
    def run_explain(self, query: str, video: str | None, compare_query: str | None, compare_video: str | None,
                    model: str, dataset: str, split: str, progress: gr.Progress = PROGRESS) -> tuple:
        """Why a video scored what it did for a query, and against a second pair."""
        engine = self.session.engine(model, dataset, split, progress, searching=True)
        out = explain(engine, query, video, compare_query, compare_video)
        return (out.markdown_a, out.latent_a, out.lexicon_a, out.markdown_b, out.latent_b, out.lexicon_b,
                out.difference, out.walkthrough)

    @listener(MODEL, gpu_seconds=60)
    def run_counterfactual(self, query: str, video: str | None, branch: str | None, model: str, dataset: str,
                           split: str, progress: gr.Progress = PROGRESS) -> tuple:
        """How one-word edits of the query move the video's rank."""
        return counterfactual_view(self.session.engine(model, dataset, split, progress), query, video,
                                   ranking_branch(branch))
