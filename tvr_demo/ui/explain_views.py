"""The explain view: why a video scored what it did for a query, side by side with the pair that matters most
(the ground truth, or the video that beat it), plus the teaching walkthrough built from the same numbers."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from tvr_demo import plots
from tvr_demo.errors import QueryError
from tvr_demo.evaluation.analysis import pessimistic_rank
from tvr_demo.evaluation.token_weights import caption_weights
from tvr_demo.retrieval.engine import Engine
from tvr_demo.retrieval.explanation import PairExplanation, PooledExplanation, TokenFrameExplanation
from tvr_demo.ui.labels import score_kind
from tvr_demo.ui.media import frame_thumbnails
from tvr_demo.ui.search_views import resolve_video


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


@dataclass
class Ranking:
    """One query's ranking over the gallery, computed once per explain call (never cached across calls: a cache
    keyed on the engine would keep engines the session has dropped alive)."""

    scores: np.ndarray  # (G,) every video's score in the ranking branch
    ground_truth: list[int]  # the query's ground-truth videos (a benchmark caption), else []
    ground_truth_rank: int | None  # 0-based, pessimistic ties (tvr_demo.evaluation.metrics.gt_ranks)

    def rank(self, video: int) -> int:
        """0-based rank with the ground-truth rank's tie rule: every other video scoring at least as high counts."""
        return pessimistic_rank(self.scores, video)

    @property
    def order(self) -> list[int]:
        """Video indices, best first (ties in index order)."""
        return [int(v) for v in np.argsort(-self.scores, kind="stable")]


def _ranking(engine: Engine, query: str) -> Ranking:
    """Every video's score for a query, its ground truth (if a benchmark caption) and the ground truth's rank."""
    result = engine.search_text(query, k=engine.gallery_size)
    scores = np.empty(engine.gallery_size, dtype=np.float64)
    for hit in result.hits:
        scores[hit.index] = hit.score
    return Ranking(scores, result.ground_truth, result.ground_truth_rank)


def role(ranking: Ranking, video: int) -> str:
    """What a pair is, in words: its rank and how it stands against the query's ground truth."""
    rank, gt = ranking.rank(video) + 1, ranking.ground_truth
    if video in gt:
        return f"ground truth, rank {rank}"
    if gt:
        return f"rank {rank}: {'beat' if rank <= ranking.ground_truth_rank else 'below'} the ground truth"
    return f"rank {rank}" + (": top result" if rank == 1 else "")


def contrast_video(ranking: Ranking, video: int) -> int | None:
    """The video to show beside (query, video): the ground truth when the video is not it; the video that beat the
    ground truth when it is; else the runner-up (the top result for a free-text query)."""
    by_rank, gt = ranking.order, ranking.ground_truth
    if gt and video not in gt:
        return gt[0]
    if gt and ranking.ground_truth_rank:
        return next(v for v in by_rank if v not in gt)
    if len(by_rank) < 2:
        return None
    return by_rank[1] if by_rank[0] == video else by_rank[0]


def view_pair(engine: Engine, ranking: Ranking, query: str, video: int) -> PairView:
    return PairView(Pair(query, video, role(ranking, video)), engine.explain(query, video), ranking.rank(video),
                    video in ranking.ground_truth)


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
                                   thumbnails=thumbs, title=title)
    return plots.token_frame_figure(
        latent.tokens, latent.cosine, latent.token_weights, latent.frame_weights, latent.token_argmax,
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
    query = (query or "").strip()
    if not query:
        raise QueryError("the query is empty: type a description or pick a search result to explain")
    index = resolve_video(engine, video)
    ranking = _ranking(engine, query)
    if index is None:
        index = ranking.order[0]
    compare_query = (compare_query or "").strip() or query
    compare = resolve_video(engine, compare_video)
    if compare is None:  # same query: the automatic contrast; another query: the same video
        compare = contrast_video(ranking, index) if compare_query == query else index
    view_a = view_pair(engine, ranking, query, index)
    if compare is None:
        return ExplainOutput(pair_markdown(engine, view_a), latent_figure(engine, view_a),
                             lexicon_figure(engine, view_a), "", None, None, None, walkthrough(engine, view_a))
    view_b = view_pair(engine, ranking if compare_query == query else _ranking(engine, compare_query),
                       compare_query, compare)
    return ExplainOutput(pair_markdown(engine, view_a), latent_figure(engine, view_a), lexicon_figure(engine, view_a),
                         pair_markdown(engine, view_b), latent_figure(engine, view_b), lexicon_figure(engine, view_b),
                         difference_figure(engine, view_a, view_b), walkthrough(engine, view_a))


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
            f"- `{latent.tokens[t]}`: weight w_t = {latent.token_weights[t]:.3f}, best frame {_best_frame(latent, t)[0]} "
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
