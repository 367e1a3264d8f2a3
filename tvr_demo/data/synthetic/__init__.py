"""The bundled synthetic benchmark: coloured shapes that move, as H.264 clips with captions in MSR-VTT's layout."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# here: the config, planning the splits, generate; beside it: vocabulary (words and values), scenes (what a clip
# shows, where things are), captions, render (pixels, H.264), annotations (the files)
from tvr_demo.data.synthetic.annotations import write_annotations
from tvr_demo.data.synthetic.captions import _captions, describe
from tvr_demo.data.synthetic.render import _render_job, render_frames
from tvr_demo.data.synthetic.scenes import layout, make_twin, sample_clip
from tvr_demo.data.synthetic.vocabulary import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    NUMBERS,
    OPPOSITE_MOTION,
    RADIUS,
    SHAPES,
    SIZES,
    SPIN_DEG_PER_S,
    STRUCTURES,
)
from tvr_demo.errors import DatasetError

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "GENERATOR_VERSION",
    "MOTIONS",
    "NUMBERS",
    "OPPOSITE_MOTION",
    "RADIUS",
    "SHAPES",
    "SIZES",
    "SPIN_DEG_PER_S",
    "STRUCTURES",
    "SPLITS",
    "SyntheticConfig",
    "ensure_default_dataset",
    "generate",
    "render_frames",
    "render_splits",
    "rendered_splits",
]

GENERATOR_VERSION = 1  # bump when the content changes, so old copies can be told apart


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate; the defaults are the bundled benchmark."""

    seed: int = 0
    n_train: int = 5000  # enough for the tiny bundled model to learn every attribute word
    n_test: int = 1000  # the size of MSR-VTT 1k-A, so metrics read on the same scale
    n_val: int = 200  # for model selection without touching test
    resolution: int = 128  # square frames; the bundled model resizes to 64, an exact halving
    fps: int = 5  # enough for smooth motion; 1 fps sampling keeps every 5th frame
    min_duration_s: int = 4  # under 12 s a clip gives fewer than DRL's 12 frames: padding gets exercised
    max_duration_s: int = 16
    min_sequence_s: int = 6  # a two-event clip needs at least 3 sampled frames per event
    captions_per_train_clip: int = 5  # paraphrases per training clip (MSR-VTT has 20 per clip)
    twin_fraction: float = 0.4  # share of clips in twin pairs that differ in one attribute (hard negatives)
    crf: int = 23  # x264 quality: solid colours survive it, files stay about 10 kB


# each split draws from its own random stream, so the test split does not change with n_train
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def _plan_split(rng: np.random.Generator, n: int, cfg: SyntheticConfig, unique: bool) -> list[dict]:
    """n clips, a `twin_fraction` share of them in twin pairs; `unique`: no two with the same canonical caption."""
    clips: list[dict] = []
    seen: set[str] = set()
    p_twin = cfg.twin_fraction / (
        2 - cfg.twin_fraction
    )  # a pair adds 2 clips: this gives the share asked for
    while len(clips) < n:
        clip = sample_clip(rng, cfg)
        if unique and describe(clip, canonical=True) in seen:
            continue
        group = [clip]
        if len(clips) + 2 <= n and rng.random() < p_twin:
            made = make_twin(clip, rng)
            if made is not None and not (unique and describe(made[0], canonical=True) in seen):
                twin, attr = made
                clip["twin_of"], twin["twin_of"] = len(clips) + 1, len(clips)
                clip["differs_in"] = twin["differs_in"] = attr
                group.append(twin)
        for c in group:
            c.setdefault("twin_of", None)
            c.setdefault("differs_in", None)
            seen.add(describe(c, canonical=True))
            clips.append(c)
    for c in clips:
        c["captions"] = _captions(c, cfg.captions_per_train_clip if not unique else 1, rng)
    return clips


def _records(cfg: SyntheticConfig) -> list[dict]:
    """Every clip's attribute record, train then val then test, numbered video0, video1, ... as in MSR-VTT."""
    records: list[dict] = []
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        first = len(records)
        rng = np.random.default_rng([cfg.seed, _SPLIT_STREAM[split]])
        for clip in _plan_split(rng, n, cfg, unique=split != "train"):
            twin = clip["twin_of"]
            records.append(
                {
                    "video_id": f"video{len(records)}",
                    "split": split,
                    "structure": clip["structure"],
                    "count": clip["count"],
                    "background": clip["background"],
                    "duration_s": clip["duration_s"],
                    "fps": cfg.fps,
                    "num_frames": clip["duration_s"] * cfg.fps,
                    "resolution": cfg.resolution,
                    "objects": layout(clip),
                    "twin_of": None if twin is None else f"video{first + twin}",
                    "differs_in": clip["differs_in"],
                    "canonical_caption": describe(clip, canonical=True),
                    "captions": clip["captions"],
                }
            )
    return records


