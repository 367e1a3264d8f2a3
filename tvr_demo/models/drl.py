"""DRL (Wang et al. 2022) as the official code computes it: seqTransf, WTI / TI / DP; each formula written once.

Training, evaluation, the engine's blocked scorer and the explain view all call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from open_clip.transformer import LayerNorm, QuickGELU, Transformer
from torch import nn

# ---------------------------------------------------------------- temporal module (seqTransf)


class TemporalTransformer(nn.Module):
    """DRL's `transformerClip`: CLIP residual blocks with QuickGELU and TF-style LayerNorm (eps 1e-12)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.resblocks = Transformer(width, layers, heads, act_layer=QuickGELU,
                                     norm_layer=partial(LayerNorm, eps=1e-12)).resblocks

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, V, D), mask (B, V) -> (B, V, D); padded frames are hidden from every query by an additive -1e6."""
        v = x.shape[1]
        additive = ((1.0 - mask.to(x.dtype)) * -1000000.0)[:, None, :].expand(-1, v, -1)  # (B, V_q, V_k)
        additive = additive.repeat_interleave(self.heads, dim=0)  # (B * heads, V, V), as nn.MultiheadAttention wants
        for block in self.resblocks:
            x = block(x, attn_mask=additive)
        return x


def seq_transf(frames: torch.Tensor, mask: torch.Tensor, position_embeddings: nn.Embedding,
               transformer: TemporalTransformer) -> torch.Tensor:
    """DRL's agg_video_feat('seqTransf'): blocks(frames + positions) + the ORIGINAL frames (no position in the skip)."""
    positions = position_embeddings(torch.arange(frames.shape[1], device=frames.device))  # (V, D)
    return transformer(frames + positions, mask) + frames


# ---------------------------------------------------------------- WTI weight heads


def weight_head(width: int, arch: int = 2) -> nn.Module:
    """DRL's text/video_weight_fc: wti_arch 1 is Linear; 2 is Linear-ReLU-Linear; 3 has two hidden layers."""
    if arch == 1:
        return nn.Linear(width, 1)
    layers: list[nn.Module] = []
    for _ in range(arch - 1):
        layers += [nn.Linear(width, width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def interaction_weights(logits: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """Per-token (or per-frame) weights over the valid positions: softmax of the head's logits (WTI), or uniform
    (TI, where the official code divides by the count of valid positions). (N, L) -> (N, L), rows sum to 1."""
    mask = mask.to(torch.float32)
    if logits is None:
        return mask / mask.sum(-1, keepdim=True).clamp(min=1.0)
    return logits.float().masked_fill(mask == 0, float("-inf")).softmax(-1)


def weights_for(interaction: str, mask: torch.Tensor, head_weights: torch.Tensor | None) -> torch.Tensor:
    """Which weights an interaction uses, decided here only: WTI its heads' softmax (`interaction_weights` of the
    logits, as the banks cache them), every other interaction (TI; DP does not weigh) and a model without heads
    uniform weights over the valid positions. (N, L) -> (N, L)."""
    if interaction == "wti" and head_weights is not None:
        return head_weights
    return interaction_weights(None, mask)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------- token-wise interaction (WTI and TI)


def masked_token_frame_cosine(text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor,
                              video_mask: torch.Tensor) -> torch.Tensor:
    """s[a,b,t,v] = <t_at, v_bv> * tmask[a,t] * vmask[b,v] on L2-normalised features; masked entries are 0 (not -inf)
    before the max, exactly as the official code. text (A, T, D), video (B, V, D) -> (A, B, T, V)."""
    cos = torch.einsum("atd,bvd->abtv", text, video)
    return cos * text_mask[:, None, :, None].to(cos.dtype) * video_mask[None, :, None, :].to(cos.dtype)


@dataclass
class WTITerms:
    """The pieces of the token-wise score for every (text a, video b) pair in a block."""

    token_contrib: torch.Tensor  # (A, B, T): w_t[a,t] * max_v s[a,b,t,v]; sums over t to t2v
    frame_contrib: torch.Tensor  # (A, B, V): w_v[b,v] * max_t s[a,b,t,v]; sums over v to v2t
    token_argmax: torch.Tensor  # (A, B, T): the frame each token matched
    frame_argmax: torch.Tensor  # (A, B, V): the token each frame matched

    @property
    def t2v(self) -> torch.Tensor:
        return self.token_contrib.sum(-1)

    @property
    def v2t(self) -> torch.Tensor:
        return self.frame_contrib.sum(-1)

    @property
    def score(self) -> torch.Tensor:
        """S = (t2v + v2t) / 2, the retrieval score (A, B)."""
        return (self.t2v + self.v2t) / 2


def wti_terms(cos: torch.Tensor, text_weights: torch.Tensor, video_weights: torch.Tensor) -> WTITerms:
    """t2v[a,b] = sum_t w_t[a,t] max_v s[a,b,t,v]; v2t[a,b] = sum_v w_v[b,v] max_t s[a,b,t,v]."""
    token_max, token_argmax = cos.max(dim=3)  # (A, B, T)
    frame_max, frame_argmax = cos.max(dim=2)  # (A, B, V)
    return WTITerms(token_max * text_weights[:, None, :], frame_max * video_weights[None, :, :],
                    token_argmax, frame_argmax)


def wti_similarity(text: torch.Tensor, text_mask: torch.Tensor, text_weights: torch.Tensor, video: torch.Tensor,
                   video_mask: torch.Tensor, video_weights: torch.Tensor) -> torch.Tensor:
    """Token-wise score (A, B) of L2-normalised tokens (A, T, D) and frames (B, V, D); TI when weights are uniform."""
    cos = masked_token_frame_cosine(text, text_mask, video, video_mask)
    return wti_terms(cos, text_weights.to(cos.dtype), video_weights.to(cos.dtype)).score


# ---------------------------------------------------------------- dot product on pooled features (DP / meanP)


def eot_features(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The EOT token's feature (the last valid position), CLIP's sentence embedding. (B, T, D) -> (B, D)."""
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), mask.sum(-1) - 1]


def mean_pooled_frames(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of L2-normalised frames, re-normalised (DRL `dp`, CLIP4Clip meanP). (B, V, D) -> (B, D)."""
    m = mask.to(frames.dtype)[..., None]
    pooled = (l2_normalize(frames) * m).sum(1) / m.sum(1).clamp(min=1.0)
    return l2_normalize(pooled)


def dp_similarity(text_pooled: torch.Tensor, video_pooled: torch.Tensor) -> torch.Tensor:
    """Cosine of the EOT text feature and the mean-pooled video, both already L2-normalised. -> (A, B)."""
    return text_pooled @ video_pooled.T
