"""The two ways of scoring WTI that the fused scorer is measured against, written from the official DRL code's evaluation.

(a) `official_loop`: what the official DRL evaluation does: 32 x 32 blocks of (texts, videos), the weight heads and the
    L2 normalisation re-run inside every block, the (32, 32, T, V) cosines masked by two einsums, and a host copy of
    every block's scores (`.cpu().numpy()`) before the next block starts.
(a') `official_prepared`: the same loop over the PREPARED gallery (weights and normalisation once, as the engine's
    cache holds them), so that a single query's (a) vs (c) ratio splits into caching ((a) vs (a')) and scoring
    ((a') vs (c)).
(b) `batched`: the straightforward batched version: weights and normalisation once, then one einsum over the whole
    gallery per block of queries and the masked maxima (`drl.wti_similarity`; `scoring.similarity_matrix` uses the
    fused scorer (c) instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tvr_demo.models import drl


@dataclass
class Prepared:
    """Scoring-ready features: L2-normalised, weights from the heads, computed once."""

    feats: torch.Tensor  # (N, L, D)
    mask: torch.Tensor  # (N, L)
    weights: torch.Tensor  # (N, L)


@torch.no_grad()
def prepare(raw: torch.Tensor, mask: torch.Tensor, head: nn.Module | None, chunk: int = 4096) -> Prepared:
    """Weights (softmax of the head over valid positions; uniform for TI) and normalisation, once (the head runs
    on chunks of rows so a large gallery's hidden activations stay small)."""
    logits = None
    if head is not None:
        logits = torch.cat([head(raw[s:s + chunk]).squeeze(-1) for s in range(0, raw.shape[0], chunk)])
    return Prepared(drl.l2_normalize(raw), mask, drl.interaction_weights(logits, mask))


@torch.no_grad()
def official_loop(text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor,
                  text_head: nn.Module | None, video_head: nn.Module | None, block: int = 32) -> np.ndarray:
    """(a) Scores (A, B) from unnormalised features, block by block as the official evaluation loop computes them
    (WTI with heads, TI without)."""
    rows = []
    for a0 in range(0, text.shape[0], block):
        t, tm = text[a0:a0 + block], text_mask[a0:a0 + block].float()
        row = []
        for b0 in range(0, video.shape[0], block):
            v, vm = video[b0:b0 + block], video_mask[b0:b0 + block].float()
            if text_head is not None:
                tw = text_head(t).squeeze(2).masked_fill(tm == 0, float("-inf")).softmax(-1)
                vw = video_head(v).squeeze(2).masked_fill(vm == 0, float("-inf")).softmax(-1)
            tn = t / t.norm(dim=-1, keepdim=True)
            vn = v / v.norm(dim=-1, keepdim=True)
            logits = torch.einsum("atd,bvd->abtv", tn, vn)
            logits = torch.einsum("abtv,at->abtv", logits, tm)
            logits = torch.einsum("abtv,bv->abtv", logits, vm)
            t2v, _ = logits.max(dim=-1)  # (a, b, t)
            v2t, _ = logits.max(dim=-2)  # (a, b, v)
            if text_head is not None:
                t2v = torch.einsum("abt,at->ab", t2v, tw)
                v2t = torch.einsum("abv,bv->ab", v2t, vw)
            else:
                t2v = t2v.sum(2) / tm.sum(-1)[:, None]
                v2t = v2t.sum(2) / vm.sum(-1)[None, :]
            row.append(((t2v + v2t) / 2.0).cpu().numpy())
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


@torch.no_grad()
def official_loop_prepared(text: Prepared, video: Prepared, block: int = 32) -> np.ndarray:
    """(a') The official loop's 32 x 32 blocks, einsum masking and per-block host copy, on prepared features: no
    weight head and no normalisation inside the loop."""
    rows = []
    for a0 in range(0, text.feats.shape[0], block):
        t, tm, tw = (x[a0:a0 + block] for x in (text.feats, text.mask.float(), text.weights))
        row = []
        for b0 in range(0, video.feats.shape[0], block):
            v, vm, vw = (x[b0:b0 + block] for x in (video.feats, video.mask.float(), video.weights))
            logits = torch.einsum("atd,bvd->abtv", t, v)
            logits = torch.einsum("abtv,at->abtv", logits, tm)
            logits = torch.einsum("abtv,bv->abtv", logits, vm)
            t2v = torch.einsum("abt,at->ab", logits.max(dim=-1)[0], tw)
            v2t = torch.einsum("abv,bv->ab", logits.max(dim=-2)[0], vw)
            row.append(((t2v + v2t) / 2.0).cpu().numpy())
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


@torch.no_grad()
def batched(text: Prepared, video: Prepared, block: int = 64) -> torch.Tensor:
    """(b) Scores (A, B): one (block, B, T, V) einsum per block of queries through drl.wti_similarity."""
    return torch.cat([drl.wti_similarity(text.feats[s:s + block], text.mask[s:s + block],
                                         text.weights[s:s + block], video.feats, video.mask, video.weights)
                      for s in range(0, text.feats.shape[0], block)])
