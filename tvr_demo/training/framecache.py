"""Decoded, resized uint8 frames of a benchmark split, cached on disk so training decodes every clip once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import TYPE_CHECKING

import numpy as np

from tvr_demo.data import Benchmark
from tvr_demo.data.video import FrameSampling, decode_videos
from tvr_demo.paths import cache_dir

if TYPE_CHECKING:  # only its type: the data layer never imports the models
    from tvr_demo.models import ModelConfig


def frames_key(bench: Benchmark, sampling: FrameSampling, resolution: int) -> str:
    """Fingerprint of the inputs: video files (name, size, mtime), sampling and resolution."""
    h = hashlib.sha256(json.dumps([sampling.max_frames, sampling.framerate, sampling.start_s, sampling.end_s,
                                   resolution]).encode())
    for p in bench.video_paths:
        st = p.stat() if p.exists() else None
        h.update(f"{p.resolve()}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:20]


def cached_frames(bench: Benchmark, config: ModelConfig, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N, V, 3, R, R) uint8 frames and (N, V) masks; memory-mapped from the cache after the first call."""
    sampling = config.sampling(bench.end_s)
    directory = cache_dir() / "frames" / frames_key(bench, sampling, config.image_size)
    if not (directory / "masks.npy").is_file():
        decoded = decode_videos(bench.video_paths, sampling, config.image_size, progress=progress)
        tmp = directory.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "frames.npy", np.asarray(decoded.videos))
        np.save(tmp / "masks.npy", np.asarray(decoded.masks))
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    return np.load(directory / "frames.npy", mmap_mode="r"), np.load(directory / "masks.npy")
