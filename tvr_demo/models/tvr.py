"""The retrieval model: CLIP towers + DRL's temporal module and interaction + (optionally) UNIFY's lexicon heads.

Parameter names follow the official DRL code (`clip.*`, `transformerClip.*`, `frame_position_embeddings`,
`{text,video}_weight_fc.*`), so an official checkpoint loads strictly into this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tvr_demo.models import drl
from tvr_demo.models.backbone import build_clip, text_token_features, video_frame_features
from tvr_demo.models.config import Interaction, ModelConfig
from tvr_demo.models.unify import LexiconHead, lexicon_activation, lexicon_logits

LOGIT_SCALE_MAX = 100.0  # CLIP and DRL: exp(logit_scale) never passes 100 (clamped after every step)
DRL_MODULES = ("frame_position_embeddings", "transformerClip", "text_weight_fc", "video_weight_fc")


@torch.no_grad()
def _drl_init(module: nn.Module) -> None:
    """DRL's init_weights: Linear and Embedding weights N(0, 0.02), Linear biases 0, LayerNorms 1 and 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.normal_(mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        module.weight.fill_(1.0)
        module.bias.zero_()
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.zero_()


@dataclass
class TextFeatures:
    tokens: torch.Tensor  # (B, T, D) per-token features, unnormalised
    mask: torch.Tensor  # (B, T) 1 for SOT..EOT
    ids: torch.Tensor  # (B, T) BPE ids, for display and lexicon grounding
    weight_logits: torch.Tensor | None  # (B, T) WTI text_weight_fc output (None without WTI)
    lexicon_logits: torch.Tensor | None  # (B, V) max-pooled lexicon head output (None without UNIFY)


@dataclass
class VideoFeatures:
    frames: torch.Tensor  # (B, V, D) per-frame features after the temporal module, unnormalised
    mask: torch.Tensor  # (B, V) 1 for real frames, 0 for padding
    weight_logits: torch.Tensor | None  # (B, V)
    lexicon_logits: torch.Tensor | None  # (B, Vocab)


class TVRModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = build_clip(config.clip)
        width = config.embed_dim
        if config.temporal == "seqTransf":
            context = config.clip["text_cfg"]["context_length"]
            self.frame_position_embeddings = nn.Embedding(context, width)  # DRL: Embedding(context_length, width)
            self.transformerClip = drl.TemporalTransformer(width, config.temporal_layers, max(1, width // 64))
        if config.latent_interaction == "wti":
            self.text_weight_fc = drl.weight_head(width, config.wti_arch)
            self.video_weight_fc = drl.weight_head(width, config.wti_arch)
        if config.unify is not None:
            vocab, bias = config.clip["text_cfg"]["vocab_size"], config.unify.head_bias_init
            self.text_lexicon_head = LexiconHead(config.text_width, config.text_width, vocab, bias)
            self.video_lexicon_head = LexiconHead(width, config.text_width, vocab, bias)
        self.lexicon_vocab: torch.Tensor | None = None  # training may narrow the lexicon to its captions' words

    def init_drl_modules(self) -> None:
        """DRL's initialisation of the modules it adds to CLIP, so the WTI heads start with near-zero logits (nearly
        uniform weights). DRL applies it to the whole model and then loads CLIP's weights over CLIP: the same thing
        for the modules here; CLIP itself keeps open_clip's init or the weights loaded next."""
        for name in DRL_MODULES:
            if hasattr(self, name):
                getattr(self, name).apply(_drl_init)

    @torch.no_grad()
    def init_from_clip_text(self) -> None:
        """DRL's initialisation trick: the temporal module starts as CLIP's text blocks 0-3 and its positions as the
        text positional embedding (possible when the widths agree)."""
        if self.config.temporal != "seqTransf" or self.config.text_width != self.config.embed_dim:
            return
        self.frame_position_embeddings.weight.copy_(self.clip.positional_embedding)
        for i, block in enumerate(self.transformerClip.resblocks):
            block.load_state_dict(self.clip.transformer.resblocks[i].state_dict())

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> TextFeatures:
        hidden, tokens = text_token_features(self.clip, ids, None if self.config.text_attention == "causal" else mask)
        tokens = tokens.float()
        weights = self.text_weight_fc(tokens).squeeze(-1) if hasattr(self, "text_weight_fc") else None
        lexicon = None
        if self.config.unify is not None:
            lexicon = lexicon_logits(self.text_lexicon_head, hidden.float(), mask,
                                     self.clip.token_embedding.weight.float(), self.lexicon_vocab)
        return TextFeatures(tokens, mask, ids, weights, lexicon)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> VideoFeatures:
        """frames (B, V, 3, R, R) normalised floats, mask (B, V)."""
        feats = video_frame_features(self.clip, frames).float()
        if self.config.temporal == "seqTransf":
            feats = drl.seq_transf(feats, mask, self.frame_position_embeddings, self.transformerClip)
        weights = self.video_weight_fc(feats).squeeze(-1) if hasattr(self, "video_weight_fc") else None
        lexicon = None
        if self.config.unify is not None:
            lexicon = lexicon_logits(self.video_lexicon_head, feats, mask, self.clip.token_embedding.weight.float(),
                                     self.lexicon_vocab)
        return VideoFeatures(feats, mask, weights, lexicon)

    def forward(self, ids: torch.Tensor, text_mask: torch.Tensor, frames: torch.Tensor, video_mask: torch.Tensor
                ) -> tuple[TextFeatures, VideoFeatures]:
        """Both towers at once (what DistributedDataParallel wraps during training)."""
        return self.encode_text(ids, text_mask), self.encode_video(frames, video_mask)

    def similarity(self, text: TextFeatures, video: VideoFeatures, interaction: Interaction | None = None
                   ) -> torch.Tensor:
        """The latent retrieval score S (A, B), unscaled (evaluation uses it as is; training multiplies by the
        logit scale)."""
        interaction = interaction or self.config.latent_interaction
        if interaction == "dp":
            return drl.dp_similarity(drl.l2_normalize(drl.eot_features(text.tokens, text.mask)),
                                     drl.mean_pooled_frames(video.frames, video.mask))
        t_w = drl.weights_for(interaction, text.mask, drl.interaction_weights(text.weight_logits, text.mask))
        v_w = drl.weights_for(interaction, video.mask, drl.interaction_weights(video.weight_logits, video.mask))
        return drl.wti_similarity(drl.l2_normalize(text.tokens), text.mask, t_w,
                                  drl.l2_normalize(video.frames), video.mask, v_w)

    @staticmethod
    def lexicon(features: TextFeatures | VideoFeatures) -> torch.Tensor:
        """The non-negative lexicon vector (B, V) of UNIFY."""
        return lexicon_activation(features.lexicon_logits)

    def logit_scale(self) -> torch.Tensor:
        """exp(logit_scale) clamped at LOGIT_SCALE_MAX, as CLIP and DRL train."""
        return self.clip.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """After every optimiser step, as DRL: the stored log-scale never passes log(LOGIT_SCALE_MAX)."""
        self.clip.logit_scale.clamp_(max=math.log(LOGIT_SCALE_MAX))
