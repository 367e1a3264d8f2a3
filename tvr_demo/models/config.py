"""Model configuration as dataclasses; every default names its source: the paper, the official code, or our UNIFY
design (docs/unify-design.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tvr_demo.data.video import FrameSampling

Interaction = Literal["wti", "ti", "dp"]
Temporal = Literal["seqTransf", "meanP"]
TextAttention = Literal["causal", "bidirectional"]


@dataclass
class CDCRConfig:
    """Channel DeCorrelation Regularisation (DRL, training only)."""

    variant: int = 0  # DRL `--cdcr`: 0 off, 1 random token/frame, 2 argmax pairs, 3 argmax pairs weighted (with WTI)
    alpha1: float = 1.0  # DRL default: weight of sum_i (c_ii - 1)^2
    alpha2: float = 0.06  # DRL default; every shipped DRL training command sets 0 (no decorrelation)
    weight: float = 0.001  # DRL `cdcr_lambda`


@dataclass
class UnifyConfig:
    """UNIFY's lexicon branch (a documented interpretation: no official code exists; docs/unify-design.md)."""

    top_k: int = 64  # our design: dimensions kept per item at inference (sparse gallery)
    train_vocabulary: str = "captions"  # "captions": training projects onto the words of the training captions only
    # (sampled-softmax style: other words start off and nothing asks them on; a 100x cheaper step on a CPU), "full":
    # the whole vocabulary mask. Inference always uses the whole mask.
    head_bias_init: float = -1.0  # every word starts off (a scratch MLM head would light up half the vocabulary,
    # and 49k small activations make unbounded dot products); a word turns on only when training grounds it
    latent: Interaction = "dp"  # our design: CLIP4Clip meanP latent branch by default; "wti" gives DRL+UNIFY
    stage1_fraction: float = 0.3  # share of training steps in stage 1 (activation); the rest is stage 2 (suppression)
    bow_weight: float = 1.0  # stage 1 bag-of-words grounding (text: its own words; video: its captions' words)
    flops_weight: float = 0.01  # stage 2 FLOPS regulariser weight, reached by a quadratic ramp (SPLADE)
    distill_weight: float = 1.0  # two-way self-distillation between latent and lexicon in-batch distributions
    distill_tau: float = 1.0  # temperature on top of each branch's own logits (latent x logit scale, lexicon / its temperature)
    lexicon_temperature: float = 1.0  # lexicon scores are unbounded dot products; InfoNCE uses them as logits / this
    fusion_lambda: float = 1.0  # fused = z(latent) + lambda * z(lexicon); chosen on the validation split after training


@dataclass
class ModelConfig:
    """A text-video retrieval model: CLIP towers, a temporal module, an interaction, optional CDCR and UNIFY."""

    clip_name: str = "tvr-tiny"  # an open_clip model config name (ours are in assets/model_configs)
    clip: dict[str, Any] = field(default_factory=dict)  # the open_clip config itself, stored so checkpoints stand alone
    max_words: int = 32  # DRL: SOT + 30 BPE tokens + EOT
    max_frames: int = 12  # DRL: 12 frames
    framerate: float = 1.0  # DRL: frames sampled per second
    temporal: Temporal = "seqTransf"  # DRL's reported results all use seqTransf; CLIP4Clip meanP has none
    temporal_layers: int = 4  # DRL: 4 blocks, initialised from CLIP text blocks 0-3
    interaction: Interaction = "wti"
    wti_arch: int = 2  # DRL: weight head Linear-ReLU-Linear
    text_attention: TextAttention = "causal"  # CLIP's and DRL's: a token reads only the words before it, so only
    # <eot> has read the whole caption. "bidirectional" (a departure, docs/wti-weights.md) lets every token read all of it
    cdcr: CDCRConfig = field(default_factory=CDCRConfig)
    unify: UnifyConfig | None = None

    @property
    def embed_dim(self) -> int:
        return int(self.clip["embed_dim"])

    @property
    def image_size(self) -> int:
        size = self.clip["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else size[0])

    @property
    def text_width(self) -> int:
        return int(self.clip["text_cfg"]["width"])

    def sampling(self, end_s: float | None = None) -> FrameSampling:
        """The frames this model sees of a clip: its frame count and rate, within a benchmark's window when it has one
        (DiDeMo's first 31 s, `Benchmark.end_s`). Every decode for this model (gallery, training, uploads, thumbnails)
        asks here, so none rebuilds the rule."""
        from tvr_demo.data.video import FrameSampling

        return FrameSampling(self.max_frames, self.framerate, end_s=end_s)

    @property
    def latent_interaction(self) -> Interaction:
        """The interaction of the latent (dense) branch."""
        return self.unify.latent if self.unify is not None else self.interaction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        data = dict(data)
        data["cdcr"] = CDCRConfig(**data.get("cdcr", {}))
        if data.get("unify") is not None:
            data["unify"] = UnifyConfig(**data["unify"])
        return cls(**data)