SPLITS = ("train", "val", "test")


def _render(jobs: list[tuple[dict, str, int]], progress: bool, num_workers: int) -> None:
    """Render and encode the clips of `jobs` (record, path, crf), in worker processes when num_workers > 0."""
    from tqdm import tqdm

    with tqdm(total=len(jobs), desc="generating synthetic clips", unit="clip", file=sys.stderr,
              disable=not progress) as bar:
        if num_workers > 0:
            # fork where there is one: spawn would re-run an unguarded caller script in every worker; the
            # workers touch no torch, so locks a forked child might inherit from torch threads do not matter
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            with context.Pool(num_workers) as pool:
                for _ in pool.imap_unordered(_render_job, jobs, chunksize=8):
                    bar.update(1)
        else:
            for job in jobs:
                _render_job(job)
                bar.update(1)


def generate(out: Path, config: SyntheticConfig, progress: bool = True, num_workers: int = 2,
             splits: tuple[str, ...] = SPLITS) -> Path:
    """Write the benchmark to `out` (which must not exist or be empty); atomic: built beside it, then renamed.
    Every annotation file is written; only the clips of `splits` are rendered (`render_splits` adds the others)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} already exists and is not empty; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "videos").mkdir(parents=True)
    try:
        records = _records(config)
        rendered = [s for s in SPLITS if s in splits]
        write_annotations(tmp, config, records, GENERATOR_VERSION, rendered)
        _render([(r, str(tmp / "videos" / f"{r['video_id']}.mp4"), config.crf) for r in records
                 if r["split"] in rendered], progress, num_workers)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (out / "synthetic.json").is_file():  # another process finished the same dataset first
            return out
        raise
    return out


def rendered_splits(root: Path) -> tuple[str, ...]:
    """The splits of a generated benchmark whose clips are on disk (every split, for copies older than the field)."""
    meta = json.loads((Path(root) / "synthetic.json").read_text(encoding="utf-8"))
    return tuple(meta.get("rendered", SPLITS))


_render_lock = threading.Lock()  # one render per process: two users asking for the training split share one


def render_splits(root: Path, splits: tuple[str, ...], progress: bool = True, num_workers: int = 2) -> Path:
    """Render the clips of `splits` that a benchmark written by `generate` left out (from the config it recorded:
    the same seed gives the same clips). Each clip is built beside the folder and moved in whole, and the split is
    marked done only once every clip is in, so an interrupted render is simply redone."""
    root = Path(root)
    with _render_lock:
        missing = [s for s in SPLITS if s in splits and s not in rendered_splits(root)]
        if not missing:
            return root
        meta = json.loads((root / "synthetic.json").read_text(encoding="utf-8"))
        config = SyntheticConfig(**meta["config"])
        tmp = root.parent / f".{root.name}.render-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            records = [r for r in _records(config) if r["split"] in missing]
            _render([(r, str(tmp / f"{r['video_id']}.mp4"), config.crf) for r in records], progress, num_workers)
            for r in records:
                os.replace(tmp / f"{r['video_id']}.mp4", root / "videos" / f"{r['video_id']}.mp4")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta["rendered"] = [s for s in SPLITS if s in meta.get("rendered", SPLITS) or s in missing]
        staged = root / f".synthetic.json.tmp-{os.getpid()}"
        staged.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(staged, root / "synthetic.json")
    return root


_DEFAULT_DATASET_LOCK = threading.Lock()


def ensure_default_dataset(progress: bool = True, splits: tuple[str, ...] = ("test",)) -> Path:
    """The bundled benchmark's folder with the clips of `splits` on disk. The first start renders the test split
    alone (the app serves it; about 14 s on 2 cores against a minute for all three), the others on first use."""
    from tvr_demo.paths import default_dataset_dir

    target = default_dataset_dir()
    with _DEFAULT_DATASET_LOCK:  # the app generates it after serving, while the page's first requests ask for it
        if not (target / "synthetic.json").is_file():
            return generate(target, SyntheticConfig(), progress=progress, splits=splits)
        return render_splits(target, splits, progress)
