"""Encoded galleries on disk: a benchmark split's text and video banks, keyed by a fingerprint of the checkpoint,
the preprocessing and the video files; written atomically, resumable chunk by chunk, checksummed by a manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
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
from tvr_demo.models.checkpoints import WEIGHTS_FILE, Checkpoint, sha256_of
from tvr_demo.retrieval.scoring import TextBank, VideoBank, encode_texts, encode_video_frames

CACHE_VERSION = 1
CHUNK = int(os.environ.get("TVR_DEMO_ENCODE_CHUNK", 128))  # videos per resumable part (and per rank share)
# captions encoded (and their lexicons cut to top-k) at a time: a UNIFY batch holds its valid tokens' logits over the
# whole vocabulary, so the peak grows with the batch (bench/notes/text_chunk.md)
TEXT_CHUNK = 32
BANK_FILES = ("videos.safetensors", "texts.safetensors")
MANIFEST = "manifest.json"  # written last: the key and each bank file's sha256; a cache without a valid one is rebuilt


def checkpoint_fingerprint(checkpoint: Checkpoint) -> str:
    """sha256 of the weights file (ours or official) and of the config the model runs with."""
    weights = checkpoint.path / WEIGHTS_FILE if checkpoint.path.is_dir() else checkpoint.path
    h = hashlib.sha256(sha256_of(weights).encode())
    h.update(json.dumps(checkpoint.config.to_dict(), sort_keys=True).encode())
    return h.hexdigest()


def gallery_fingerprint(checkpoint: Checkpoint, bench: Benchmark) -> str:
    """Checkpoint + preprocessing (frame sampling, its window included) + the video files (name, size, mtime) + the
    captions."""
    config = checkpoint.config
    h = hashlib.sha256(f"v{CACHE_VERSION}:{checkpoint_fingerprint(checkpoint)}".encode())
    preprocessing = [config.max_frames, config.framerate, config.image_size, config.max_words]
    sampling = config.sampling(bench.end_s)
    if (sampling.start_s, sampling.end_s) != (None, None):  # whole-clip galleries keep the keys they had before
        preprocessing += [sampling.start_s, sampling.end_s]
    h.update(json.dumps(preprocessing).encode())
    for p in bench.video_paths:
        st = p.stat() if p.is_file() else None
        h.update(f"{p.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}\n".encode())
    h.update("\n".join(bench.captions).encode())
    return h.hexdigest()[:24]


def _sparse_lexicon(bank):
    """The bank's top-k lexicon as a scipy CSR matrix: the inverted index's rows, stored without the zeros."""
    if bank.lexicon is not None:
        bank.lexicon = scipy.sparse.csr_matrix(bank.lexicon.float().cpu().numpy())
    return bank


def _bank_tensors(bank) -> dict[str, torch.Tensor]:
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
    return out


def _bank_from_tensors(cls, tensors: dict[str, torch.Tensor]):
    values = {f.name: tensors.get(f.name) for f in fields(cls)}
    if "lexicon_data" in tensors:
        values["lexicon"] = scipy.sparse.csr_matrix(
            (tensors["lexicon_data"].numpy(), tensors["lexicon_indices"].numpy(), tensors["lexicon_indptr"].numpy()),
            shape=tuple(tensors["lexicon_shape"].tolist()))
    return cls(**values)


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta or {})})
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


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


def _write_manifest(directory: Path, key: str) -> None:
    manifest = {"key": key, "sha256": {name: sha256_of(directory / name) for name in BANK_FILES}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def verify_cache(directory: Path, key: str) -> bool:
    """True when the folder's manifest names this key and every bank file still has its recorded sha256."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        return (manifest["key"] == key and sorted(manifest["sha256"]) == sorted(BANK_FILES)
                and all(sha256_of(directory / name) == manifest["sha256"][name] for name in BANK_FILES))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _read_part(part: Path) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]] | None:
    """A finished chunk's tensors and decode failures, or None when it is absent or unreadable."""
    from safetensors import SafetensorError, safe_open

    if not part.is_file():
        return None
    try:
        tensors = _load(part)
        with safe_open(str(part), "pt") as f:
            failures = [tuple(x) for x in json.loads(f.metadata()["meta"])["failures"]]
    except (SafetensorError, OSError, ValueError, KeyError, TypeError):
        return None
    return tensors, failures


@dataclass
class EncodedGallery:
    texts: TextBank  # the split's captions
    videos: VideoBank  # the split's videos (failed ones are zero-masked and listed in `failures`)
    decoded_ok: np.ndarray  # (n_videos,) bool
    failures: list[tuple[str, str]]  # (file, reason) of videos that could not be decoded
    path: Path


