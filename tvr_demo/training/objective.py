"""The training objective of every configuration: InfoNCE on S, plus CDCR (DRL) or UNIFY's staged lexicon losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tvr_demo.models import TextFeatures, TVRModel, VideoFeatures, drl
from tvr_demo.models.losses import (
    bag_of_words_loss,
    cdcr_correlation,
    decorrelation_loss,
    flops_regularizer,
    pooled_correlation,
    self_distillation,
    symmetric_infonce,
)
from tvr_demo.models.unify import bag_of_words, lexicon_activation, lexicon_similarity, vocabulary_mask


@dataclass
class LossTerms:
    total: torch.Tensor
    parts: dict[str, float]


def unify_stage(progress: float, stage1_fraction: float) -> tuple[int, float]:
    """(stage, FLOPS ramp) at a fraction `progress` of training: stage 1 activates, stage 2 suppresses with the
    FLOPS weight ramped up quadratically over its first half (SPLADE's schedule)."""
    if progress < stage1_fraction:
        return 1, 0.0
    into = (progress - stage1_fraction) / max(1e-8, 1 - stage1_fraction)
    return 2, min(1.0, (2 * into) ** 2)


def training_loss(model: TVRModel, text: TextFeatures, video: VideoFeatures, video_words: torch.Tensor | None = None,
                  progress: float = 0.0) -> LossTerms:
    """Matched pairs on the diagonal (text i <-> video i). video_words (B, Vocab): content words of all captions of
    each video (UNIFY's stage-1 grounding target). progress in [0, 1] drives UNIFY's stages."""
    config = model.config
    scale = model.logit_scale()
    latent = model.similarity(text, video)  # (B, B) unscaled
    latent_logits = scale * latent
    loss = symmetric_infonce(latent_logits)
    parts = {"contrastive": float(loss.detach())}

    if config.cdcr.variant and config.unify is None:
        if config.interaction == "dp":
            c = pooled_correlation(drl.l2_normalize(drl.eot_features(text.tokens, text.mask)),
                                   drl.mean_pooled_frames(video.frames, video.mask))
        else:
            c = cdcr_correlation(config.cdcr.variant, drl.l2_normalize(text.tokens), text.mask,
                                 drl.l2_normalize(video.frames), video.mask,
                                 drl.weights_for(config.interaction, text.mask,
                                                 drl.interaction_weights(text.weight_logits, text.mask)),
                                 drl.weights_for(config.interaction, video.mask,
                                                 drl.interaction_weights(video.weight_logits, video.mask)))
        cdcr = decorrelation_loss(c, config.cdcr.alpha1, config.cdcr.alpha2)
        loss = loss + config.cdcr.weight * cdcr
        parts["cdcr"] = float(cdcr.detach())

    if config.unify is not None:
        u = config.unify
        stage, ramp = unify_stage(progress, u.stage1_fraction)
        t_lex, v_lex = lexicon_activation(text.lexicon_logits), lexicon_activation(video.lexicon_logits)
        if stage == 1:  # activation: each text may only use the dimensions of its own words
            own = torch.zeros_like(t_lex).scatter_(1, text.ids, 1.0)
            t_lex = t_lex * own
        lex = lexicon_similarity(t_lex, v_lex)  # (B, B)
        lex_logits = lex / u.lexicon_temperature
        lexicon_nce = symmetric_infonce(lex_logits)
        loss = loss + lexicon_nce
        parts["lexicon"] = float(lexicon_nce.detach())
        if stage == 1:  # grounding: the text lexicon lights its own content words, the video lexicon its captions'
            vocab = vocabulary_mask().to(lex.device)  # (on pre-activation logits: ReLU passes no gradient to an off word)
            bow = bag_of_words_loss(text.lexicon_logits, bag_of_words(text.ids, vocab.shape[0]), vocab)
            if video_words is not None:
                bow = bow + bag_of_words_loss(video.lexicon_logits, video_words, vocab)
            loss = loss + u.bow_weight * bow
            parts["bow"] = float(bow.detach())
        if stage == 2:
            flops = flops_regularizer(t_lex) + flops_regularizer(v_lex)
            loss = loss + ramp * u.flops_weight * flops
            parts["flops"] = float(flops.detach())
        distill = self_distillation(latent_logits, lex_logits, u.distill_tau)
        loss = loss + u.distill_weight * distill
        parts["distill"] = float(distill.detach())
    return LossTerms(loss, parts)
