"""The in-memory form of a retrieval benchmark split: videos, captions, and which video each caption describes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCHMARK_NAMES = ("msrvtt", "msvd", "didemo", "lsmdc", "activitynet", "vatex", "synthetic", "folder")


@dataclass
class Benchmark:
    """One split; caption i's ground-truth video is video_ids[caption_video[i]] (rows of the similarity matrix)."""

    name: str  # one of BENCHMARK_NAMES
    root: Path
    split: str
    video_ids: list[str]
    video_paths: list[Path]  # may point at files that are not on disk: the encoder reports those
    captions: list[str]
    caption_video: np.ndarray  # (n_captions,) int64 index into video_ids
    attributes: list[dict] | None = None  # per video: the synthetic benchmark's ground truth, else None
    end_s: float | None = None  # read videos up to here (DiDeMo: 31 s, as CLIP4Clip/DRL's loader); None = whole clip
    folders: list[str] | None = None  # per video: a folder gallery's subfolder (its slice), else None

    def __post_init__(self) -> None:
        self.caption_video = np.asarray(self.caption_video, dtype=np.int64)
        n = len(self.video_ids)
        if len(self.video_paths) != n:
            raise ValueError(f"{len(self.video_paths)} video paths for {n} video ids")
        if self.caption_video.shape != (len(self.captions),):
            raise ValueError(
                f"caption_video has shape {self.caption_video.shape}, expected ({len(self.captions)},)"
            )
        if len(self.captions) and (self.caption_video.min() < 0 or self.caption_video.max() >= n):
            raise ValueError("caption_video holds an index outside the video list")
        if self.attributes is not None and len(self.attributes) != n:
            raise ValueError(f"{len(self.attributes)} attribute records for {n} videos")
        if self.folders is not None and len(self.folders) != n:
            raise ValueError(f"{len(self.folders)} folders for {n} videos")

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def relative_path(self, path: str | Path) -> str:
        """A file of this gallery as users name it: its path inside the gallery folder (else its file name)."""
        path = Path(path)
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def public_failures(self, failures: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Decode failures (file, reason) with every file named by its path inside the gallery folder."""
        return [(self.relative_path(f), reason.replace(str(f), self.relative_path(f))) for f, reason in failures]

    def captions_of(self, video_index: int) -> list[int]:
        """Indices of the captions whose ground truth is this video (one in 1k-A, several in MSVD/VATEX)."""
        return np.flatnonzero(self.caption_video == video_index).tolist()

    def video_index(self, video_id: str) -> int:
        """Position of a video id in this split (raises KeyError when absent)."""
        try:
            return self.video_ids.index(video_id)
        except ValueError:
            raise KeyError(f"video {video_id!r} is not in {self.name}/{self.split}") from None

    def __repr__(self) -> str:
        return (
            f"Benchmark({self.name!r}, split={self.split!r}, videos={self.num_videos}, "
            f"captions={self.num_captions}, root={str(self.root)!r})"
        )