def encode_gallery(checkpoint: Checkpoint, bench: Benchmark, cache_root: Path, progress: bool = True,
                   num_workers: int | None = None) -> EncodedGallery:
    """Encode (or read back) a benchmark split. A second call with the same inputs reads the cache once its manifest
    checks out (else it is rebuilt); an interrupted encode keeps its finished chunks in `<key>.partial/` and resumes
    from them (an unreadable chunk is encoded again)."""
    if bench.num_videos == 0:  # captions are optional: a folder of clips without any is searched by typed queries
        raise DatasetError(f"the gallery {bench.name}/{bench.split} has 0 videos: it needs at least one")
    model, config = checkpoint.model, checkpoint.config
    key = gallery_fingerprint(checkpoint, bench)
    final = Path(cache_root) / "gallery" / key
    if final.exists() and not verify_cache(final, key):
        print(f"cached gallery {final} is incomplete or fails its checksum: encoding it again", file=sys.stderr)
        shutil.rmtree(final, ignore_errors=True)
    if not final.is_dir():
        partial = final.with_name(key + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        sampling = config.sampling(bench.end_s)
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
            else (0, 1)
        starts = list(range(0, bench.num_videos, CHUNK))

        def chunk(start: int):
            """One chunk's tensors and failures: read back when finished before, else encoded and saved."""
            part = partial / f"videos_{start:07d}.safetensors"
            done = _read_part(part)
            if done is None:
                paths = bench.video_paths[start:start + CHUNK]
                decoded = decode_videos(paths, sampling, config.image_size, num_workers=num_workers, progress=False)
                bank = _sparse_lexicon(encode_video_frames(model, torch.as_tensor(np.asarray(decoded.videos)),
                                                           torch.as_tensor(np.asarray(decoded.masks))))
                tensors = _bank_tensors(bank)
                tensors["decoded_ok"] = torch.as_tensor(np.asarray(decoded.ok))
                done = tensors, [(str(p), r) for p, r in decoded.failures]
                _save(part, tensors, {"failures": done[1]})
            return done

        if world > 1:  # under torchrun each rank encodes its share of the chunks, then rank 0 merges them
            mine = starts[rank::world]
            for start in tqdm(mine, desc=f"encoding gallery (rank {rank})", unit="chunk", disable=not progress):
                chunk(start)
            dist.barrier()
        if rank != 0:
            dist.barrier()  # wait for rank 0's merge
            return read_gallery(final, checkpoint.model.device)
        bar = tqdm(total=bench.num_videos, desc="encoding gallery", unit="clip", disable=not progress)
        parts, ok, failures = [], [], []
        for start in starts:
            tensors, chunk_failures = chunk(start)
            ok.append(tensors.pop("decoded_ok").numpy())
            parts.append(_bank_from_tensors(VideoBank, tensors))
            failures += chunk_failures
            bar.update(min(CHUNK, bench.num_videos - start))
        bar.close()
        videos = _concat(VideoBank, parts)
        # captions in chunks, each sparsified at once: a dense (captions, vocabulary) lexicon for a training split
        # would be 25k x 49k floats before its top-k cut
        texts = _concat(TextBank, [_sparse_lexicon(encode_texts(model, bench.captions[i:i + TEXT_CHUNK]))
                                   for i in range(0, max(bench.num_captions, 1), TEXT_CHUNK)])
        tmp = final.with_name(key + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        vt = _bank_tensors(videos)
        vt["decoded_ok"] = torch.as_tensor(np.concatenate(ok))
        _save(tmp / "videos.safetensors", vt, {"failures": failures})
        _save(tmp / "texts.safetensors", _bank_tensors(texts))
        _write_manifest(tmp, key)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        shutil.rmtree(partial, ignore_errors=True)
        if world > 1:
            dist.barrier()
    return read_gallery(final, checkpoint.model.device)


def read_gallery(directory: Path, device: torch.device) -> EncodedGallery:
    from safetensors import safe_open

    vt = _load(directory / "videos.safetensors")
    with safe_open(str(directory / "videos.safetensors"), "pt") as f:
        failures = [tuple(x) for x in json.loads(f.metadata()["meta"])["failures"]]
    ok = vt.pop("decoded_ok").numpy().astype(bool)
    videos = _bank_from_tensors(VideoBank, vt)
    texts = _bank_from_tensors(TextBank, _load(directory / "texts.safetensors"))
    for bank in (videos, texts):
        for f in fields(bank):
            value = getattr(bank, f.name)
            if isinstance(value, torch.Tensor):
                setattr(bank, f.name, value.to(device))
    return EncodedGallery(texts, videos, ok, failures, directory)
