"""2-D UMAP coordinates of caption and video embeddings together, computed once per model and gallery and cached
on disk (UMAP takes seconds to minutes; `import umap` alone takes 5-30 s, so it is imported only when needed)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE_VERSION = 1  # bump when the projection's settings change


@dataclass(frozen=True)
class MapSettings:
    n_neighbors: int = 15  # umap-learn's default
    min_dist: float = 0.1  # umap-learn's default
    metric: str = "cosine"  # the models score with cosines
    seed: int = 0  # a fixed seed gives the same map every time (umap then runs single-threaded)

    def file_name(self) -> str:
        return f"embedding_map-v{CACHE_VERSION}-umap-{self.n_neighbors}-{self.min_dist:g}-{self.metric}-{self.seed}.npz"


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _project(points: np.ndarray, settings: MapSettings) -> np.ndarray:
    """(N, D) -> (N, 2). Below a dozen points UMAP's neighbour graph is degenerate: use PCA instead."""
    if len(points) < 12:
        centred = points - points.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1]))).astype(np.float32)
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(settings.n_neighbors, len(points) - 1),
                        min_dist=settings.min_dist, metric=settings.metric, random_state=settings.seed)
    return reducer.fit_transform(points).astype(np.float32)


def umap_coordinates(text: np.ndarray, video: np.ndarray, cache_dir: Path,
                     settings: MapSettings = MapSettings()) -> tuple[np.ndarray, np.ndarray]:
    """(n_text, 2) and (n_video, 2) map coordinates of text and video vectors projected together, read from
    `cache_dir` when a previous call wrote them for arrays of the same shapes."""
    path = Path(cache_dir) / settings.file_name()
    with _lock(path):
        if path.is_file():
            with np.load(path) as cached:
                if cached["text"].shape[0] == len(text) and cached["video"].shape[0] == len(video):
                    return cached["text"], cached["video"]
        xy = _project(np.concatenate([text, video]).astype(np.float32), settings)
        text_xy, video_xy = xy[: len(text)], xy[len(text):]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, text=text_xy, video=video_xy)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache (e.g. a shared gallery folder): the map is recomputed next time
        return text_xy, video_xy
