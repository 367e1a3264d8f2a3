"""What a cached feature is keyed by: the checkpoint (its weights and config), the frame sampling, and each clip's
content (sha256 of the file's bytes, so a renamed or copied clip is found again and an edited one is not)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tvr_demo.data.video import FrameSampling
from tvr_demo.models.checkpoints import WEIGHTS_FILE, Checkpoint, sha256_of

STORE_VERSION = 1  # bump when the features a checkpoint writes change meaning
KEY_BYTES = 32  # a clip's key: the sha256 digest of its file
HASH_BLOCK = 1 << 20


def checkpoint_fingerprint(checkpoint: Checkpoint) -> str:
    """sha256 of the weights file (ours or official) and of the config the model runs with."""
    weights = checkpoint.path / WEIGHTS_FILE if checkpoint.path.is_dir() else checkpoint.path
    h = hashlib.sha256(sha256_of(weights).encode())
    h.update(json.dumps(checkpoint.config.to_dict(), sort_keys=True).encode())
    return h.hexdigest()


def store_key(checkpoint: Checkpoint, sampling: FrameSampling) -> str:
    """The feature store's folder name: checkpoint + preprocessing (frame count and rate, resolution, the window)."""
    config = checkpoint.config
    preprocessing = [sampling.max_frames, sampling.framerate, config.image_size, sampling.start_s, sampling.end_s]
    h = hashlib.sha256(f"store v{STORE_VERSION}:{checkpoint_fingerprint(checkpoint)}".encode())
    h.update(json.dumps(preprocessing).encode())
    return h.hexdigest()[:24]


def captions_key(checkpoint: Checkpoint, captions: Sequence[str]) -> str:
    """The cached caption bank's file name: checkpoint + the words kept + every caption, in order."""
    h = hashlib.sha256(f"texts v{STORE_VERSION}:{checkpoint_fingerprint(checkpoint)}:{checkpoint.config.max_words}"
                       .encode())
    h.update("\n".join(captions).encode())
    return h.hexdigest()[:24]


def _file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.digest()


class ContentKeys:
    """Clip files' sha256, remembered by (path, size, mtime) in a small database beside the store, so a folder of
    ten thousand clips is read in full once, and afterwards only its new or changed files are."""

    def __init__(self, database: Path) -> None:
        database.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(database), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS file (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                        "sha256 BLOB)")

    def keys(self, paths: Sequence[Path], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(n, KEY_BYTES) uint8 keys and (n,) bool `found`: a file that is missing (or not a file) has no key."""
        keys = np.zeros((len(paths), KEY_BYTES), dtype=np.uint8)
        found = np.zeros(len(paths), dtype=bool)
        todo: list[tuple[int, Path, int, int]] = []
        for i, path in enumerate(paths):
            try:
                st = Path(path).stat()
            except OSError:
                continue
            if not Path(path).is_file():
                continue
            row = self.db.execute("SELECT size, mtime_ns, sha256 FROM file WHERE path = ?", (str(path),)).fetchone()
            if row is not None and row[:2] == (st.st_size, st.st_mtime_ns):
                keys[i], found[i] = np.frombuffer(row[2], dtype=np.uint8), True
            else:
                todo.append((i, Path(path), st.st_size, st.st_mtime_ns))
        for i, path, size, mtime in tqdm(todo, desc="hashing new clips", unit="clip", file=sys.stderr,
                                         disable=not progress or not todo):
            try:
                digest = _file_sha256(path)
            except OSError:
                continue
            keys[i], found[i] = np.frombuffer(digest, dtype=np.uint8), True
            self.db.execute("INSERT OR REPLACE INTO file VALUES (?, ?, ?, ?)", (str(path), size, mtime, digest))
        self.db.commit()
        return keys, found

    def close(self) -> None:
        self.db.close()
