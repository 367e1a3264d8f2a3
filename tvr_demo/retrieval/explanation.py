"""The per-pair numbers behind every explanation figure, taken from the scorer's own pieces and checked to add up."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tvr_demo.models import drl
from tvr_demo.models.backbone import get_tokenizer
from tvr_demo.models.unify import WordContribution, lexicon_similarity, overlap, top_words
from tvr_demo.retrieval.scoring import TextBank, VideoBank


@dataclass
class TokenFrameExplanation:
    """WTI / TI: s[t, v] over the valid tokens and frames, the weights, the argmaxes and the contributions.

    score = (sum_t token_contrib + sum_v frame_contrib) / 2, with token_contrib[t] = w_t * max_v s[t, v] and
    frame_contrib[v] = w_v * max_t s[t, v].
    """

    interaction: str
    tokens: list[str]  # valid tokens, SOT..EOT
    labels: list[str]  # what a reader sees for each token: its whole word ("blocks 1/2" for a word's first piece)
    cosine: np.ndarray  # (T, V) masked cosine matrix over valid tokens x valid frames
    token_weights: np.ndarray  # (T,)
    frame_weights: np.ndarray  # (V,)
    token_argmax: np.ndarray  # (T,) frame index each token matched
    frame_argmax: np.ndarray  # (V,) token index each frame matched
    token_contrib: np.ndarray  # (T,)
    frame_contrib: np.ndarray  # (V,)
    t2v: float
    v2t: float
    score: float


@dataclass
class PooledExplanation:
    """DP / meanP: one cosine of the EOT sentence vector and the mean of the frames; the per-frame cosines show which
    frames pull the mean toward the text."""

    tokens: list[str]
    frame_cosine: np.ndarray  # (V,) cos(EOT text, frame v)
    score: float


@dataclass
class LexiconExplanation:
    """UNIFY: the words each side activates and the overlap whose contributions q_j * v_j sum to the score."""

    query_words: list[tuple[str, float]]
    video_words: list[tuple[str, float]]
    overlap: list[WordContribution]
    score: float


@dataclass
class PairExplanation:
    caption: str
    video_index: int
    latent: TokenFrameExplanation | PooledExplanation
    lexicon: LexiconExplanation | None = None
    scores: dict[str, float] = field(default_factory=dict)  # per branch, as the ranking uses them


def _valid(mask: torch.Tensor) -> torch.Tensor:
    return mask.bool().nonzero().flatten()


def token_frame_explanation(text: TextBank, video: VideoBank, interaction: str) -> TokenFrameExplanation:
    """From one-row banks; calls the same masked cosine and WTI terms as the scorer."""
    t_w = drl.weights_for(interaction, text.mask, text.weights)
    v_w = drl.weights_for(interaction, video.mask, video.weights)
    cos = drl.masked_token_frame_cosine(text.tokens, text.mask, video.frames, video.mask)
    terms = drl.wti_terms(cos, t_w.to(cos.dtype), v_w.to(cos.dtype))
    t_idx, v_idx = _valid(text.mask[0]), _valid(video.mask[0])
    ids = text.ids[0, t_idx].tolist()
    tokens, labels = get_tokenizer().token_strings(ids), get_tokenizer().word_labels(ids)
    np_ = lambda x: x.detach().float().cpu().numpy()  # noqa: E731
    return TokenFrameExplanation(
        interaction=interaction, tokens=tokens, labels=labels,
        cosine=np_(cos[0, 0][t_idx][:, v_idx]),
        token_weights=np_(t_w[0, t_idx]), frame_weights=np_(v_w[0, v_idx]),
        token_argmax=np_(terms.token_argmax[0, 0, t_idx]).astype(int),
        frame_argmax=np_(terms.frame_argmax[0, 0, v_idx]).astype(int),
        token_contrib=np_(terms.token_contrib[0, 0, t_idx]), frame_contrib=np_(terms.frame_contrib[0, 0, v_idx]),
        t2v=float(terms.t2v[0, 0]), v2t=float(terms.v2t[0, 0]), score=float(terms.score[0, 0]))


def pooled_explanation(text: TextBank, video: VideoBank) -> PooledExplanation:
    t_idx, v_idx = _valid(text.mask[0]), _valid(video.mask[0])
    frame_cos = (video.frames[0, v_idx] @ text.pooled[0]).float().cpu().numpy()
    score = float(drl.dp_similarity(text.pooled, video.pooled)[0, 0])
    return PooledExplanation(get_tokenizer().token_strings(text.ids[0, t_idx].tolist()), frame_cos, score)


def lexicon_explanation(text: TextBank, video: VideoBank, k: int = 15) -> LexiconExplanation:
    score = float(lexicon_similarity(text.lexicon, video.lexicon)[0, 0])
    q, v = text.lexicon[0].float().cpu().numpy(), video.lexicon[0].float().cpu().numpy()
    return LexiconExplanation(top_words(q, k), top_words(v, k), overlap(q, v), score)


def explain_pair(text: TextBank, video: VideoBank, caption: str, video_index: int, interaction: str,
                 unify: bool, scores: dict[str, float]) -> PairExplanation:
    latent = pooled_explanation(text, video) if interaction == "dp" else \
        token_frame_explanation(text, video, interaction)
    lexicon = lexicon_explanation(text, video) if unify else None
    return PairExplanation(caption, video_index, latent, lexicon, scores)
