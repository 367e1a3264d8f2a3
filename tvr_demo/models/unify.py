"""UNIFY's lexicon branch (Liu et al. 2024), as docs/unify-design.md interprets it: a sparse, readable vector over CLIP's
BPE vocabulary for every text and video, scored by a dot product and fused with the latent score."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from tvr_demo.data.words import STOP_WORDS


@lru_cache(maxsize=1)
def vocabulary_mask() -> torch.Tensor:
    """(V,) bool over CLIP's BPE vocabulary: whole-word, alphabetic, at least 2 letters, not a stop word.
    Special tokens, word pieces and punctuation are never activated."""
    from tvr_demo.models.backbone import get_tokenizer

    bpe = get_tokenizer().bpe
    mask = torch.zeros(len(bpe.encoder), dtype=torch.bool)
    for token, idx in bpe.encoder.items():
        if token.endswith("</w>"):
            word = token[:-4]
            mask[idx] = word.isalpha() and word.isascii() and len(word) >= 2 and word not in STOP_WORDS
    return mask


@lru_cache(maxsize=1)
def vocabulary_words() -> list[str]:
    """The word of every vocabulary dimension, for display."""
    from tvr_demo.models.backbone import get_tokenizer

    decoder = get_tokenizer().bpe.decoder
    return [decoder[i].replace("</w>", "") for i in range(len(decoder))]


@lru_cache(maxsize=1)
def vocabulary_index() -> torch.Tensor:
    """(V',) the vocabulary dimensions a lexicon may use (the mask's True entries)."""
    return vocabulary_mask().nonzero().flatten()


class LexiconHead(nn.Module):
    """MLM-style head: Linear, GELU, LayerNorm, then a projection onto the vocabulary tied to the token embedding
    matrix (passed in, so it is stored once), plus a bias. Returns pre-activation logits (..., V)."""

    def __init__(self, in_width: int, text_width: int, vocab_size: int, bias_init: float = 0.0) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, text_width)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(text_width)
        self.bias = nn.Parameter(torch.full((vocab_size,), bias_init))

    def forward(self, hidden: torch.Tensor, token_embedding: torch.Tensor,
                vocab_index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the whole vocabulary, or only over `vocab_index` (the same formula on fewer rows of E)."""
        weight, bias = token_embedding, self.bias
        if vocab_index is not None:
            weight, bias = weight[vocab_index], bias[vocab_index]
        return self.norm(self.act(self.dense(hidden))) @ weight.T + bias


def lexicon_logits(head: LexiconHead, hidden: torch.Tensor, mask: torch.Tensor, token_embedding: torch.Tensor,
                   vocab_index: torch.Tensor | None = None) -> torch.Tensor:
    """Max over the valid positions of the head's logits; dims outside the vocabulary mask are -inf.
    (B, L, W), (B, L) -> (B, V). Only valid positions and usable words are projected: a third of the vocabulary and
    most caption positions would otherwise cost (B, L, 49408) activations for nothing. `vocab_index` narrows the
    projection further (training on the caption vocabulary)."""
    vocab = (vocabulary_index() if vocab_index is None else vocab_index).to(hidden.device)
    valid = mask.bool()
    logits = head(hidden[valid], token_embedding, vocab)  # (N_valid, V')
    segment = torch.arange(mask.shape[0], device=hidden.device).repeat_interleave(valid.sum(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # index_reduce is marked beta
        pooled = logits.new_full((mask.shape[0], len(vocab)), float("-inf")).index_reduce(
            0, segment, logits, "amax", include_self=True)
    out = logits.new_full((mask.shape[0], token_embedding.shape[0]), float("-inf"))
    return out.index_copy(1, vocab, pooled)


def lexicon_activation(logits: torch.Tensor) -> torch.Tensor:
    """log(1 + ReLU(.)): non-negative, saturating weights (SPLADE). Max-pooling commutes with it."""
    return torch.log1p(torch.relu(logits))


def topk_sparsify(lexicon: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest dimensions per row (zeros elsewhere): the sparse vectors the gallery index stores."""
    if k >= lexicon.shape[-1]:
        return lexicon
    values, idx = lexicon.topk(k, dim=-1)
    return torch.zeros_like(lexicon).scatter_(-1, idx, values)


def lexicon_similarity(text_lexicon, video_lexicon) -> torch.Tensor:
    """Dot product of non-negative lexicon vectors: sum_j q_j v_j. (A, V), (B, V) -> (A, B), the one lexicon score of
    training, evaluation, the engine and the explanations. Dense tensors multiply as they are; when either side is a
    scipy sparse matrix (the gallery's top-k vectors) both go sparse, so only shared active words cost anything, as in
    an inverted index."""
    import scipy.sparse

    if not (scipy.sparse.issparse(text_lexicon) or scipy.sparse.issparse(video_lexicon)):
        return text_lexicon @ video_lexicon.T

    def csr(x) -> scipy.sparse.csr_matrix:
        return x.tocsr() if scipy.sparse.issparse(x) else scipy.sparse.csr_matrix(x.float().cpu().numpy())

    return torch.from_numpy((csr(text_lexicon) @ csr(video_lexicon).T).toarray())


def bag_of_words(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, L) token ids -> (B, V) {0, 1}: which vocabulary entries each caption contains (padding id 0 dropped)."""
    bow = torch.zeros(ids.shape[0], vocab_size, device=ids.device)
    bow.scatter_(1, ids, 1.0)
    bow[:, 0] = 0.0
    return bow * vocabulary_mask().to(ids.device)


@dataclass
class WordContribution:
    word: str
    query_weight: float
    item_weight: float

    @property
    def contribution(self) -> float:
        return self.query_weight * self.item_weight


def top_words(lexicon: np.ndarray, k: int = 15) -> list[tuple[str, float]]:
    """The k most activated words of one lexicon vector (V,)."""
    words = vocabulary_words()
    idx = np.argsort(-lexicon)[:k]
    return [(words[i], float(lexicon[i])) for i in idx if lexicon[i] > 0]


def overlap(query: np.ndarray, item: np.ndarray) -> list[WordContribution]:
    """Words active on both sides with q_j * v_j, largest first; their contributions sum to the lexicon score."""
    words = vocabulary_words()
    both = np.nonzero((query > 0) & (item > 0))[0]
    out = [WordContribution(words[j], float(query[j]), float(item[j])) for j in both]
    return sorted(out, key=lambda w: -w.contribution)
