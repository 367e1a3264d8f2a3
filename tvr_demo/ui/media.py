"""Frame thumbnails for the figures: the very frames the model sees (DRL's sampling), as small inline JPEGs."""

from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from tvr_demo import FrameSampling, sample_video
from tvr_demo.errors import TVRError


def data_uri(frame: np.ndarray, height: int) -> str:
    """(H, W, 3) uint8 RGB -> a JPEG data URI `height` pixels tall (plotly layout images and <img> accept it)."""
    image = Image.fromarray(frame)
    image = image.resize((max(1, round(image.width * height / image.height)), height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@lru_cache(maxsize=512)
def frame_thumbnails(path: str, sampling: FrameSampling, height: int = 64) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(thumbnails, labels "f<i> · <t>s") of the frames the model samples from one clip (`ModelConfig.sampling` with
    the gallery's window); empty when the clip cannot be decoded (the figure then shows frame numbers only)."""
    try:
        sampled = sample_video(Path(path), sampling, decode=True)
    except TVRError:
        return (), ()
    labels = tuple(f"f{i} · {t:.1f}s" for i, t in enumerate(sampled.timestamps))
    return tuple(data_uri(f, height) for f in sampled.frames), labels


@lru_cache(maxsize=4096)
def video_thumbnail(path: str, sampling: FrameSampling, height: int = 96) -> str:
    """The middle frame the model samples from a clip (for the map's hover), or "" when the clip cannot be decoded."""
    try:
        sampled = sample_video(Path(path), sampling, decode=True)
    except TVRError:
        return ""
    if not len(sampled.frames):
        return ""
    return data_uri(sampled.frames[len(sampled.frames) // 2], height)
