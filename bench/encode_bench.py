"""Encode throughput in clips per second: decode only, encode only and end to end, on the real MSR-VTT clip
video7500.mp4 replicated (random weights: throughput does not depend on them); and one text query's encoding."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from bench.measure import log
from tvr_demo.data.video import FrameSampling, decode_videos, decode_workers, host_cpus
from tvr_demo.memory import host_available_bytes
from tvr_demo.models import ModelConfig, TVRModel
from tvr_demo.models.backbone import clip_config
from tvr_demo.retrieval.scoring import encode_texts, encode_video_frames

REFERENCE_CLIP = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "msrvtt" / "video7500.mp4"


def encode_rows(device: torch.device, quick: bool, clip: Path = REFERENCE_CLIP) -> tuple[list[dict], list[dict]]:
    """Decode with the default number of workers (one per core, bounded by memory: data/video.decode_workers)."""
    if not clip.is_file():
        return [], [{"row": "encode throughput", "reason": f"{clip} is absent"}]
    workers = decode_workers(host_cpus(), host_available_bytes())
    archs = [("tvr-tiny", 16 if quick else 64)]
    if not quick:
        archs.append(("ViT-B-32", 8 if device.type == "cpu" else 128))
    rows = []
    for arch, n_clips in archs:
        torch.manual_seed(0)
        config = ModelConfig(clip_name=arch, clip=clip_config(arch))
        model = TVRModel(config).eval().to(device)
        sampling = FrameSampling(config.max_frames, config.framerate)
        paths = [clip] * n_clips
        log(f"encode {arch}: {n_clips} x {clip.name} at {config.image_size} px on {device}, {workers} decode workers")
        t0 = time.perf_counter()
        decoded = decode_videos(paths, sampling, config.image_size, num_workers=workers, progress=False)
        t_decode = time.perf_counter() - t0
        encode_video_frames(model, decoded.videos[:2], decoded.masks[:2])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        encode_video_frames(model, decoded.videos, decoded.masks)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = decode_videos(paths, sampling, config.image_size, num_workers=workers, progress=False)
        encode_video_frames(model, again.videos, again.masks)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_total = time.perf_counter() - t0
        base = {"model": f"{arch} (random weights)", "device": str(device), "clips": n_clips, "decode_workers": workers,
                "frames_per_clip": int(decoded.masks[0].sum()), "resolution": config.image_size}
        for stage, seconds in (("decode only", t_decode), ("encode only", t_encode), ("end to end", t_total)):
            rows.append({**base, "stage": stage, "seconds": round(seconds, 2),
                         "clips_per_s": round(n_clips / seconds, 2)})
        query_ms = []
        for i in range(12):  # one typed query, encoded as a search encodes it
            t0 = time.perf_counter()
            encode_texts(model, [f"a person is cooking something in a kitchen, take {i}"])
            query_ms.append((time.perf_counter() - t0) * 1e3)
        rows.append({**base, "clips": None, "stage": "one text query", "seconds": round(statistics.median(query_ms[2:]) / 1e3, 4),
                     "clips_per_s": None, "query_ms_p50": round(statistics.median(query_ms[2:]), 2)})
    return rows, []
