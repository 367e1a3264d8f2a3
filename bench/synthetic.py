"""Random features with ViT-B/32 shapes (32 tokens, 12 frames, 512 channels) and realistic masks, for galleries
larger than any bundled one.

A generative sketch, not a model of CLIP: features share a modality direction (CLIP's anisotropy), videos belong to
topic clusters (hard negatives), frames of a clip agree (cosine about 0.75), and a query's content tokens point at
its target clip's topic (matched text-frame cosine about 0.3, unmatched about 0). Padded frames and tokens carry
features too (the temporal module and the text transformer produce them), so a scorer that ignores the masks gets
different numbers. How well a pooled first stage predicts WTI depends on this generator: recall measured on it is
a property of the sketch, the bundled-gallery rows measure a real encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from bench.baselines import Prepared, prepare
from tvr_demo.models import drl

TOKENS, FRAMES, DIM = 32, 12, 512  # DRL max_words, max_frames; ViT-B/32 embed dim
CHUNK = 8192  # videos generated at a time (bounds the temporaries)


@dataclass
class Features:
    """Unnormalised per-token or per-frame features as the encoder returns them, with their masks."""

    feats: torch.Tensor  # (N, L, D) float32, not normalised
    mask: torch.Tensor  # (N, L) int64, 1 for valid positions
    topic: torch.Tensor  # (N,) int64: the video's topic cluster, or the query's target video


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


class Generator:
    """Shared directions of one synthetic world; videos and queries drawn from it are consistent."""

    def __init__(self, seed: int = 0, dim: int = DIM, topics: int = 2048) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.dim = dim
        basis = _unit(torch.randn(5, dim, generator=self.g))
        self.video_dir, self.text_dir, self.pad_frame, self.pad_token, self.sot = basis
        self.topics = _unit(torch.randn(topics, dim, generator=self.g))
        self.video_topic: torch.Tensor | None = None  # (N, D) each video's own topic vector

    def videos(self, n: int, frames: int = FRAMES) -> Features:
        """n clips; valid frames = min(frames, duration in s) with durations uniform in 6..32 s (MSR-VTT-like)."""
        features, self.video_topic = self.draw_videos(self.g, n, frames)
        return features

    def draw_videos(self, g: torch.Generator, n: int, frames: int = FRAMES) -> tuple[Features, torch.Tensor]:
        """n clips drawn from `g` in this world, and each one's own topic vector (N, D) that its queries point at.
        A gallery too large for memory is drawn chunk by chunk, each chunk from a generator of its own."""
        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g)

        feats = torch.empty(n, frames, self.dim)
        cluster = torch.randint(len(self.topics), (n,), generator=g)
        own = torch.empty(n, self.dim)
        for s in range(0, n, CHUNK):
            e = min(n, s + CHUNK)
            topic = _unit(self.topics[cluster[s:e]] + 0.8 * _unit(randn(e - s, self.dim)))  # (n, D)
            own[s:e] = topic
            noise = _unit(randn(e - s, frames, self.dim))
            feats[s:e] = 0.5 * self.video_dir + 0.6 * topic[:, None] + 0.45 * noise
        duration = torch.randint(6, 33, (n,), generator=g)
        mask = (torch.arange(frames)[None] < duration.clamp(max=frames)[:, None]).long()
        pad = (mask == 0).nonzero(as_tuple=True)
        # a zero frame through the ViT and the temporal module: a fixed direction mixed with the clip's context
        feats[pad] = 0.5 * self.video_dir + 0.6 * self.pad_frame + 0.3 * own[pad[0]] + 0.2 * _unit(
            randn(len(pad[0]), self.dim))
        feats *= torch.empty(n, frames, 1).uniform_(8.0, 12.0, generator=g)  # raw feature norms
        return Features(feats, mask, cluster), own

    def queries(self, n: int, seed: int = 0, tokens: int = TOKENS) -> Features:
        """n captions of random gallery videos (after `videos`): SOT + about 10 words + EOT, zero-padded to 32.
        Their own seed: any number of query sets can be drawn against one gallery."""
        assert self.video_topic is not None, "draw the videos first"
        g = torch.Generator().manual_seed(10_000 + seed)

        def noise(*shape: int) -> torch.Tensor:
            return _unit(torch.randn(*shape, self.dim, generator=g))

        target = torch.randint(len(self.video_topic), (n,), generator=g)
        words = (4 + torch.poisson(torch.full((n,), 6.0), generator=g).long()).clamp(max=tokens - 2)
        mask = (torch.arange(tokens)[None] < (words + 2)[:, None]).long()
        topic = self.video_topic[target].float()  # (n, D)
        content = torch.rand(n, tokens, generator=g) < 0.6  # content words vs function words
        about = _unit(topic[:, None] + 1.5 * noise(n, tokens))
        feats = 0.5 * self.text_dir + 0.5 * noise(n, tokens)
        feats += torch.where(content[..., None], 0.2 * about, torch.zeros(()))
        feats[:, 0] = 0.5 * self.text_dir + 0.7 * self.sot + 0.2 * noise(n)
        feats[torch.arange(n), words + 1] = 0.5 * self.text_dir + 0.25 * topic + 0.6 * noise(n)  # EOT: the sentence
        pad = (mask == 0).nonzero(as_tuple=True)
        feats[pad] = 0.5 * self.text_dir + 0.7 * self.pad_token + 0.3 * noise(len(pad[0]))
        feats *= torch.empty(n, tokens, 1).uniform_(4.0, 8.0, generator=g)
        return Features(feats, mask, target)


def weight_heads(dim: int = DIM, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """DRL's text_weight_fc and video_weight_fc (Linear-ReLU-Linear, wti_arch 2) with random weights."""
    torch.manual_seed(seed)
    return drl.weight_head(dim, 2).eval(), drl.weight_head(dim, 2).eval()


@dataclass
class World:
    """A synthetic gallery, unnormalised (for the official loop) and scoring-ready (weights from the random video
    head, normalised, as the engine's cache holds a gallery), with its generator for drawing queries."""

    generator: Generator
    raw: Features
    gallery: Prepared
    pooled: torch.Tensor  # (N, D) L2-normalised mean of normalised frames (VideoBank.pooled)
    text_head: torch.nn.Module
    video_head: torch.nn.Module


@lru_cache(maxsize=2)
@torch.no_grad()
def world(n_videos: int, seed: int = 0) -> World:
    """Built once per size and shared by the scoring and two-stage rows (the two largest sizes are kept)."""
    gen = Generator(seed)
    raw = gen.videos(n_videos)
    text_head, video_head = weight_heads(DIM, seed)
    gallery = prepare(raw.feats, raw.mask, video_head)
    return World(gen, raw, gallery, drl.mean_pooled_frames(raw.feats, raw.mask), text_head, video_head)
