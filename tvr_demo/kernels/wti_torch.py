"""The torch path of the fused WTI / TI scorer: blocks of videos x blocks of queries, one matrix product each.

Exact rewrites of `drl.wti_similarity` that make it cheaper than the einsum over (A, B, T, V):
- queries are taken in order of length and token positions masked for every query of a block are dropped before
  the product (a caption has about 14 valid tokens out of 32, so the product shrinks about 2x); they only ever gave
  s = 0, i.e. a 0 inside the max over tokens, which a clamp at 0 restores;
- the cosines of a block are laid out (videos, frames, tokens, queries), so both maxima are element-wise maxima of
  contiguous rows in an array that stays in cache, and the (A, B, T, V) tensor never exists.
"""

from __future__ import annotations

import torch

from tvr_demo.kernels.blocks import block_floats as block_floats_for
from tvr_demo.kernels.blocks import device_memory

TEXT_BLOCK = 32  # queries per block: up to 32 x 32 product columns (the block sweep of bench/scoring_bench.py)


def wti_scores_torch(text: torch.Tensor, text_mask: torch.Tensor, text_weights: torch.Tensor, video: torch.Tensor,
                     video_mask: torch.Tensor, video_weights: torch.Tensor, block_floats: int | None = None
                     ) -> torch.Tensor:
    """drl.wti_similarity computed block by block: text (A, T, D), video (B, V, D) L2-normalised -> (A, B).
    block_floats: cosines per block, by default sized for the device (kernels/blocks.py)."""
    block_floats = block_floats or block_floats_for(device_memory(text.device))
    a_n, t_n, dim = text.shape
    b_n, v_n, _ = video.shape
    out = torch.empty(a_n, b_n, dtype=torch.float32, device=text.device)
    tmask = text_mask.bool()
    vmask = video_mask.to(torch.float32)
    vweights = video_weights.to(torch.float32)
    blocks = []  # per query block: (rows, tokens (D, T' * Ab), weights (T', Ab), whether positions were dropped)
    for rows in torch.argsort(tmask.sum(1), stable=True).split(TEXT_BLOCK):
        m = tmask[rows]  # (Ab, T)
        keep = m.any(0)
        dropped = not bool(keep.all())
        if dropped:  # round T' up to a multiple of 16 with more masked positions: BLAS runs 16 columns faster than 13
            extra = 16 * max(1, -(-int(keep.sum()) // 16)) - int(keep.sum())
            keep[torch.nonzero(~keep).flatten()[:extra]] = True
        q = (text[rows].float() * m[..., None])[:, keep]  # (Ab, T', D): masked tokens zeroed, s = 0 there
        blocks.append((rows, q.transpose(0, 1).reshape(-1, dim).T, text_weights[rows][:, keep].float().T, dropped))
    # zero the masked frames once per video block when many queries share it, else mask the (smaller) cosines
    zero_frames = a_n * t_n > dim
    widest = max(qt.shape[1] for _, qt, _, _ in blocks)
    step = max(1, block_floats // (v_n * widest))
    for b0 in range(0, b_n, step):
        b1 = min(b_n, b0 + step)
        frames = video[b0:b1].float()
        if zero_frames:
            frames = frames * vmask[b0:b1, :, None]
        frames = frames.reshape(-1, dim)  # (Bb * V, D)
        vw = vweights[b0:b1, :, None]  # (Bb, V, 1)
        for rows, qt, tw, dropped in blocks:
            t_k, a_b = tw.shape
            s = torch.mm(frames, qt).view(b1 - b0, v_n, t_k, a_b)  # s[b, v, t, a]
            if not zero_frames:
                s.mul_(vmask[b0:b1, :, None, None])  # masked frames: s = 0, as in the official code
            token_max = s.amax(1)  # (Bb, T', Ab): max over frames
            frame_max = s.amax(2)  # (Bb, V, Ab): max over tokens
            if dropped:
                frame_max.clamp_(min=0.0)  # the dropped (masked) tokens' s = 0 takes part in the max
            t2v = (token_max * tw).sum(1)  # (Bb, Ab)
            v2t = (frame_max * vw).sum(1)
            out[rows, b0:b1] = ((t2v + v2t) * 0.5).T
    return out
