"""The feature store: every clip's encoded video features on disk (shards.py), found by the clip's content key and
memory-mapped, so a gallery far larger than RAM is scored without being loaded: only the rows a query needs are
read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tvr_demo.retrieval.scoring import VideoBank
from tvr_demo.retrieval.shards import (
    COMMITTED,
    ROW_BITS,
    Layout,
    MappedArray,
    Shard,
    lexicon_matrix,
    read_layout,
)


def _prefix(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each (n, KEY_BYTES) key as one sortable integer."""
    return np.ascontiguousarray(keys[:, :8]).view(np.uint64).ravel()


class FeatureStore:
    """The read side: every committed row of every shard, found by content key, gathered as banks. A location is
    `shard_id << ROW_BITS | row`, shard ids in the order this object first saw the shards (stable while it lives)."""

    def __init__(self, directory: Path, layout: Layout | None = None) -> None:
        self.directory = Path(directory)
        self.layout = layout or read_layout(self.directory)
        self.shards: list[Shard] = []
        self._indexed: list[int] = []  # rows of each shard already in the key index
        self._prefixes = np.empty(0, np.uint64)  # sorted key prefixes ...
        self._locations = np.empty(0, np.int64)  # ... and the location of each
        self.refresh()

    def refresh(self) -> None:
        """Take in the rows committed since the last refresh: new shards, and rows appended to known ones."""
        self.layout = self.layout or read_layout(self.directory)
        if self.layout is None:
            return
        known = {shard.directory.name for shard in self.shards}
        for directory in sorted(self.directory.glob("shard-*")):
            if directory.name not in known and (directory / COMMITTED).exists():
                try:
                    self.shards.append(Shard(directory, self.layout))
                except (OSError, ValueError, TypeError):  # a damaged file (e.g. cut short): its clips are encoded again
                    continue
                self._indexed.append(0)
        prefixes, locations = [self._prefixes], [self._locations]
        for sid, shard in enumerate(self.shards):
            shard.read_commit()
            start = self._indexed[sid]
            if shard.rows > start:
                prefixes.append(_prefix(shard["key"][start:shard.rows]))
                locations.append((sid << ROW_BITS) + np.arange(start, shard.rows, dtype=np.int64))
                self._indexed[sid] = shard.rows
        if len(prefixes) > 1:
            prefixes, locations = np.concatenate(prefixes), np.concatenate(locations)
            order = np.argsort(prefixes, kind="stable")
            self._prefixes, self._locations = prefixes[order], locations[order]

    def __len__(self) -> int:
        return sum(shard.rows for shard in self.shards)

    def locations(self) -> np.ndarray:
        """Every committed row, shard by shard."""
        return np.concatenate([(sid << ROW_BITS) + np.arange(shard.rows, dtype=np.int64)
                               for sid, shard in enumerate(self.shards)] or [np.empty(0, np.int64)])

    def locate(self, keys: np.ndarray) -> np.ndarray:
        """(n,) location of each (n, KEY_BYTES) key, -1 where the store does not hold it."""
        out = np.full(len(keys), -1, dtype=np.int64)
        if not len(keys) or not len(self._prefixes):
            return out
        wanted = _prefix(keys)
        first = np.searchsorted(self._prefixes, wanted, "left")
        last = np.searchsorted(self._prefixes, wanted, "right")
        for i in np.flatnonzero(last > first):  # the same first 8 bytes: compare the whole key
            for location in self._locations[first[i]:last[i]]:
                if np.array_equal(self.gather([location], ("key",))["key"][0], keys[i]):
                    out[i] = location
                    break
        return out

    def gather(self, locations, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The stored arrays of these rows, in the order given (rows read shard by shard, in file order)."""
        locations = np.asarray(locations, dtype=np.int64)
        fields = self.layout.fields()
        names = names or tuple(fields)
        out = {name: np.empty((len(locations), *fields[name][0]), fields[name][1]) for name in names}
        shard_ids, rows = locations >> ROW_BITS, locations & ((1 << ROW_BITS) - 1)
        for sid in np.unique(shard_ids):
            picked = np.flatnonzero(shard_ids == sid)
            picked = picked[np.argsort(rows[picked], kind="stable")]
            shard = self.shards[int(sid)]
            for name in names:
                out[name][picked] = shard[name][rows[picked]]
        return out

    def bank(self, locations, dtype: torch.dtype = torch.float32) -> VideoBank:
        """These rows as a VideoBank; frames in `dtype` (float16 keeps them as stored: the scorers read blocks of
        them as float32, so a re-ranking reads half the bytes)."""
        got = self.gather(locations, tuple(n for n in self.layout.fields() if n not in ("key", "ok")))
        lexicon = None
        if self.layout.lexicon_k:
            lexicon = lexicon_matrix(got["lexicon_ids"], got["lexicon_values"], self.layout.vocab)
        return VideoBank(torch.from_numpy(got["frames"]).to(dtype), torch.from_numpy(got["mask"].astype(np.int64)),
                         torch.from_numpy(got["weights"]), torch.from_numpy(got["pooled"]), lexicon)

    def verify(self, locations: np.ndarray) -> np.ndarray:
        """(n,) bool: whether each row's chunk still has the bytes its commit recorded (checked once per chunk).
        Reads every chunk the rows fall in: meant for galleries read into memory anyway."""
        locations = np.asarray(locations, dtype=np.int64)
        good = np.ones(len(locations), dtype=bool)
        shard_ids, rows = locations >> ROW_BITS, locations & ((1 << ROW_BITS) - 1)
        for sid in np.unique(shard_ids):
            shard, mine = self.shards[int(sid)], shard_ids == sid
            for start, stop, digest in shard.chunks:
                inside = mine & (rows >= start) & (rows < stop)
                if inside.any() and shard.digest(start, stop) != digest:
                    good[inside] = False
            self._release(shard)
        return good

    def discard(self, locations: np.ndarray) -> None:
        """Damaged rows: their keys are zeroed on disk, so no reader finds them again (their clips are encoded again,
        into new rows). Committed rows are never written by their shard's writer again, so this cannot race it."""
        locations = np.asarray(locations, dtype=np.int64)
        for sid in np.unique(locations >> ROW_BITS):
            shard = self.shards[int(sid)]
            keys = MappedArray(shard.directory / "key.npy", writable=True)
            keys.array[locations[locations >> ROW_BITS == sid] & ((1 << ROW_BITS) - 1)] = 0
            keys.flush()
        keep = ~np.isin(self._locations, locations)
        self._prefixes, self._locations = self._prefixes[keep], self._locations[keep]

    def will_need(self, locations: np.ndarray, name: str) -> None:
        """Ask the disk for these rows of one array at once, so the reads that follow find them in the page cache:
        on a cold store, 8,000 rows faulted in one by one took 2.1-2.3 s, asked for first about 0.4 s."""
        locations = np.sort(np.asarray(locations, dtype=np.int64))
        for sid in np.unique(locations >> ROW_BITS):
            rows = locations[locations >> ROW_BITS == sid] & ((1 << ROW_BITS) - 1)
            self.shards[int(sid)].arrays[name].will_need(rows)

    def read_rows(self, locations: np.ndarray, name: str, out: np.ndarray) -> None:
        """These rows of one array copied into `out` in the order given, by pread rather than through the map: a
        re-rank's scattered rows cost no page fault per page and leave this process's resident memory as it was."""
        locations = np.asarray(locations, dtype=np.int64)
        shard_ids, rows = locations >> ROW_BITS, locations & ((1 << ROW_BITS) - 1)
        if len(shard_ids) and (shard_ids == shard_ids[0]).all():
            self.shards[int(shard_ids[0])].arrays[name].read_rows(rows, out)
            return
        for sid in np.unique(shard_ids):
            picked = np.flatnonzero(shard_ids == sid)
            part = np.empty((len(picked), *out.shape[1:]), out.dtype)
            self.shards[int(sid)].arrays[name].read_rows(rows[picked], part)
            out[picked] = part

    def failure(self, location: int) -> str | None:
        """Why a clip stored as not decoded failed (None for a decoded one)."""
        return self.shards[location >> ROW_BITS].failures.get(location & ((1 << ROW_BITS) - 1))

    def release(self) -> None:
        """Unmap the pages read so far (they stay in the page cache): the resident memory of a server that
        re-ranks from a gallery larger than RAM stays what its own arrays take."""
        for shard in self.shards:
            self._release(shard)

    @staticmethod
    def _release(shard: Shard) -> None:
        for mapped in shard.arrays.values():
            mapped.release()


class StoreRows:
    """A gallery's clips as rows of a store, for the two-stage index: its pooled vectors to build on, and each
    query's candidates to re-rank. Their masks and weights (60 bytes a clip) are held in memory; their frames are
    read from the store's files block by block, all the candidates' rows asked of the disk at once first."""

    def __init__(self, store: FeatureStore, locations: np.ndarray) -> None:
        self.store, self.locations = store, np.asarray(locations, dtype=np.int64)
        held = np.flatnonzero(self.locations >= 0)
        small = store.gather(self.locations[held], ("mask", "weights"))
        self.mask = np.zeros((len(self.locations), store.layout.frames), np.uint8)
        self.weights = np.zeros((len(self.locations), store.layout.frames), np.float32)
        self.mask[held], self.weights[held] = small["mask"], small["weights"]
        store.release()

    def __len__(self) -> int:
        return len(self.locations)

    def pooled(self, clips: np.ndarray) -> np.ndarray:
        pooled = self.store.gather(self.locations[clips], ("pooled",))["pooled"]
        self.store.release()
        return pooled

    def frame_blocks(self, clips: np.ndarray, block: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(frames float32, mask, weights) of these clips, `block` clips at a time in the order given. The frames
        are read and widened into the same two buffers each block (small enough to stay in cache while they are
        scored), so a block is only valid until the next one is asked for."""
        clips = np.asarray(clips, dtype=np.int64)
        locations = self.locations[clips]
        self.store.will_need(locations, "frames")
        (shape, dtype) = self.store.layout.fields()["frames"]
        shape = (min(block, len(locations)), *shape)
        stored, frames = np.empty(shape, dtype), torch.empty(shape, dtype=torch.float32)
        for start in range(0, len(locations), block):
            n = min(block, len(locations) - start)
            self.store.read_rows(locations[start:start + n], "frames", stored[:n])
            frames[:n].copy_(torch.from_numpy(stored[:n]))
            picked = clips[start:start + n]
            yield frames[:n], torch.from_numpy(self.mask[picked].astype(np.int64)), torch.from_numpy(self.weights[picked])
