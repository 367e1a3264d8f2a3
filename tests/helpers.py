"""Shared test helpers: small CLIP configs in the official layout, the official checkpoint format, tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tvr_demo.models import ModelConfig, TVRModel
from tvr_demo.models.backbone import clip_config

# What the official code's `convert_weights` turns to fp16 inside `clip.` (Conv/Linear weights and biases, the
# attention's packed in-projection, text_projection and visual.proj); everything else stays fp32.
_FP16_SUFFIXES = (
    "conv1.weight",
    "attn.in_proj_weight",
    "attn.in_proj_bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
    "text_projection",
    "visual.proj",
)

BLOCK_KEYS = (
    "ln_1.weight",
    "ln_1.bias",
    "attn.in_proj_weight",
    "attn.in_proj_bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)


def small_clip_config(
    width: int = 128, vision_width: int = 128, image_size: int = 64, patch_size: int = 32, layers: int = 2
) -> dict[str, Any]:
    """A small open_clip config that the official code could build: 64-wide heads, text width = embed dim
    (DRL's temporal module is built at the text width), full CLIP vocabulary and context 77."""
    return {
        "embed_dim": width,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": vision_width,
            "head_width": 64,
            "patch_size": patch_size,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": width,
            "heads": width // 64,
            "layers": layers,
        },
    }


def official_keys(
    text_layers: int, vision_layers: int, temporal_layers: int, wti_arch: int | None
) -> set[str]:
    """Every key of the official DRL state dict, enumerated from the official module layout (not from our model)."""
    keys = {
        "clip.positional_embedding",
        "clip.text_projection",
        "clip.logit_scale",
        "clip.token_embedding.weight",
        "clip.ln_final.weight",
        "clip.ln_final.bias",
        "clip.visual.class_embedding",
        "clip.visual.positional_embedding",
        "clip.visual.proj",
        "clip.visual.conv1.weight",
        "clip.visual.ln_pre.weight",
        "clip.visual.ln_pre.bias",
        "clip.visual.ln_post.weight",
        "clip.visual.ln_post.bias",
    }
    for prefix, n in (
        ("clip.transformer", text_layers),
        ("clip.visual.transformer", vision_layers),
        ("transformerClip", temporal_layers),
    ):
        keys |= {f"{prefix}.resblocks.{i}.{k}" for i in range(n) for k in BLOCK_KEYS}
    if temporal_layers:
        keys.add("frame_position_embeddings.weight")
    if wti_arch:
        linears = (
            ["weight", "bias"]
            if wti_arch == 1
            else [f"{2 * i}.{p}" for i in range(wti_arch) for p in ("weight", "bias")]
        )
        keys |= {f"{side}_weight_fc.{k}" for side in ("text", "video") for k in linears}
    return keys


def randomize_(model: TVRModel, seed: int = 0) -> TVRModel:
    """Give LayerNorms, biases, the class token and the logit scale random values too, so that a swapped or skipped
    parameter shows up in the numbers (CLIP's own init leaves LayerNorms at 1/0 and biases at 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (
                name.endswith("bias")
                or ".ln_" in name
                or "ln_final" in name
                or name.endswith("class_embedding")
            ):
                base = 1.0 if (name.endswith("weight") and ("ln_" in name)) else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
        model.clip.logit_scale.fill_(2.5)
    return model


def build_model(config: ModelConfig, seed: int = 0) -> TVRModel:
    """A model with seeded random weights (randomize_ applied) in eval mode."""
    torch.manual_seed(seed)
    return randomize_(TVRModel(config), seed).eval()


def official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as the official code saves it after GPU training: CLIP linear/conv tensors in fp16."""
    out = {}
    for k, v in state_dict.items():
        half = k.startswith("clip.") and k.endswith(_FP16_SUFFIXES)
        out[k] = v.detach().clone().to(torch.float16 if half else torch.float32)
    return out


def save_official(state_dict: dict[str, torch.Tensor], directory: Path, epoch: int = 1) -> Path:
    """`torch.save(model.state_dict())` as `pytorch_model.bin.<epoch>`, the official file name."""
    path = Path(directory) / f"pytorch_model.bin.{epoch}"
    torch.save(official_state_dict(state_dict), path)
    return path


def tiny_config(**kwargs: Any) -> ModelConfig:
    """The bundled tiny architecture ("tvr-tiny") with the given ModelConfig fields."""
    return ModelConfig(clip_name="tvr-tiny", clip=clip_config("tvr-tiny"), **kwargs)


def small_official_config(**kwargs: Any) -> ModelConfig:
    """A small architecture in the official layout (what official_config would infer), with ModelConfig fields."""
    return ModelConfig(clip_name="official-drl", clip=small_clip_config(), **kwargs)


_VIT_B32: dict[str, Path] = {}


def vit_b32_official_file(tmp_path_factory) -> Path:
    """A random-weight DRL WTI + seqTransf checkpoint at ViT-B/32 dimensions in the official format, written once
    per test session (building one costs about 1-2 s and 600 MB, so only the file is kept)."""
    if "path" not in _VIT_B32:
        model = build_model(
            ModelConfig(clip_name="ViT-B-32", clip=clip_config("ViT-B-32"), interaction="wti"), seed=7
        )
        _VIT_B32["path"] = save_official(model.state_dict(), tmp_path_factory.mktemp("vit_b32"))
        del model
    return _VIT_B32["path"]
