"""The feature store's files: shards of preallocated, memory-mapped .npy arrays (frames in fp16 or fp32), one row per clip,
and the writer that appends to them (store.py reads them).

A store holds one checkpoint's features under one frame sampling (its folder is named by both, fingerprints.py).
Its shards are folders of preallocated .npy files, one row per clip. Each writer (a process, or one rank under
torchrun) appends to a shard whose lock it holds, and the shard's `committed.json` says how many rows are whole: rows
written after the last commit (an encode killed mid-chunk) are ignored, then overwritten when a writer resumes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.sparse

from tvr_demo.retrieval.fingerprints import KEY_BYTES
from tvr_demo.retrieval.scoring import VideoBank

SHARD_CLIPS = 65536  # rows per shard: about 800 MB of ViT-B/32 frames; each open shard maps a few files
PAGE = 4096  # .npy headers are padded to a page, so a clip's 12 x 512 fp16 frames fill exactly 3 pages (fp32: 6)
LAYOUT = "layout.json"
COMMITTED = "committed.json"
ROW_BITS = 32  # a location is shard_id << ROW_BITS | row


@dataclass(frozen=True)
class Layout:
    """The shapes every clip of a store shares (from the first chunk written)."""

    frames: int  # V: the model's max_frames
    dim: int  # D: the joint embedding width
    lexicon_k: int = 0  # UNIFY: the top-k words kept per clip (0 without a lexicon)
    vocab: int = 0  # UNIFY: the lexicon's vocabulary size
    frames_dtype: str = "float16"  # "float32" keeps the encoder's frames exactly (gallery.py says when)

    def fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-clip shape and dtype of each stored array."""
        out = {"key": ((KEY_BYTES,), np.dtype(np.uint8)), "ok": ((), np.dtype(np.bool_)),
               "frames": ((self.frames, self.dim), np.dtype(self.frames_dtype)),
               "mask": ((self.frames,), np.dtype(np.uint8)), "weights": ((self.frames,), np.dtype(np.float32)),
               "pooled": ((self.dim,), np.dtype(np.float32))}
        if self.lexicon_k:
            out["lexicon_ids"] = ((self.lexicon_k,), np.dtype(np.int32))
            out["lexicon_values"] = ((self.lexicon_k,), np.dtype(np.float32))
        return out



def bank_rows(bank: VideoBank, layout: Layout) -> dict[str, np.ndarray]:
    """A bank as the store's arrays (frames in the layout's dtype, the lexicon as its top-k ids and values)."""
    out = {"frames": bank.frames.detach().cpu().numpy().astype(layout.frames_dtype),
           "mask": bank.mask.cpu().numpy().astype(np.uint8),
           "weights": bank.weights.detach().float().cpu().numpy(),
           "pooled": bank.pooled.detach().float().cpu().numpy()}
    if layout.lexicon_k:
        lexicon = bank.lexicon if scipy.sparse.issparse(bank.lexicon) else \
            scipy.sparse.csr_matrix(bank.lexicon.float().cpu().numpy())
        n, k = lexicon.shape[0], layout.lexicon_k
        ids, values = np.zeros((n, k), np.int32), np.zeros((n, k), np.float32)
        for i in range(n):
            row = lexicon[i]
            ids[i, :row.nnz], values[i, :row.nnz] = row.indices, row.data
        out["lexicon_ids"], out["lexicon_values"] = ids, values
    return out


def lexicon_matrix(ids: np.ndarray, values: np.ndarray, vocab: int) -> scipy.sparse.csr_matrix:
    """Stored (n, k) top-k ids and values (zeros pad rows with fewer words) as the banks' (n, vocab) CSR lexicon."""
    keep = values != 0
    matrix = scipy.sparse.csr_matrix((values[keep], ids[keep], np.r_[0, np.cumsum(keep.sum(1))]),
                                     shape=(len(values), vocab))
    matrix.sort_indices()
    return matrix


# ---------------------------------------------------------------- .npy files mapped into memory


def _create_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """A zero-filled (sparse) .npy file whose header is padded to a page, so its rows start on page boundaries."""
    header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    prefix = np.lib.format.magic(1, 0)
    length = PAGE - len(prefix) - 2  # the header, its padding and its newline
    text = (header + " " * (length - len(header) - 1) + "\n").encode("latin1")
    with open(path, "wb") as f:
        f.write(prefix + length.to_bytes(2, "little") + text)
        f.truncate(PAGE + int(np.prod(shape)) * dtype.itemsize)


