"""Fused token-wise (WTI / TI) scorers: a Triton kernel on CUDA, a blocked torch path everywhere.

Both compute exactly what `drl.wti_similarity` defines (tests/test_kernels.py pins them to it) without building the
(A, B, T, V) cosine tensor: per block of videos, the token x frame cosines, the two masked maxima and the weighted
sums are done in one pass. On a CUDA device the kernel serves a regime (a search's few queries, a score matrix's many)
only after it passed a self-check there and beat the torch path on it (selfcheck.py, race.py).
"""

from __future__ import annotations

import torch

from tvr_demo.kernels.selfcheck import ScoringPath, kernel_failed, serving_path
from tvr_demo.kernels.wti_torch import wti_scores_torch


def wti_scores(text: torch.Tensor, text_mask: torch.Tensor, text_weights: torch.Tensor, video: torch.Tensor,
               video_mask: torch.Tensor, video_weights: torch.Tensor) -> torch.Tensor:
    """Token-wise scores (A, B) in float32; same arguments and result as `drl.wti_similarity` (TI with uniform
    weights). text (A, T, D) and video (B, V, D) L2-normalised, masks (A, T) / (B, V), weights zero where masked."""
    config = serving_path(text.device).config_for(text.shape[0]) if text.is_cuda else None
    if config is not None:
        from tvr_demo.kernels.wti_triton import wti_scores_triton

        try:
            return wti_scores_triton(text, text_mask, text_weights, video, video_mask, video_weights, config)
        except torch.cuda.OutOfMemoryError:
            raise  # the caller halves its block and retries
        except Exception as err:  # a shape the self-check did not compile for: the torch path serves from now on
            kernel_failed(text.device, err)
    return wti_scores_torch(text, text_mask, text_weights, video, video_mask, video_weights)


__all__ = ["ScoringPath", "serving_path", "wti_scores", "wti_scores_torch"]
