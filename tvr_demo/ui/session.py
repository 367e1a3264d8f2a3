"""The checkpoints and galleries the app serves: each engine is built once (with progress) and then shared,
read-only, by every user and listener."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from tvr_demo.checkpoints import list_checkpoints, load_checkpoint
from tvr_demo.data import Benchmark, load_benchmark
from tvr_demo.engine import Engine
from tvr_demo.errors import CheckpointError, DatasetError, QueryError
from tvr_demo.paths import data_dir, default_dataset_dir
from tvr_demo.safety import UnsafePathError, resolve_within, within
from tvr_demo.scoring import default_device
from tvr_demo.ui.media import video_thumbnail

Progress = Callable[..., object] | None  # gr.Progress or None


def _label(spec: str, taken: set[str]) -> str:
    """A short dropdown name for a checkpoint spec: the registry name, or the folder / file name of a path."""
    path = Path(spec)
    base = path.name if (path.exists() or "/" in spec) else spec
    label, n = base, 2
    while label in taken:
        label, n = f"{base}-{n}", n + 1
    return label


def model_summary(config) -> str:
    """One line on what a model computes, for headers and tables."""
    if config.unify is not None:
        return f"UNIFY: latent {config.unify.latent} + lexicon (top-{config.unify.top_k} words), fused"
    parts = [config.interaction.upper(), config.temporal]
    if config.cdcr.variant:
        parts.append(f"CDCR v{config.cdcr.variant} (α1={config.cdcr.alpha1:g}, α2={config.cdcr.alpha2:g})")
    return " + ".join(parts)


class Session:
    """Checkpoint specs by display name, the gallery given at start, and the engines built so far (the most recently
    used `max_engines` of them: each holds its gallery's features and score matrices, which for a training split
    run to hundreds of MB, so clients browsing splits and models must not grow the server without bound)."""

    def __init__(self, checkpoints: Sequence[str] | None = None, dataset: str | Path | None = None,
                 split: str = "test", device: str | None = None, cache_root: Path | None = None,
                 max_engines: int | None = None) -> None:
        specs = list(checkpoints) if checkpoints else [entry["name"] for entry in list_checkpoints()]
        if not specs:
            raise CheckpointError("no checkpoints: checkpoints/registry.json lists none and no --checkpoint was "
                                  "given; pass --checkpoint NAME_OR_PATH")
        self.models: dict[str, str] = {}
        for spec in specs:
            self.models[_label(str(spec), set(self.models))] = str(spec)
        # "" = the bundled benchmark, generated on first use; a path is made absolute, as clients send it back
        self.dataset = str(Path(dataset).expanduser().resolve()) if dataset else ""
        self.split = split
        self.device = str(default_device(device))
        self.cache_root = cache_root
        self.max_engines = max(1, max_engines or int(os.environ.get("TVR_DEMO_MAX_ENGINES", 8)))
        self._engines: OrderedDict[tuple[str, str, str], Engine] = OrderedDict()  # least recently used first
        self._engines_lock = threading.Lock()  # guards the dict only; builds hold self._lock
        self._benchmarks: dict[tuple[str, str], Benchmark] = {}
        self._lock = threading.Lock()

    @property
    def default_model(self) -> str:
        """DRL's weighted token-wise model when served (the page opens on the heatmaps the papers are about), else the
        first model."""
        return "drl-wti" if "drl-wti" in self.models else next(iter(self.models))

    @property
    def data_roots(self) -> list[Path]:
        """The folders a client may pick galleries from: the data folder and the gallery given at start."""
        return [data_dir()] + ([Path(self.dataset)] if self.dataset else [])

    def dataset_dir(self, dataset: str | None, progress: Progress = None, split: str | None = None) -> Path:
        """The folder of a gallery, which must lie inside `data_roots`; blank means the gallery given at start, or
        the bundled benchmark, whose `split` is generated (with progress) if missing."""
        dataset = (dataset or self.dataset or "").strip()
        if dataset:
            path = resolve_within(dataset, self.data_roots, "gallery folder",
                                  "give a folder inside one of them, or leave it blank for the default gallery")
            if not path.is_dir():
                raise DatasetError(f"gallery folder {dataset} does not exist; give a benchmark folder (e.g. one "
                                   "written by `python -m tvr_demo generate --out DIR`)")
            return path
        from tvr_demo.data.synthetic import ensure_default_dataset

        if progress is not None:
            progress(0, desc=f"preparing the bundled benchmark's {split or self.split} split (generated once)")
        return ensure_default_dataset(progress=True, splits=(split or self.split,))

    def benchmark(self, dataset: str | None = None, split: str | None = None, progress: Progress = None) -> Benchmark:
        split = split or self.split
        root = self.dataset_dir(dataset, progress, split)
        key = (str(root), split)
        if key in self._benchmarks:  # no lock: a gallery being encoded must not hold up the galleries in use
            return self._benchmarks[key]
        with self._lock:
            if key not in self._benchmarks:
                trusted = self._is_start_gallery(root)
                if not trusted:
                    self._check_annotations(root)
                bench = load_benchmark(root, split)
                if not trusted:
                    self._check_videos(bench)
                self._benchmarks[key] = bench
            return self._benchmarks[key]

    def _is_start_gallery(self, root: Path) -> bool:
        """The gallery given at start (or the bundled one) is the operator's and trusted as it is; a gallery picked
        by a client may not reach files outside `data_roots`."""
        start = Path(self.dataset) if self.dataset else default_dataset_dir()
        return root.resolve() == start.resolve()

    def _check_annotations(self, root: Path) -> None:
        """Before anything is read: no file at the top of a client-picked gallery (where the annotation files are)
        may be a symlink out, or its contents could surface as captions or in an error message."""
        outside = sorted(p.name for p in root.iterdir() if p.is_symlink() and not within(p, self.data_roots))
        if outside:
            raise UnsafePathError(f"the gallery folder {root.name}/ has {len(outside)} file(s) that lead outside the "
                                  f"folders this app serves (e.g. {outside[0]}, a symlink)")

    def _check_videos(self, bench: Benchmark) -> None:
        """After loading: no video of a client-picked gallery may lead outside the served folders."""
        outside = [p for p in bench.video_paths if (p.is_symlink() or p.exists()) and not within(p, self.data_roots)]
        if outside:
            raise UnsafePathError(f"the gallery {bench.name}/{bench.split} has {len(outside)} video file(s) that lead "
                                  f"outside the folders this app serves (e.g. {outside[0].name}, a symlink?)")

    def engine(self, model: str | None = None, dataset: str | None = None, split: str | None = None,
               progress: Progress = None) -> Engine:
        """The engine for a model and gallery, built on first use: load the checkpoint, encode (or read back) the
        gallery. One build at a time, so two users never encode the same gallery twice."""
        model = model or self.default_model
        if model not in self.models:
            raise QueryError(f"unknown model {model!r}; choose one of: {', '.join(self.models)}")
        bench = self.benchmark(dataset, split, progress)
        key = (model, str(bench.root), bench.split)
        built = self._recent_engine(key)  # without waiting on a build of another engine
        if built is not None:
            return built
        if progress is not None:  # before the lock: a request waiting on a build (e.g. the start-up one) says so
            progress(0, desc=f"loading {model} and encoding {bench.name}/{bench.split} "
                             f"({bench.num_videos} videos; cached after the first time)")
        with self._lock:
            built = self._recent_engine(key)
            if built is None:
                built = Engine(load_checkpoint(self.models[model], self.device), bench, self.cache_root,
                               progress=True)
                with self._engines_lock:
                    self._engines[key] = built
                    while len(self._engines) > self.max_engines:  # requests holding an evicted one finish with it
                        self._engines.popitem(last=False)
            return built

    def _recent_engine(self, key: tuple[str, str, str]) -> Engine | None:
        """A built engine, marked as the most recently used; None when not built (or evicted)."""
        with self._engines_lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
            return engine

    @property
    def engines_held(self) -> list[tuple[str, str, str]]:
        """(model, gallery root, split) of the engines in memory, least recently used first."""
        with self._engines_lock:
            return list(self._engines)

    def warm(self, model: str | None = None) -> Engine:
        """Build a model's engine and score every caption once, so the first request does not wait for either."""
        engine = self.engine(model)
        _ = engine.matrices
        return engine

    def thumbnail(self, gallery_key: str, index: int) -> str:
        """A video's thumbnail (data URI) by the map's gallery key; only galleries already loaded are served."""
        root, _, split = str(gallery_key).rpartition("::")
        bench = self._benchmarks.get((root, split))
        if bench is None or not 0 <= int(index) < bench.num_videos:
            return ""
        return video_thumbnail(str(bench.video_paths[int(index)]))
