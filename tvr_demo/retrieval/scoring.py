"""Torch-level encoding and blocked scoring shared by training's validation, the engine and `score`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from tvr_demo.data.video import normalize_frames
from tvr_demo.devices import default_device as default_device  # re-exported: engine, session and train use it
from tvr_demo.evaluation.metrics import standardize_rows
from tvr_demo.models import TextFeatures, TVRModel, VideoFeatures, drl
from tvr_demo.models.backbone import get_tokenizer
from tvr_demo.models.unify import topk_sparsify


@dataclass
class TextBank:
    """Encoded texts, ready to score: L2-normalised tokens and their interaction weights computed once."""

    tokens: torch.Tensor  # (N, T, D) L2-normalised
    mask: torch.Tensor  # (N, T)
    weights: torch.Tensor  # (N, T) WTI softmax weights (uniform over valid tokens without a weight head)
    pooled: torch.Tensor  # (N, D) L2-normalised EOT feature (DP)
    ids: torch.Tensor  # (N, T)
    lexicon: torch.Tensor | None  # (N, Vocab) non-negative lexicon, top-k words kept (UNIFY), or None


@dataclass
class VideoBank:
    frames: torch.Tensor  # (N, V, D) L2-normalised
    mask: torch.Tensor  # (N, V)
    weights: torch.Tensor  # (N, V)
    pooled: torch.Tensor  # (N, D) L2-normalised masked mean of normalised frames (DP / meanP)
    lexicon: torch.Tensor | None


def _lexicon(model: TVRModel, feats: TextFeatures | VideoFeatures) -> torch.Tensor | None:
    """UNIFY's lexicon vector cut to the model's top-k words: every bank (gallery, typed query, uploaded clip) is
    sparsified here and nowhere else."""
    if feats.lexicon_logits is None:
        return None
    return topk_sparsify(model.lexicon(feats), model.config.unify.top_k)


def text_bank(model: TVRModel, feats: TextFeatures) -> TextBank:
    return TextBank(drl.l2_normalize(feats.tokens), feats.mask, drl.interaction_weights(feats.weight_logits, feats.mask),
                    drl.l2_normalize(drl.eot_features(feats.tokens, feats.mask)), feats.ids, _lexicon(model, feats))


def video_bank(model: TVRModel, feats: VideoFeatures) -> VideoBank:
    return VideoBank(drl.l2_normalize(feats.frames), feats.mask,
                     drl.interaction_weights(feats.weight_logits, feats.mask),
                     drl.mean_pooled_frames(feats.frames, feats.mask), _lexicon(model, feats))


def rows_of(bank: TextBank | VideoBank, index: slice | Sequence[int]) -> TextBank | VideoBank:
    """Some rows of a bank: a slice as views (a stored sparse lexicon stays sparse: blocks of the split's matrices),
    a list of rows gathered (a sparse lexicon made dense: the pairs an explanation takes apart)."""
    import scipy.sparse

    out = {}
    for name, value in bank.__dict__.items():
        if value is None or isinstance(index, slice):
            out[name] = None if value is None else value[index]
        elif scipy.sparse.issparse(value):
            out[name] = torch.from_numpy(value[np.asarray(index)].toarray())
        else:
            out[name] = value[torch.as_tensor(index, device=value.device)]
    return type(bank)(**out)


def _cat(parts: list, cls):
    fields = cls.__dataclass_fields__
    return cls(**{f: None if parts[0].__dict__[f] is None else torch.cat([p.__dict__[f] for p in parts])
                  for f in fields})


def _autocast(device: torch.device) -> torch.autocast:
    """fp16 autocast on CUDA, where the CLIP towers run on the tensor cores; off elsewhere (CPU fp16 is slow)."""
    return torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda")


def _fp32(feats: TextFeatures | VideoFeatures) -> TextFeatures | VideoFeatures:
    """Features back in float32 after autocast: normalisation, weights, scores and the cache on disk stay fp32."""
    return replace(feats, **{f.name: value.float() for f in fields(feats)
                             if isinstance(value := getattr(feats, f.name), torch.Tensor) and value.is_floating_point()})


@torch.no_grad()
def encode_texts(model: TVRModel, captions: Sequence[str], batch_size: int = 256) -> TextBank:
    if not captions:  # a gallery without captions: a bank of no rows, shaped as any other
        return rows_of(encode_texts(model, [""]), slice(0, 0))
    tokenizer = get_tokenizer()
    parts = []
    for start in range(0, len(captions), batch_size):
        tok = tokenizer(list(captions[start:start + batch_size]), model.config.max_words)
        with _autocast(model.device):
            feats = model.encode_text(tok.ids.to(model.device), tok.mask.to(model.device))
        parts.append(text_bank(model, _fp32(feats)))
    return _cat(parts, TextBank)


@torch.no_grad()
def encode_video_frames(model: TVRModel, frames_u8: torch.Tensor, masks: torch.Tensor, batch_size: int = 32
                        ) -> VideoBank:
    """frames_u8 (N, V, 3, R, R) uint8 as decode_videos returns them; they reach the device as uint8, a quarter of
    the float32 bytes."""
    parts = []
    for start in range(0, frames_u8.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        frames = normalize_frames(frames_u8[sl].to(model.device), masks[sl].to(model.device))
        with _autocast(model.device):
            feats = model.encode_video(frames, masks[sl].to(model.device))
        parts.append(video_bank(model, _fp32(feats)))
    return _cat(parts, VideoBank)


def similarity_matrix(texts: TextBank, videos: VideoBank, interaction: str, block: int | None = None
                      ) -> torch.Tensor:
    """The latent score S (n_texts, n_videos). Token-wise interactions go through the fused scorer (Triton on CUDA
    where it won the race, else a blocked torch path; tests/test_kernels.py pins both to drl.wti_similarity), which
    never builds the (A, B, T, V) cosine tensor. `block` texts per call, by default as many as the device's free
    memory holds scores for (kernels/blocks.py); a block that still runs out of memory is halved and retried."""
    from tvr_demo.kernels import wti_scores
    from tvr_demo.kernels.blocks import device_memory, text_rows

    if interaction == "dp":
        return drl.dp_similarity(texts.pooled, videos.pooled)
    t_w = drl.weights_for(interaction, texts.mask, texts.weights)
    v_w = drl.weights_for(interaction, videos.mask, videos.weights)
    block = block or text_rows(device_memory(videos.frames.device), videos.frames.shape[0])
    rows, start = [], 0
    while start < texts.tokens.shape[0]:
        sl = slice(start, start + block)
        try:
            rows.append(wti_scores(texts.tokens[sl], texts.mask[sl], t_w[sl], videos.frames, videos.mask, v_w))
        except torch.cuda.OutOfMemoryError:  # = torch.OutOfMemoryError (torch>=2.5); CPU runs raise no such error
            if block == 1:
                raise
            block //= 2
            if videos.frames.is_cuda:
                torch.cuda.empty_cache()
            continue
        start += rows[-1].shape[0]
    return torch.cat(rows)


def fuse_scores(latent: np.ndarray, lexicon: np.ndarray, fusion_lambda: float, query_axis: int = 0) -> np.ndarray:
    """fused = z(latent) + lambda * z(lexicon), each standardised over the gallery of every query: along the rows'
    videos for text-to-video (query_axis 0), along the columns' captions for video-to-text (query_axis 1)."""
    if query_axis == 1:
        return fuse_scores(latent.T, lexicon.T, fusion_lambda).T
    return standardize_rows(latent) + fusion_lambda * standardize_rows(lexicon)


def score_files(checkpoint: str, captions: list[str], videos: list[Path], device: str | None = None,
                interaction: str | None = None, batch_size: int = 16, num_workers: int | None = None) -> np.ndarray:
    """`python -m tvr_demo score`: caption x video latent similarity (columns in the given order, or sorted names
    for one folder); num_workers decode processes (None: one per core, bounded by memory)."""
    from tvr_demo.data.video import decode_videos
    from tvr_demo.errors import QueryError, VideoDecodeError
    from tvr_demo.models.checkpoints import load_checkpoint

    if not captions:
        raise QueryError("the captions file has no non-empty line")
    if len(videos) == 1 and videos[0].is_dir():
        folder = videos[0]
        videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".mp4", ".avi", ".mkv", ".webm", ".mov"})
        if not videos:
            raise VideoDecodeError(f"no video files (.mp4 .avi .mkv .webm .mov) in {folder}")
    ckpt = load_checkpoint(checkpoint, default_device(device), interaction)
    model, config = ckpt.model, ckpt.model.config
    decoded = decode_videos(videos, config.sampling(), config.image_size,
                            num_workers=num_workers, progress=True, skip_errors=False)
    texts = encode_texts(model, captions)
    bank = encode_video_frames(model, torch.from_numpy(np.asarray(decoded.videos)) if isinstance(
        decoded.videos, np.ndarray) else decoded.videos, torch.as_tensor(decoded.masks), batch_size)
    return similarity_matrix(texts, bank, interaction or config.latent_interaction).float().cpu().numpy()
