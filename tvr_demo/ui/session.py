"""The checkpoints and galleries the app serves: each engine is built once (with progress) and then shared,
read-only, by every user and listener."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import tvr_demo
from tvr_demo import Engine
from tvr_demo.errors import CheckpointError, DatasetError, QueryError
from tvr_demo.memory import MemoryBudgetError, free_dropped, gigabytes, memory_budget
from tvr_demo.paths import data_dir, default_dataset_dir
from tvr_demo.safety import UnsafePathError, public_name, resolve_within, within
from tvr_demo.ui.media import video_thumbnail

if TYPE_CHECKING:
    from tvr_demo import Benchmark, ScoringPath

Progress = Callable[..., object] | None  # gr.Progress or None
# A search or explanation whose engine is not ready waits for its preparation (another request's, or its own first
# encode), with progress: at most this long (the bundled training split's first encode takes 4-10 min on 2 busy
# cores), and at most this many at once, each in a slot of its own (ui/listeners.py's MODEL pool), so that a search
# on a ready engine never waits behind them.
PREPARATION_WAIT_S = 900.0
PREPARATION_WAITERS = 2


def _label(spec: str, taken: set[str]) -> str:
    """A short dropdown name for a checkpoint spec: the registry name, or the folder / file name of a path."""
    path = Path(spec)
    base = path.name if (path.exists() or "/" in spec) else spec
    base = public_name(base)
    label, n = base, 2
    while label in taken:
        label, n = f"{base}-{n}", n + 1
    return label


class Session:
    """Checkpoint specs by display name, the gallery given at start, and the engines built so far: the most recently
    used of them, as many as fit in `memory_budget` bytes together (each holds its gallery's features and score
    matrices, which for a training split run to GBs, so clients browsing splits and models must not grow the
    server without bound) and at most `max_engines`."""

    def __init__(self, checkpoints: Sequence[str] | None = None, dataset: str | Path | None = None,
                 split: str = "test", device: str | None = None, cache_root: Path | None = None,
                 max_engines: int | None = None, memory_budget_bytes: int | None = None) -> None:
        specs = list(checkpoints) if checkpoints else [entry["name"] for entry in tvr_demo.list_checkpoints()]
        if not specs:
            raise CheckpointError("no checkpoints: checkpoints/registry.json lists none and no --checkpoint was "
                                  "given; pass --checkpoint NAME_OR_PATH")
        self.models: dict[str, str] = {}
        for spec in specs:
            self.models[_label(str(spec), set(self.models))] = str(spec)
        # "" = the bundled benchmark, generated on first use; a path is made absolute, as clients send it back
        self.dataset = str(Path(dataset).expanduser().resolve()) if dataset else ""
        self.split = split
        self.device = str(tvr_demo.default_device(device))
        self.cache_root = cache_root
        self.max_engines = max(1, max_engines or int(os.environ.get("TVR_DEMO_MAX_ENGINES", 8)))
        self._engines: OrderedDict[tuple[str, str, str], Engine] = OrderedDict()  # least recently used first
        self._engines_lock = threading.Lock()  # guards the dict only; builds hold their key's lock
        self.memory_budget = memory_budget_bytes or memory_budget()
        self._benchmarks: dict[tuple[str, str], Benchmark] = {}
        self._lock = threading.Lock()  # benchmark loads and the per-key build locks
        self._build_locks: dict[tuple[str, str, str], threading.Lock] = {}
        # First encodes of a gallery (minutes, every core) run one at a time; a build read back from the cache (a
        # second) never waits for them.
        self._encode_lane = threading.Lock()
        self._preparation_waiters = threading.BoundedSemaphore(PREPARATION_WAITERS)

    @property
    def default_model(self) -> str:
        """DRL's weighted token-wise model when served (the page opens on the heatmaps the papers are about), else the
        first model."""
        return "drl-wti" if "drl-wti" in self.models else next(iter(self.models))

    @property
    def scorer(self) -> ScoringPath:
        """The token-wise scoring path on this device, and why (on CUDA the Triton kernel is checked on first use)."""
        return tvr_demo.serving_path(self.device)

    @property
    def data_roots(self) -> list[Path]:
        """The folders a client may pick galleries from: the data folder and the gallery given at start."""
        return [data_dir()] + ([Path(self.dataset)] if self.dataset else [])

    def dataset_dir(self, dataset: str | None, progress: Progress = None, split: str | None = None) -> Path:
        """The folder of a gallery, which must lie inside `data_roots`; blank means the gallery given at start, or
        the bundled benchmark, whose `split` is generated (with progress) if missing."""
        dataset = (dataset or "").strip() or self.dataset  # blank (spaces and control characters too): the default
        if dataset:
            path = resolve_within(dataset, self.data_roots, "gallery folder",
                                  "give a folder inside one of them, or leave it blank for the default gallery")
            if not path.is_dir():
                what = "is a file, not a folder" if path.exists() else "does not exist"
                raise DatasetError(f"gallery folder {self.display_path(path)} {what}; give a folder of clips or a "
                                   "benchmark folder (e.g. one written by `python -m tvr_demo generate --out DIR`)")
            return path
        if progress is not None:
            progress(0, desc=f"preparing the bundled benchmark's {split or self.split} split (generated once)")
        return tvr_demo.ensure_default_dataset(progress=True, splits=(split or self.split,))

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
                bench = tvr_demo.load_benchmark(root, split)
                if not trusted:
                    self._check_videos(bench)
                self._benchmarks[key] = public_names(bench)
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
               progress: Progress = None, searching: bool = False) -> Engine:
        """The engine for a model and gallery, built on first use: load the checkpoint, encode (or read back) the
        gallery. One build per engine at a time, so two users never encode the same gallery twice, and one first
        encode at a time. `searching`: the caller serves searches (ui/listeners.py's MODEL pool): a ready engine
        comes at once; one being prepared is waited for, within PREPARATION_WAIT_S and by at most PREPARATION_WAITERS
        callers at once (another gets a sentence)."""
        model = model or self.default_model
        if model not in self.models:
            raise QueryError(f"unknown model {model!r}; choose one of: {', '.join(self.models)}")
        bench = self.benchmark(dataset, split, progress)
        key = (model, str(bench.root), bench.split)
        built = self._recent_engine(key)  # without waiting on a build of another engine
        if built is not None:
            if not searching:  # the whole-split views need every clip: wait for an encode still running
                built.wait_encoded(_reporter(progress, f"{bench.name}/{bench.split}"))
            return built
        where = f"{model} on {bench.name}/{bench.split}"
        if progress is not None:  # before the lock: a request waiting on a build (e.g. the start-up one) says so
            progress(0, desc=f"loading {model} and encoding {bench.name}/{bench.split} "
                             f"({bench.num_videos} videos; cached after the first time)")
        with self._lock:
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        if not searching:
            with build_lock:
                return self._recent_engine(key) or self._build(key, model, bench, progress)
        if not self._preparation_waiters.acquire(blocking=False):
            raise QueryError(f"{where} is being prepared, and {PREPARATION_WAITERS} other requests already wait for "
                             "a preparation: search again in a minute")
        try:
            deadline = time.monotonic() + PREPARATION_WAIT_S
            self._wait(build_lock, deadline, progress, f"{where} is being prepared by another request")
            try:
                return self._recent_engine(key) or self._build(key, model, bench, progress, deadline)
            finally:
                build_lock.release()
        finally:
            self._preparation_waiters.release()

    @staticmethod
    def _wait(lock: threading.Lock, deadline: float | None, progress: Progress, what: str) -> None:
        """Acquire `lock`, saying `what` (and for how long so far) while it is held elsewhere; refuse at `deadline`."""
        started = time.monotonic()
        while not lock.acquire(timeout=1.0):
            if deadline is not None and time.monotonic() > deadline:
                raise QueryError(f"{what}, and is still not ready after {PREPARATION_WAIT_S / 60:.0f} minutes: try "
                                 "again later")
            if progress is not None:
                progress(None, desc=f"{what} ({time.monotonic() - started:.0f} s so far; a first encode takes "
                                    "minutes, then it is cached)")

    def _build(self, key: tuple[str, str, str], model: str, bench: Benchmark, progress: Progress,
               deadline: float | None = None) -> Engine:
        """Load the checkpoint and read its gallery from the cache, or encode it: in the encode lane, one at a time
        (waited for until `deadline`, when given)."""
        checkpoint = tvr_demo.load_checkpoint(self.models[model], self.device)
        checkpoint.name = public_name(checkpoint.name)  # the explanations name the model by it
        where = f"{bench.name}/{bench.split}"
        if Engine.is_cached(checkpoint, bench, self.cache_root):
            return self._keep(key, Engine(checkpoint, bench, self.cache_root, progress=True), where)
        self._wait(self._encode_lane, deadline, progress, f"{model} on {where} waits for another gallery's first "
                                                          "encode")
        try:
            if progress is not None:
                progress(0, desc=f"loading {model} and encoding {where} ({bench.num_videos} videos; cached after "
                                 "the first time)")
            # on a CPU (minutes to hours) searches are served over the clips encoded so far meanwhile
            built = Engine(checkpoint, bench, self.cache_root, progress=True,
                           encode_in_background=self.device == "cpu")
            self._keep(key, built, where)
            built.wait_encoded(_reporter(progress, where))
        finally:
            self._encode_lane.release()
        return built

    def _keep(self, key: tuple[str, str, str], built: Engine, where: str) -> Engine:
        """Hold a new engine under the budget (its later score matrices ask for room first, through `reserve`)."""
        built.matrices.reserve = lambda n: self._make_room(key, n, where)
        self._make_room(key, built.nbytes, where)
        dropped = []
        with self._engines_lock:
            self._engines[key] = built
            while len(self._engines) > self.max_engines:  # requests holding an evicted one finish with it
                dropped.append(self._engines.popitem(last=False)[1])
        free_dropped(dropped)
        return built

    def _make_room(self, key: tuple[str, str, str], need: int, where: str) -> None:
        """Drop the least recently used other engines until `need` more bytes fit in the budget beside what stays;
        refuse when they cannot fit even alone. The dropped ones are freed before the caller allocates."""
        dropped = []
        with self._engines_lock:
            own = self._engines[key].nbytes if key in self._engines else 0
            if own + need > self.memory_budget:
                raise MemoryBudgetError(
                    f"{where} needs {gigabytes(own + need)} in memory for this, over this server's budget of "
                    f"{gigabytes(self.memory_budget)} (TVR_DEMO_MEMORY_GB): use a smaller split (test or val)")
            others = [k for k in self._engines if k != key]  # least recently used first
            while others and own + need + sum(self._engines[k].nbytes for k in others) > self.memory_budget:
                dropped.append(self._engines.pop(others.pop(0)))
        free_dropped(dropped)

    def _recent_engine(self, key: tuple[str, str, str]) -> Engine | None:
        """A built engine, marked as the most recently used; None when not built (or evicted)."""
        with self._engines_lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
            return engine

    def warm(self, model: str | None = None) -> Engine:
        """Build a model's engine, score every caption once and run one typed search (on CUDA: the scorer's first
        launch of that shape and the text tower's first call), so the first request waits for none of them."""
        engine = self.engine(model)
        engine.matrices.compute()
        engine.search_text("a person is walking down the street")
        return engine

    def display_path(self, path: str | Path) -> str:
        """A server path as clients may see it: relative to the served folder it lies in (the gallery given at start
        shows as its folder name), never absolute."""
        path = Path(path)
        for root in reversed(self.data_roots):
            root = Path(root)
            try:
                rel = path.resolve().relative_to(root.resolve())
            except (ValueError, OSError):
                continue
            shown = str(Path(root.name) / rel) if root != data_dir() else (str(rel) if str(rel) != "." else root.name)
            return public_name(shown)
        return public_name(path.name)

    def thumbnail(self, gallery_key: str, index: int) -> str:
        """A video's thumbnail (data URI) by the map's gallery key; only galleries already loaded are served."""
        bench = next((b for b in list(self._benchmarks.values()) if gallery_key_of(b) == gallery_key), None)
        if bench is None or not 0 <= index < bench.num_videos:
            return ""
        with self._engines_lock:  # the frames of the model that drew the map: the most recently used on this gallery
            configs = [e.config for (_, r, s), e in reversed(self._engines.items())
                       if (r, s) == (str(bench.root), bench.split)]
        if not configs:
            return ""
        return video_thumbnail(str(bench.video_paths[index]), configs[0].sampling(bench.end_s))


def _reporter(progress: Progress, where: str) -> Callable[[str, float], None] | None:
    """An encode's progress (clips/s and the time left) as a gr.Progress shows it."""
    if progress is None:
        return None
    return lambda message, fraction: progress(fraction, desc=f"{where}: {message}")


def public_names(bench: Benchmark) -> Benchmark:
    """The split with every name a client may be shown (video ids, captions, attribute values) as `public_name`
    shows it: the model reads the captions as they are shown, and a client can send back a name as it saw it."""

    def shown(value):
        if isinstance(value, str):
            return public_name(value)
        if isinstance(value, dict):
            return {shown(k): shown(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shown(v) for v in value]
        return value

    return dataclasses.replace(bench, video_ids=shown(bench.video_ids), captions=shown(bench.captions),
                               attributes=shown(bench.attributes))


def gallery_key_of(bench: Benchmark) -> str:
    """How the map's points name their gallery (so a hover can ask for a thumbnail) without showing its path."""
    return hashlib.sha256(f"{bench.root}::{bench.split}".encode()).hexdigest()[:16]