class MappedArray:
    """A .npy file mapped into memory: pages are read on first touch, and `release` hands them back to the page
    cache (they are no longer counted in this process's resident memory, and a later touch is a cheap minor fault).
    Scattered rows are better copied out with `read_rows`, which maps nothing."""

    def __init__(self, path: Path, writable: bool = False) -> None:
        self.path = path
        self._file: BinaryIO | None = None  # opened on the first `read_rows`
        with open(path, "r+b" if writable else "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)(f)
            offset = f.tell()
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        if not writable:
            self.mm.madvise(mmap.MADV_RANDOM)  # rows are gathered, not streamed: no read-ahead around them
        self.array, self.offset = np.ndarray(shape, dtype, buffer=self.mm, offset=offset), offset

    def release(self) -> None:
        self.mm.madvise(mmap.MADV_DONTNEED)

    def _fd(self) -> int:
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (held while the array lives)
            os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead around scattered rows
        return self._file.fileno()

    def will_need(self, rows: np.ndarray) -> None:
        """Ask the disk for these rows at once (POSIX_FADV_WILLNEED), so reading them one by one afterwards waits
        on the slowest of them rather than on each in turn."""
        fd, row_bytes = self._fd(), self.array.strides[0]
        for row in np.asarray(rows).tolist():
            os.posix_fadvise(fd, self.offset + row * row_bytes, row_bytes, os.POSIX_FADV_WILLNEED)

    def read_rows(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Copy these rows into `out` (C-contiguous, one entry per row) with pread: copied from the page cache, never
        mapped, so they take no page fault per page and never count in this process's resident memory."""
        if not len(out):
            return
        fd, row_bytes = self._fd(), self.array.strides[0]
        if out.dtype != self.array.dtype or out.shape[1:] != self.array.shape[1:] or not out.flags.c_contiguous:
            raise ValueError(f"{self.path.name}: rows go into a C-contiguous {self.array.dtype} array of rows "
                             f"{self.array.shape[1:]}")
        view = memoryview(out.reshape(len(out), -1)).cast("B")
        for i, row in enumerate(np.asarray(rows).tolist()):
            if os.preadv(fd, [view[i * row_bytes:(i + 1) * row_bytes]], self.offset + row * row_bytes) != row_bytes:
                raise OSError(f"{self.path}: row {row} is cut short")

    def flush(self) -> None:
        self.mm.flush()


class Shard:
    def __init__(self, directory: Path, layout: Layout, writable: bool = False) -> None:
        self.directory = directory
        self.arrays = {name: MappedArray(directory / f"{name}.npy", writable) for name in layout.fields()}
        self.capacity = len(self.arrays["ok"].array)
        self.rows, self.failures, self.chunks = 0, {}, []
        self.read_commit()

    def read_commit(self) -> None:
        try:
            committed = json.loads((self.directory / COMMITTED).read_text())
            rows, failures = int(committed["rows"]), {int(k): v for k, v in committed["failures"].items()}
            chunks = [tuple(c) for c in committed["chunks"]]  # (first row, end row, sha256 of their bytes)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # being created (nothing committed yet), or its record is damaged: its rows are not read
        self.rows, self.failures, self.chunks = min(rows, self.capacity), failures, chunks

    def commit(self) -> None:
        _write_json(self.directory / COMMITTED, {"rows": self.rows, "failures": self.failures, "chunks": self.chunks})

    def digest(self, start: int, stop: int) -> str:
        """sha256 of the rows' bytes, array after array."""
        h = hashlib.sha256()
        for mapped in self.arrays.values():
            h.update(memoryview(np.ascontiguousarray(mapped.array[start:stop])).cast("B"))
        return h.hexdigest()

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name].array


# ---------------------------------------------------------------- writing


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two ranks may write the same layout at once
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Appends clips to the store, into a shard this writer holds the lock of: a shard left unfinished by an
    earlier writer (killed, or done) is resumed; a full or locked one is passed over for a new one."""

    def __init__(self, directory: Path, layout: Layout, prefix: str = "w") -> None:
        self.directory, self.layout, self.prefix = Path(directory), layout, prefix
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / LAYOUT).exists():
            _write_json(self.directory / LAYOUT, asdict(layout))
        if read_layout(self.directory) != layout:
            raise ValueError(f"the store {self.directory.name} holds features of another shape: "
                             f"{read_layout(self.directory)}, not {layout}")
        self.shard: Shard | None = None
        self._lock_fd: int | None = None

    def append(self, keys: np.ndarray, ok: np.ndarray, bank: VideoBank, failures: dict[int, str]) -> None:
        """Store n clips (keys (n, KEY_BYTES), ok (n,), the bank's n rows, the reasons of the failed ones by row);
        durable when this returns (a FeatureStore finds them after its next `refresh`)."""
        arrays = {"key": keys, "ok": ok, **bank_rows(bank, self.layout)}
        start = 0
        while start < len(keys):
            if self.shard is None or self.shard.rows == self.shard.capacity:
                self._open_shard()
            shard = self.shard
            take = min(len(keys) - start, shard.capacity - shard.rows)
            rows = slice(shard.rows, shard.rows + take)
            for name, values in arrays.items():
                shard[name][rows] = values[start:start + take]
            for mapped in shard.arrays.values():
                mapped.flush()
            shard.failures.update({shard.rows + i - start: failures[i] for i in failures if start <= i < start + take})
            shard.chunks.append((rows.start, rows.stop, shard.digest(rows.start, rows.stop)))
            shard.rows += take
            shard.commit()
            start += take

    def _open_shard(self) -> None:
        self.close()
        shards = sorted(self.directory.glob(f"shard-{self.prefix}-*"))
        for directory in shards:  # resume an unfinished shard nobody else writes
            fd = self._try_lock(directory)
            if fd is None:
                continue
            try:
                shard = Shard(directory, self.layout, writable=True)
            except (OSError, ValueError, TypeError):  # damaged: readers skip it, and so do writers
                os.close(fd)
                continue
            if shard.rows < shard.capacity:
                self.shard, self._lock_fd = shard, fd
                return
            os.close(fd)
        n = len(shards)
        while True:
            directory = self.directory / f"shard-{self.prefix}-{n:04d}"
            try:
                directory.mkdir()
                break
            except FileExistsError:
                n += 1
        fd = self._try_lock(directory)
        for name, (shape, dtype) in self.layout.fields().items():
            _create_npy(directory / f"{name}.npy", (SHARD_CLIPS, *shape), dtype)
        self.shard, self._lock_fd = Shard(directory, self.layout, writable=True), fd
        self.shard.commit()

    @staticmethod
    def _try_lock(directory: Path) -> int | None:
        fd = os.open(directory / "lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self.shard, self._lock_fd = None, None


def read_layout(directory: Path) -> Layout | None:
    try:
        return Layout(**json.loads((Path(directory) / LAYOUT).read_text()))
    except (OSError, ValueError, TypeError):
        return None
