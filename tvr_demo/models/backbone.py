"""CLIP towers (open_clip) with the per-token text and per-frame video features that DRL and UNIFY need."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer

from tvr_demo.errors import CheckpointError
from tvr_demo.paths import MODEL_CONFIG_DIR

# Named architectures. OpenAI's weights need QuickGELU: plain open_clip "ViT-B-32" uses GELU (wrong for them).
ARCH_ALIASES = {"ViT-B-32": "ViT-B-32-quickgelu", "ViT-B-16": "ViT-B-16-quickgelu"}


@lru_cache(maxsize=1)
def _register_configs() -> None:
    open_clip.add_model_config(MODEL_CONFIG_DIR)


def clip_config(name: str) -> dict[str, Any]:
    """The open_clip config dict of a named architecture (ours are registered from assets/model_configs)."""
    _register_configs()
    cfg = open_clip.get_model_config(ARCH_ALIASES.get(name, name))
    if cfg is None:
        raise CheckpointError(f"unknown CLIP architecture {name!r}; known: tvr-tiny, ViT-B-32, ViT-B-16, "
                              "or any open_clip config name")
    return copy.deepcopy(cfg)


def build_clip(cfg: dict[str, Any]) -> CLIP:
    """An open_clip CLIP with random weights from a config dict."""
    cfg = copy.deepcopy(cfg)
    cfg.pop("custom_text", None)
    return CLIP(**cfg)


def clip_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infer the CLIP architecture from tensor shapes, as openai/CLIP's build_model does."""
    vision_width = sd["visual.conv1.weight"].shape[0]
    vision_layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
    patch_size = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = sd["ln_final.weight"].shape[0]
    text_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    return {
        "embed_dim": int(sd["text_projection"].shape[1]),
        "quick_gelu": True,  # OpenAI weights and DRL checkpoints use QuickGELU
        "vision_cfg": {"image_size": int(patch_size * grid), "layers": vision_layers, "width": int(vision_width),
                       "head_width": 64, "patch_size": int(patch_size)},
        "text_cfg": {"context_length": int(sd["positional_embedding"].shape[0]),
                     "vocab_size": int(sd["token_embedding.weight"].shape[0]), "width": int(text_width),
                     "heads": int(text_width // 64), "layers": text_layers},
    }


@dataclass
class Tokenized:
    ids: torch.Tensor  # (B, L) int64, SOT ... EOT then 0-padding
    mask: torch.Tensor  # (B, L) int64, 1 from SOT to EOT inclusive
    truncated: list[bool]  # whether each text lost BPE tokens to the length limit


class Tokenizer:
    """CLIP's BPE (ftfy + whitespace clean + lower case), DRL's layout: SOT + first max_words-2 tokens + EOT."""

    def __init__(self) -> None:
        self.bpe = SimpleTokenizer()
        self.sot, self.eot = self.bpe.all_special_ids[:2]
        self.vocab_size = len(self.bpe.encoder)

    def __call__(self, texts: list[str], max_words: int = 32) -> Tokenized:
        ids = torch.zeros(len(texts), max_words, dtype=torch.long)
        mask = torch.zeros_like(ids)
        truncated = []
        for i, text in enumerate(texts):
            bpe = self.bpe.encode(text)
            truncated.append(len(bpe) > max_words - 2)
            row = [self.sot, *bpe[: max_words - 2], self.eot]
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1  # by position, as DRL: BPE id 0 is '!', a real token (e.g. in "!?!!")
        return Tokenized(ids, mask, truncated)

    def word_labels(self, ids: list[int]) -> list[str]:
        """One label per token naming the word a reader typed: a word BPE split into pieces labels each of its rows
        with the whole word and the piece's place ("blocks 1/2", "blocks 2/2"); a piece ends its word with `</w>`."""
        labels = ["<sot>" if i == self.sot else "<eot>" if i == self.eot else "" for i in ids]
        pieces: list[int] = []  # positions of the current word's pieces read so far

        def close_word() -> None:
            word = "".join(self.bpe.decoder.get(int(ids[p]), "?") for p in pieces).replace("</w>", "")
            for k, p in enumerate(pieces):
                labels[p] = word if len(pieces) == 1 else f"{word} {k + 1}/{len(pieces)}"
            pieces.clear()

        for position, i in enumerate(ids):
            if labels[position]:  # <sot> or <eot>: a word cut short by the length limit ends here
                if pieces:
                    close_word()
                continue
            pieces.append(position)
            if self.bpe.decoder.get(int(i), "").endswith("</w>"):
                close_word()
        if pieces:
            close_word()
        return labels

    def token_strings(self, ids: list[int]) -> list[str]:
        """Readable token strings for display (word-final tokens lose their `</w>` marker)."""
        out = []
        for i in ids:
            s = self.bpe.decoder.get(int(i), "?")
            out.append("<sot>" if i == self.sot else "<eot>" if i == self.eot else s.replace("</w>", ""))
        return out


@lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    return Tokenizer()


def text_token_features(clip: CLIP, ids: torch.Tensor, padding: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """DRL's per-position text path: causal mask, ln_final, then text_projection at every position.

    Returns (hidden (B, L, W) after ln_final, features (B, L, D) unnormalised). open_clip's encode_text keeps only
    the EOT position, so the blocks are run here directly; slicing the causal mask to L is what DRL does. Given
    `padding` (B, L), 1 on real tokens, the attention is bidirectional instead (ModelConfig.text_attention): every
    token reads every real token of its caption, none reads the padding.
    """
    length = ids.shape[1]
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(ids).to(cast) + clip.positional_embedding[:length].to(cast)  # (B, L, W)
    if padding is None:
        attn_mask = clip.attn_mask[:length, :length]
    else:  # (B * heads, L, L): -inf on padded keys, as nn.MultiheadAttention takes a per-sample mask
        blocked = torch.zeros(padding.shape, dtype=cast, device=x.device).masked_fill(padding == 0, float("-inf"))
        attn_mask = blocked[:, None, :].expand(-1, length, -1).repeat_interleave(clip.transformer.resblocks[0]
                                                                                .attn.num_heads, dim=0)
    x = clip.transformer(x, attn_mask=attn_mask)
    hidden = clip.ln_final(x)
    return hidden, hidden @ clip.text_projection


def video_frame_features(clip: CLIP, frames: torch.Tensor) -> torch.Tensor:
    """Per-frame features: every frame through the ViT, CLS after ln_post, then proj. (B, V, 3, R, R) -> (B, V, D)."""
    b, v = frames.shape[:2]
    feats = clip.visual(frames.reshape(b * v, *frames.shape[2:]).to(clip.visual.conv1.weight.dtype))
    return feats.reshape(b, v, -1)


def read_clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """CLIP's tensors from a local file, as DRL reads them: an OpenAI JIT archive via torch.jit.load(...).state_dict(),
    else a plain state dict (open_clip's, possibly under "state_dict" with DDP's "module." prefix; or safetensors),
    or the towers (`clip.` tensors) of a checkpoint in our format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"CLIP weights not found: {path.name}")
    if path.suffix == ".safetensors":  # never a JIT archive: read it directly
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state_dict = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path.name} is not a readable safetensors file") from e
    else:
        try:
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError:
            try:
                state_dict = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"{path.name} is neither an OpenAI CLIP JIT archive nor a state dict") from e
    state_dict = state_dict.get("state_dict", state_dict)
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path.name} holds no state dict of CLIP tensors")
    for key in ("input_resolution", "context_length", "vocab_size"):  # JIT-only metadata, as openai/CLIP drops them
        state_dict.pop(key, None)
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "clip.logit_scale" in state_dict:  # a whole model of ours: its CLIP towers only
        state_dict = {k.removeprefix("clip."): v for k, v in state_dict.items() if k.startswith("clip.")}
    return state_dict


def load_pretrained_clip(clip: CLIP, path: Path, architecture: str = "the config's") -> None:
    """Load CLIP weights into `clip` strictly, after checking each tensor's shape against its architecture: a
    mismatch names the tensor and both shapes."""
    state_dict = read_clip_state_dict(path)
    name = Path(path).name
    expected = clip.state_dict()
    for key in {n for n, _ in clip.named_buffers()} - set(expected):  # non-persistent (attn_mask): rebuilt, not read
        state_dict.pop(key, None)  # a traced open_clip archive stores them
    for key, want in expected.items():
        got = state_dict.get(key)
        if got is not None and tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"{name} does not match architecture {architecture}: tensor {key} has shape "
                                  f"{list(got.shape)} in the file, {list(want.shape)} in the config")
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{name} does not match architecture {architecture}: missing tensors {missing[:4]}"
                              f"{' ...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                              f"{' ...' if len(unexpected) > 4 else ''}")
    clip.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=True)
