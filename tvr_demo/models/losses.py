"""Training objectives: symmetric InfoNCE, DRL's CDCR (variants 1-3), and UNIFY's grounding, sparsity and distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tvr_demo.models.drl import masked_token_frame_cosine

# ---------------------------------------------------------------- contrastive


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """DRL's CrossEn on S and S^T: matched pairs on the diagonal of a (B, B) logit matrix."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# ---------------------------------------------------------------- CDCR


def standardize_columns(x: torch.Tensor) -> torch.Tensor:
    """Each channel standardised by its own mean and unbiased std over rows (DRL, Barlow Twins)."""
    return (x - x.mean(0)) / x.std(0)


def cross_correlation(x: torch.Tensor, y: torch.Tensor, row_weights: torch.Tensor | None = None,
                      denominator: float | None = None) -> torch.Tensor:
    """c = X^T diag(w) Y / N over standardised rows of matched pairs; (N, D), (N, D) -> (D, D)."""
    x, y = standardize_columns(x), standardize_columns(y)
    if row_weights is not None:
        x = x * row_weights[:, None]
    return x.T @ y / (x.shape[0] if denominator is None else denominator)


def decorrelation_loss(c: torch.Tensor, alpha1: float, alpha2: float) -> torch.Tensor:
    """alpha1 * sum_i (c_ii - 1)^2 + alpha2 * sum_{i != j} c_ij^2."""
    diag = torch.diagonal(c)
    on = (diag - 1).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return alpha1 * on + alpha2 * off


def matched_pairs(text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor,
                  text_weights: torch.Tensor, video_weights: torch.Tensor):
    """The rows CDCR variants 2 and 3 correlate, from the positive pairs (text i <-> video i) only: every valid
    token with its argmax frame, every valid frame with its argmax token, and each row's softmax weight."""
    n = text.shape[0]
    cos = torch.stack([masked_token_frame_cosine(text[i : i + 1], text_mask[i : i + 1], video[i : i + 1],
                                                 video_mask[i : i + 1])[0, 0] for i in range(n)])  # (N, T, V)
    rows = torch.arange(n, device=text.device)[:, None]
    frame_of_token = video[rows, cos.argmax(2)]  # (N, T, D)
    token_of_frame = text[rows, cos.argmax(1)]  # (N, V, D)
    t_valid, v_valid = text_mask.bool(), video_mask.bool()
    return ((text[t_valid], frame_of_token[t_valid], text_weights[t_valid]),
            (video[v_valid], token_of_frame[v_valid], video_weights[v_valid]))


def cdcr_correlation(variant: int, text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor,
                     video_mask: torch.Tensor, text_weights: torch.Tensor | None = None,
                     video_weights: torch.Tensor | None = None, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """The (D, D) cross-correlation of DRL's CDCR variant 1, 2 or 3 over L2-normalised tokens / frames of matched
    pairs (text i <-> video i). Variant 3 needs the WTI weights."""
    n = text.shape[0]
    if variant == 1:  # one random valid token and one random valid frame per pair
        t_len, v_len = text_mask.sum(1), video_mask.sum(1)
        t_idx = torch.randint(0, 10000, (n,), generator=generator).to(text.device) % t_len
        v_idx = torch.randint(0, 10000, (n,), generator=generator).to(text.device) % v_len
        rows = torch.arange(n, device=text.device)
        return cross_correlation(text[rows, t_idx], video[rows, v_idx])
    if text_weights is None or video_weights is None:
        text_weights, video_weights = text_mask.float(), video_mask.float()
    (t, t_frame, t_w), (v, v_token, v_w) = matched_pairs(text, text_mask, video, video_mask, text_weights,
                                                         video_weights)
    if variant == 2:
        return (cross_correlation(t, t_frame) + cross_correlation(v, v_token)) / 2
    if variant == 3:  # each row weighted by its softmax weight, summed and divided by the batch size (official)
        return (cross_correlation(t, t_frame, t_w, n) + cross_correlation(v, v_token, v_w, n)) / 2
    raise ValueError(f"CDCR variant must be 1, 2 or 3, got {variant}")


def pooled_correlation(text_pooled: torch.Tensor, video_pooled: torch.Tensor) -> torch.Tensor:
    """CDCR for `dp`: the cross-correlation of the pooled (EOT, mean-frame) features of matched pairs."""
    return cross_correlation(text_pooled, video_pooled)


# ---------------------------------------------------------------- UNIFY


def flops_regularizer(lexicon: torch.Tensor) -> torch.Tensor:
    """SPLADE's FLOPS: sum over vocabulary dimensions of the squared batch-mean activation. (B, V) -> scalar."""
    return lexicon.mean(0).pow(2).sum()


def bag_of_words_loss(video_logits: torch.Tensor, targets: torch.Tensor, vocab_mask: torch.Tensor) -> torch.Tensor:
    """Stage-1 grounding: the video lexicon should activate its captions' content words (multi-label BCE over the
    vocabulary mask). video_logits (B, V) pre-activation, targets (B, V) in {0, 1}, vocab_mask (V,) bool."""
    usable = vocab_mask & torch.isfinite(video_logits).all(0)  # words outside a narrowed training vocabulary: -inf
    logits, targets = video_logits[:, usable], targets[:, usable]
    pos = targets.sum().clamp(min=1.0)
    neg = (1 - targets).sum().clamp(min=1.0)
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (per_entry * targets).sum() / pos + (per_entry * (1 - targets)).sum() / neg  # balanced: few positives


def self_distillation(latent_logits: torch.Tensor, lexicon_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Two-way KL between the in-batch softmax distributions of the latent and lexicon scores, each direction with its
    teacher detached, over both retrieval directions."""
    loss = latent_logits.new_zeros(())
    for a, b in ((latent_logits, lexicon_logits), (latent_logits.T, lexicon_logits.T)):
        log_p, log_q = F.log_softmax(a / tau, -1), F.log_softmax(b / tau, -1)
        loss = loss + F.kl_div(log_q, log_p.detach(), log_target=True, reduction="batchmean")
        loss = loss + F.kl_div(log_p, log_q.detach(), log_target=True, reduction="batchmean")
    return loss / 2
