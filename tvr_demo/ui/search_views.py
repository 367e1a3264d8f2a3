"""Search callbacks: text -> ranked videos and video -> ranked captions, with the ground truth marked and ranked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from tvr_demo.data.video import load_untrusted_video
from tvr_demo.errors import QueryError
from tvr_demo.retrieval.engine import Engine, SearchResult
from tvr_demo.safety import public_name
from tvr_demo.ui.labels import score_kind

if TYPE_CHECKING:
    from tvr_demo.models.config import ModelConfig


def resolve_video(engine: Engine, video: str | int | float | None) -> int | None:
    """A gallery video given by id ("video7") or by 0-based index ("7"); None when blank."""
    if video is None or (isinstance(video, str) and not video.strip()):
        return None
    if isinstance(video, (int, float)):
        index = int(video)
    else:
        text = video.strip()
        if text in engine.bench.video_ids:
            return engine.bench.video_index(text)
        digits = text.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:  # "²".isdigit(), yet int("²") fails
            raise QueryError(f"no video {text[:60]!r} in this gallery: give a video id (e.g. "
                             f"{engine.bench.video_ids[0]}) or an index 0..{engine.gallery_size - 1}")
        index = int(text)
    if not 0 <= index < engine.gallery_size:
        raise QueryError(f"video index {index} is outside the gallery (0..{engine.gallery_size - 1})")
    return index


def _score_columns(result: SearchResult, scores: dict[str, float], config: ModelConfig) -> dict[str, float]:
    """The ranking score first, named by its kind ("score (WTI)"); UNIFY's other branches beside it."""
    cols = {f"score ({score_kind(config, result.branch)})": round(scores[result.branch], 4)}
    cols.update({score_kind(config, b): round(s, 4) for b, s in scores.items() if b != result.branch})
    return cols


def ground_truth_line(result: SearchResult, names: list[str], k: int, total: int) -> str:
    """Where the ground truth landed, whether or not it made the top k (ranks shown 1-based)."""
    if not result.ground_truth:
        return "Free-text query: the benchmark has no ground truth for it."
    rank = result.ground_truth_rank + 1
    gt = ", ".join(names[g] for g in result.ground_truth)
    where = f"in the top {k}" if rank <= k else f"**outside the top {k}**, shown last"
    mark = "✓" if rank == 1 else "✗"
    return f"{mark} Ground truth **{gt}** is at **rank {rank}** of {total} ({where})."


def search_text(engine: Engine, query: str, k: int, branch: str | None
                ) -> tuple[list[tuple[str, str]], str, pd.DataFrame, list[int], str | None]:
    """Top-k videos as (clip, caption) gallery items, a summary, a table, the video index of each gallery item
    (for click-to-explain) and the engine's notice (e.g. a truncated query)."""
    result = engine.search_text(query, k=int(k), branch=branch or None)
    bench, kind = engine.bench, score_kind(engine.config, result.branch)
    rows, items, order = [], [], []
    hits = list(result.hits)
    shown = {h.index for h in hits}
    for g in result.ground_truth:
        if g not in shown:  # the ground truth outside the top k: append it with its true rank
            all_hits = engine.search_text(query, k=engine.gallery_size, branch=result.branch).hits
            hits.append(next(h for h in all_hits if h.index == g))
    for h in hits:
        gt = " ✓ ground truth" if h.is_ground_truth else ""
        items.append((str(bench.video_paths[h.index]), f"#{h.rank + 1} · {bench.video_ids[h.index]} · "
                                                       f"{kind} {h.score:.4f}{gt}"))
        rows.append({"rank": h.rank + 1, "video": bench.video_ids[h.index], "index": h.index,
                     **_score_columns(result, h.scores, engine.config), "ground truth": "✓" if h.is_ground_truth else ""})
        order.append(h.index)
    summary = ground_truth_line(result, bench.video_ids, int(k), engine.gallery_size)
    if result.notice:
        summary += f"\n\n⚠ {result.notice}"
    return items, summary, pd.DataFrame(rows), order, result.notice


@dataclass
class Clip:
    """An uploaded clip, decoded into what the model takes."""

    name: str
    frames: torch.Tensor  # (V, 3, R, R) uint8, zero-padded
    mask: torch.Tensor  # (V,) int64


def decode_upload(engine: Engine, path: str | Path) -> Clip:
    """Decode an upload with the upload limits, in a worker process that a malformed file can crash or hang
    without taking the server along (CPU work: the app runs it outside its GPU functions)."""
    config = engine.config
    frames, mask = load_untrusted_video(Path(path), config.sampling(),
                                        config.image_size)
    return Clip(public_name(Path(path).name), frames, mask)


def search_clip(engine: Engine, clip: Clip, k: int, branch: str | None) -> SearchResult:
    """Captions for a decoded clip, scored as Engine.search_video scores a video file."""
    return engine.search_video_bank(engine.encode_frames(clip.frames, clip.mask), k, branch)


def search_video(engine: Engine, video: str | None, upload: Clip | None, k: int, branch: str | None
                 ) -> tuple[str, pd.DataFrame, list[int], int | None]:
    """Top-k captions for a gallery video or an uploaded clip (see decode_upload): a summary, a table, the caption
    index of each row and the gallery video index (None for an upload, which the explain view cannot use)."""
    index = None if upload else resolve_video(engine, video)
    if upload is None and index is None:
        raise QueryError("choose a gallery video or upload a clip")
    if upload:
        result = search_clip(engine, upload, int(k), branch or None)
    else:
        result = engine.search_video(index, k=int(k), branch=branch or None)
    bench = engine.bench
    hits = list(result.hits)
    shown = {h.index for h in hits}
    missing = [g for g in result.ground_truth if g not in shown]
    if missing:
        all_hits = {h.index: h for h in engine.search_video(index, k=engine.num_captions, branch=result.branch).hits}
        hits += sorted((all_hits[g] for g in missing), key=lambda h: h.rank)
    rows = [{"rank": h.rank + 1, "caption": bench.captions[h.index], "caption #": h.index,
             **_score_columns(result, h.scores, engine.config), "ground truth": "✓" if h.is_ground_truth else ""} for h in hits]
    if upload:
        summary = f"Uploaded clip `{upload.name}`: the {int(k)} best-matching benchmark captions."
    else:
        names = [f"caption {i}" for i in range(engine.num_captions)]
        summary = ground_truth_line(result, names, int(k), engine.num_captions).replace(
            "Ground truth", f"Best ground-truth caption of {bench.video_ids[index]}")
    return summary, pd.DataFrame(rows), [h.index for h in hits], index
