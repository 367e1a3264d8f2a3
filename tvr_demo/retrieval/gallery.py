"""Encoded galleries: a split's clips as rows of the feature store (encoded only where the store lacks them, chunk by
chunk, each chunk committed before the next), and its captions' bank, cached beside the store."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
import torch.distributed as dist
from tqdm import tqdm

from tvr_demo.data import Benchmark
from tvr_demo.data.video import decode_videos
from tvr_demo.errors import DatasetError
from tvr_demo.memory import nbytes
from tvr_demo.models.checkpoints import Checkpoint
from tvr_demo.models.config import ModelConfig
from tvr_demo.retrieval.fingerprints import ContentKeys, captions_key, store_key
from tvr_demo.retrieval.scoring import TextBank, VideoBank, encode_texts, encode_video_frames, rows_of
from tvr_demo.retrieval.shards import Layout, ShardWriter, lexicon_matrix
from tvr_demo.retrieval.store import FeatureStore, StoreRows

CHUNK = int(os.environ.get("TVR_DEMO_ENCODE_CHUNK", 128))  # clips encoded and committed at a time
# galleries up to this size are held in memory (float32: 1.2 GB of ViT-B/32 frames at the limit), and their stored
# rows checked against their chunks' sha256 when opened (they are read in full anyway); larger ones are scored from
# the store's memory map
IN_MEMORY_MAX = 50_000
# The store keeps the frames of galleries held in memory in float32, exactly as the encoder gave them, so that every
# score and metric equals the official code's from the same checkpoint; larger galleries keep them in float16, which
# halves the disk and what a re-ranking reads (scores then differ from float32 ones by the rounding, ~1e-3)
HELD_FRAMES_DTYPE, STORED_FRAMES_DTYPE = "float32", "float16"
# captions encoded (and their lexicons cut to top-k) at a time: a UNIFY batch holds its valid tokens' logits over the
# whole vocabulary, so the peak grows with the batch (bench/notes/text_chunk.md)
TEXT_CHUNK = 32
Progress = Callable[[int, int, float], None]  # (clips encoded, clips to encode, seconds elapsed)


@dataclass(frozen=True)
class Coverage:
    """How much of a gallery a search covers while it is still being encoded."""

    encoded: int
    total: int

    @property
    def complete(self) -> bool:
        return self.encoded == self.total

    def notice(self) -> str | None:
        """The sentence a search over a part of the gallery carries; None once all of it is encoded."""
        if self.complete:
            return None
        return (f"searched the {self.encoded:,} of {self.total:,} clips encoded so far "
                f"({100 * self.encoded / self.total:.0f}%); encoding continues")


class EncodedGallery:
    """A split's encoded clips and captions. The clips are rows of the memory-mapped store; `videos` holds them in
    memory as float32 for the views that score the whole split, made on first use. While an encode is under way the
    gallery grows chunk by chunk, and a clip not encoded yet counts as not decoded (never retrieved)."""

    def __init__(self, store: FeatureStore, bench: Benchmark, path: Path, device: torch.device) -> None:
        self.store, self.path, self.bench, self.device = store, path, bench, device
        n = bench.num_videos
        self.locations = np.full(n, -1, dtype=np.int64)  # each clip's row in the store
        self.encoded = np.zeros(n, dtype=bool)
        self._decoded = np.zeros(n, dtype=bool)
        self._reasons: dict[int, str] = {}  # clip -> why it has no features
        self.texts: TextBank | None = None  # the captions', once encoded
        self._videos: VideoBank | None = None
        self._lock = threading.Lock()

    def add(self, clips: np.ndarray, locations: np.ndarray) -> None:
        """Clips whose rows are now in the store (a chunk just committed, or found there)."""
        if not len(clips):
            return
        ok = self.store.gather(locations, ("ok",))["ok"]
        with self._lock:
            self.locations[clips] = locations
            if self._videos is not None:
                self._fill(clips[ok], locations[ok])
            for clip, location, good in zip(clips, locations, ok, strict=True):
                if not good:
                    self._reasons[int(clip)] = self.store.failure(int(location)) or "could not be decoded"
            self._decoded[clips] = ok
            self.encoded[clips] = True

    def fail(self, clips: np.ndarray, reason: str) -> None:
        """Clips that have no content to encode (a missing file)."""
        with self._lock:
            self._reasons.update({int(c): reason for c in clips})
            self.encoded[clips] = True

    @property
    def decoded_ok(self) -> np.ndarray:
        """(n_videos,) bool: encoded from a decoded clip. A fresh array: a search's snapshot of what it may rank."""
        return self._decoded & self.encoded

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(file, reason) of each clip that could not be decoded."""
        return [(str(self.bench.video_paths[c]), self._reasons[c]) for c in sorted(self._reasons)]

    @property
    def coverage(self) -> Coverage:
        return Coverage(int(self.encoded.sum()), len(self.encoded))

    @property
    def complete(self) -> bool:
        return self.coverage.complete and (self.texts is not None or self.bench.num_captions == 0)

    @property
    def videos(self) -> VideoBank:
        """Every clip's features in memory (float32; zeros where a clip has none), read from the store once."""
        with self._lock:
            if self._videos is None:
                layout, n, device = self.store.layout, len(self.locations), self.device
                self._videos = VideoBank(torch.zeros(n, layout.frames, layout.dim, device=device),
                                         torch.zeros(n, layout.frames, dtype=torch.int64, device=device),
                                         torch.zeros(n, layout.frames, device=device),
                                         torch.zeros(n, layout.dim, device=device), None)
                if layout.lexicon_k:
                    self._lexicon = (np.zeros((n, layout.lexicon_k), np.int32),
                                     np.zeros((n, layout.lexicon_k), np.float32))
                ok = np.flatnonzero(self._decoded & self.encoded)
                self._fill(ok, self.locations[ok])
            return self._videos

    def _fill(self, clips: np.ndarray, locations: np.ndarray) -> None:
        """Copy stored rows into the in-memory bank (under the lock)."""
        bank, index = self.store.bank(locations), torch.as_tensor(clips, device=self.device)
        for name in ("frames", "mask", "weights", "pooled"):
            getattr(self._videos, name)[index] = getattr(bank, name).to(self.device)
        if self.store.layout.lexicon_k:
            ids, values = self._lexicon
            got = self.store.gather(locations, ("lexicon_ids", "lexicon_values"))
            ids[clips], values[clips] = got["lexicon_ids"], got["lexicon_values"]
            self._videos.lexicon = lexicon_matrix(ids, values, self.store.layout.vocab)

    @property
    def held(self) -> bool:
        """Whether the clips are held in memory (`videos` was read), else scored from the store's memory map."""
        return self._videos is not None

    def rows(self, clips: np.ndarray, dtype: torch.dtype = torch.float32) -> VideoBank:
        """Some clips' features: from memory when held there, else from the store (frames in `dtype`)."""
        if self._videos is not None:
            return rows_of(self._videos, list(clips))
        bank = self.store.bank(self.locations[clips], dtype)
        self.store.release()
        return bank

    def stored_rows(self) -> StoreRows:
        """The clips as rows of the store, for a two-stage index over a gallery not held in memory."""
        return StoreRows(self.store, self.locations)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (the memory-mapped store is the page cache's, not counted)."""
        return nbytes(self.texts) + nbytes(self._videos) + self.locations.nbytes


# ---------------------------------------------------------------- encoding


def layout_of(config: ModelConfig, num_videos: int) -> Layout:
    """The shapes a model's clips take in the store, for a gallery of `num_videos` clips."""
    dtype = HELD_FRAMES_DTYPE if num_videos <= IN_MEMORY_MAX else STORED_FRAMES_DTYPE
    if config.unify is None:
        return Layout(config.max_frames, config.embed_dim, frames_dtype=dtype)
    return Layout(config.max_frames, config.embed_dim, config.unify.top_k, config.clip["text_cfg"]["vocab_size"],
                  frames_dtype=dtype)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _content_keys(bench: Benchmark, cache_root: Path, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every clip's content key; under torchrun each rank hashes its share of the files and all trade them."""
    rank, world = _rank_world()
    keys = ContentKeys(cache_root / "clip_keys.sqlite")
    try:
        mine = keys.keys(bench.video_paths[rank::world], progress)
    finally:
        keys.close()
    if world == 1:
        return mine
    shares: list = [None] * world
    dist.all_gather_object(shares, mine)
    out_keys = np.zeros((bench.num_videos, mine[0].shape[1]), dtype=np.uint8)
    found = np.zeros(bench.num_videos, dtype=bool)
    for r, (k, f) in enumerate(shares):
        out_keys[r::world], found[r::world] = k, f
    return out_keys, found


class GalleryEncoder:
    """Encodes what a gallery's clips lack in the store. `gallery` is usable at once: it holds what the store had,
    and grows as `run` commits each chunk."""

    def __init__(self, checkpoint: Checkpoint, bench: Benchmark, cache_root: Path, progress: bool = True,
                 num_workers: int | None = None, verify: bool = True) -> None:
        """`verify`: check the stored rows of a gallery held in memory against their chunks' sha256 (what is damaged
        counts as missing); off, only to ask what is missing."""
        if bench.num_videos == 0:
            raise DatasetError(f"the gallery {bench.name}/{bench.split} has no videos: it needs at least one")
        self.checkpoint, self.bench, self.cache_root = checkpoint, bench, Path(cache_root)
        self.num_workers = num_workers
        self.sampling = checkpoint.config.sampling(bench.end_s)
        self.layout = layout_of(checkpoint.config, bench.num_videos)
        store_name = f"{store_key(checkpoint, self.sampling)}-{self.layout.frames_dtype}"
        self.directory = self.cache_root / "store" / store_name
        self.keys, found = _content_keys(bench, self.cache_root, progress)
        # what is derived from this very gallery (its index, its map) goes in a folder of its own: its clips' contents
        # in order, and its captions
        key = hashlib.sha256(self.keys.tobytes() + found.tobytes() + captions_key(checkpoint, bench.captions).encode())
        self.gallery = EncodedGallery(FeatureStore(self.directory, self.layout), bench,
                                      self.directory / "galleries" / key.hexdigest()[:24], checkpoint.model.device)
        self.gallery.fail(np.flatnonzero(~found), "video file not found")
        with_file = np.flatnonzero(found)
        _, first, inverse = np.unique(self.keys[with_file], axis=0, return_index=True, return_inverse=True)
        self.content = np.full(bench.num_videos, -1, dtype=np.int64)  # clips with the same bytes share an id
        self.content[with_file] = inverse.ravel()
        if verify and bench.num_videos <= IN_MEMORY_MAX:
            self._drop_damaged(with_file)
        self._take_in(with_file)
        distinct = with_file[first]  # one clip per content, the first in gallery order
        self.todo = np.sort(distinct[self.gallery.locations[distinct] < 0])

    def _drop_damaged(self, clips: np.ndarray) -> None:
        """Stored rows whose bytes no longer match their commit's sha256 are not read: those clips are encoded again."""
        store = self.gallery.store
        locations = store.locate(self.keys[clips])
        locations = locations[locations >= 0]
        damaged = locations[~store.verify(locations)]
        if len(damaged):
            print(f"{len(damaged)} stored clip(s) of {self.bench.name}/{self.bench.split} fail their checksum in "
                  f"{self.directory.name}: encoding them again", file=sys.stderr)
            store.discard(damaged)

    def _take_in(self, clips: np.ndarray) -> None:
        """Clips whose keys the store holds now join the gallery."""
        locations = self.gallery.store.locate(self.keys[clips])
        have = locations >= 0
        self.gallery.add(clips[have], locations[have])

    @property
    def missing(self) -> int:
        """Clips to encode (distinct contents the store lacks)."""
        return len(self.todo)

    def run(self, progress: bool = True, report: Progress | None = None) -> EncodedGallery:
        """Encode the missing clips (under torchrun, this rank's share), then the captions; returns the gallery."""
        rank, world = _rank_world()
        mine = self.todo[rank::world]
        writer = ShardWriter(self.directory, self.layout, f"r{rank}" if world > 1 else "w")
        start, done = time.monotonic(), 0
        bar = tqdm(total=len(mine), desc="encoding clips" + (f" (rank {rank})" if world > 1 else ""), unit="clip",
                   file=sys.stderr, disable=not progress or not len(mine))
        try:
            for at in range(0, len(mine), CHUNK):
                clips = mine[at:at + CHUNK]
                self._encode_chunk(writer, clips)
                self.gallery.store.refresh()
                self._take_in(np.flatnonzero(np.isin(self.content, self.content[clips])))
                done += len(clips)
                bar.update(len(clips))
                if report is not None:
                    report(done, len(mine), time.monotonic() - start)
        finally:
            bar.close()
            writer.close()
        if world > 1:
            dist.barrier()  # every rank's shards are committed: take them all in
            self.gallery.store.refresh()
            self._take_in(np.flatnonzero(~self.gallery.encoded))
        self.gallery.texts = self._texts()
        return self.gallery

    def _encode_chunk(self, writer: ShardWriter, clips: np.ndarray) -> None:
        model, paths = self.checkpoint.model, [self.bench.video_paths[c] for c in clips]
        decoded = decode_videos(paths, self.sampling, self.checkpoint.config.image_size,
                                num_workers=self.num_workers, progress=False)
        bank = encode_video_frames(model, torch.as_tensor(np.asarray(decoded.videos)),
                                   torch.as_tensor(np.asarray(decoded.masks)))
        position = {str(p): i for i, p in enumerate(paths)}
        failures = {position[str(p)]: reason.replace(str(p), Path(p).name) for p, reason in decoded.failures}
        writer.append(self.keys[clips], np.asarray(decoded.ok), bank, failures)

    def _texts(self) -> TextBank:
        """The captions' bank, read from its cache file or encoded and written there (by rank 0 under torchrun)."""
        path = self.cache_root / "texts" / f"{captions_key(self.checkpoint, self.bench.captions)}.safetensors"
        rank, world = _rank_world()
        texts = _read_texts(path)
        if texts is None and rank == 0:
            model, captions = self.checkpoint.model, self.bench.captions
            texts = _concat(TextBank, [_sparse_lexicon(encode_texts(model, captions[i:i + TEXT_CHUNK]))
                                       # no captions: an empty bank (0 rows), so the views score none
                                       for i in range(0, max(len(captions), 1), TEXT_CHUNK)])
            _write_texts(path, texts)
        if world > 1:
            dist.barrier()
            texts = texts or _read_texts(path)
        return _to_device(texts, self.checkpoint.model.device)


def encode_gallery(checkpoint: Checkpoint, bench: Benchmark, cache_root: Path, progress: bool = True,
                   num_workers: int | None = None) -> EncodedGallery:
    """Encode (or read back) a split: only the clips whose content the store lacks are encoded, so a second call
    encodes nothing, a folder with ten new clips encodes ten, and a killed encode resumes at its last chunk."""
    return GalleryEncoder(checkpoint, bench, cache_root, progress, num_workers).run(progress)


# ---------------------------------------------------------------- the captions' bank on disk


def _sparse_lexicon(bank):
    """The bank's top-k lexicon as a scipy CSR matrix: the inverted index's rows, stored without the zeros."""
    if bank.lexicon is not None:
        bank.lexicon = scipy.sparse.csr_matrix(bank.lexicon.float().cpu().numpy())
    return bank


def _concat(cls, parts: list):
    out = {}
    for f in fields(cls):
        vals = [getattr(p, f.name) for p in parts]
        if vals[0] is None:
            out[f.name] = None
        elif scipy.sparse.issparse(vals[0]):
            out[f.name] = scipy.sparse.vstack(vals, format="csr")
        else:
            out[f.name] = torch.cat(vals)
    return cls(**out)


def _write_texts(path: Path, bank: TextBank) -> None:
    from safetensors.torch import save_file

    out = {}
    for f in fields(bank):
        value = getattr(bank, f.name)
        if value is None:
            continue
        if f.name == "lexicon":
            out["lexicon_data"] = torch.from_numpy(value.data.astype(np.float32))
            out["lexicon_indices"] = torch.from_numpy(value.indices.astype(np.int64))
            out["lexicon_indptr"] = torch.from_numpy(value.indptr.astype(np.int64))
            out["lexicon_shape"] = torch.tensor(value.shape)
        else:
            out[f.name] = value.detach().cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file(out, str(tmp))
    os.replace(tmp, path)


def _read_texts(path: Path) -> TextBank | None:
    """The cached bank, or None when absent or unreadable (it is then encoded again)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None
    values = {f.name: tensors.get(f.name) for f in fields(TextBank)}
    if "lexicon_data" in tensors:
        values["lexicon"] = scipy.sparse.csr_matrix(
            (tensors["lexicon_data"].numpy(), tensors["lexicon_indices"].numpy(), tensors["lexicon_indptr"].numpy()),
            shape=tuple(tensors["lexicon_shape"].tolist()))
    return TextBank(**values)


def _to_device(bank: TextBank, device: torch.device) -> TextBank:
    for f in fields(bank):
        value = getattr(bank, f.name)
        if isinstance(value, torch.Tensor):
            setattr(bank, f.name, value.to(device))
    return bank
