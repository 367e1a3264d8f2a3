"""Faults the app must survive: bad files in a gallery, a damaged cache, a GPU out of memory, an encode killed half
way, and galleries too small to rank (tvr_demo/retrieval/gallery.py, tvr_demo/retrieval/scoring.py, the callbacks)."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from app_support import Listeners, tiny_session
from safetensors.torch import load_file

from tvr_demo import kernels
from tvr_demo.data import load_benchmark
from tvr_demo.models.checkpoints import load_checkpoint
from tvr_demo.retrieval import gallery
from tvr_demo.retrieval.engine import Engine
from tvr_demo.retrieval.gallery import encode_gallery
from tvr_demo.retrieval.scoring import similarity_matrix
from tvr_demo.ui.session import Session

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Six generated clips and random tiny checkpoints (the app tests' session)."""
    return tiny_session(tmp_path_factory.mktemp("faults"), n_test=6)


@pytest.fixture(scope="module")
def checkpoint(small):
    return load_checkpoint(small.models["drl-wti"], "cpu")


def _counting_decoder(monkeypatch) -> list[int]:
    """Count the videos gallery.py decodes (each chunk it has to encode)."""
    calls, decode = [], gallery.decode_videos

    def counted(paths, *args, **kwargs):
        calls.append(len(paths))
        return decode(paths, *args, **kwargs)

    monkeypatch.setattr(gallery, "decode_videos", counted)
    return calls


def _same_cache(a: Path, b: Path) -> None:
    """Two cache folders hold the same banks (CPU encodes of the same clips agree to float rounding)."""
    for name in gallery.BANK_FILES:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys(), name
        for key in x:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, (name, key)
            if x[key].is_floating_point():
                torch.testing.assert_close(x[key], y[key], rtol=0, atol=1e-6)
            else:
                assert torch.equal(x[key], y[key]), (name, key)


# ---------------------------------------------------------------- bad files inside a gallery


def test_a_corrupt_and_a_missing_clip_are_reported_and_never_retrieved(small, checkpoint, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(small.dataset, root)
    corrupt, missing = root / "videos" / "video1.mp4", root / "videos" / "video4.mp4"
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    missing.unlink()
    engine = Engine(checkpoint, load_benchmark(root, "test"), tmp_path / "cache", progress=False)
    assert sorted(Path(p).name for p, _ in engine.skipped) == ["video1.mp4", "video4.mp4"]
    reasons = dict((Path(p).name, r) for p, r in engine.skipped)
    assert "truncated" in reasons["video1.mp4"] and "not found" in reasons["video4.mp4"]
    assert engine.gallery.decoded_ok.tolist() == [True, False, True, True, False, True]
    hits = engine.search_text("a red circle", k=6).hits
    assert all(math.isinf(h.score) for h in hits[-2:]) and {h.index for h in hits[-2:]} == {1, 4}
    assert {h.index for h in hits[:4]} == {0, 2, 3, 5}


# ---------------------------------------------------------------- the cache: checksummed, rebuilt when damaged


@pytest.fixture(scope="module")
def encoded(small, checkpoint, tmp_path_factory) -> Path:
    """A sound cache of the small gallery: its cache root."""
    root = tmp_path_factory.mktemp("cache")
    encode_gallery(checkpoint, load_benchmark(Path(small.dataset), "test"), root, progress=False)
    return root


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete the manifest", "another key"])
def test_a_damaged_cache_is_rebuilt_not_trusted(small, checkpoint, encoded, tmp_path, monkeypatch, damage):
    bench = load_benchmark(Path(small.dataset), "test")
    shutil.copytree(encoded, tmp_path / "cache")
    (directory,) = (tmp_path / "cache" / "gallery").iterdir()
    target = directory / "texts.safetensors"
    if damage == "flip a byte":
        data = bytearray(target.read_bytes())
        data[-5] ^= 0xFF  # a tensor byte: the file still parses, only the checksum can tell
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "delete the manifest":
        (directory / gallery.MANIFEST).unlink()
    else:
        manifest = directory / gallery.MANIFEST
        manifest.write_text(manifest.read_text().replace(directory.name, "0" * 24))
    assert not gallery.verify_cache(directory, directory.name)
    calls = _counting_decoder(monkeypatch)
    again = encode_gallery(checkpoint, bench, tmp_path / "cache", progress=False)
    assert calls == [bench.num_videos] and again.path == directory and gallery.verify_cache(directory, directory.name)
    _same_cache(directory, next((encoded / "gallery").iterdir()))


def test_a_sound_cache_is_read_back_without_encoding(small, checkpoint, encoded, monkeypatch):
    calls = _counting_decoder(monkeypatch)
    encode_gallery(checkpoint, load_benchmark(Path(small.dataset), "test"), encoded, progress=False)
    assert calls == []


# ---------------------------------------------------------------- an encode killed half way loses no finished chunk


def test_killing_an_encode_loses_no_finished_chunk(small, checkpoint, tmp_path, monkeypatch):
    """`python -m tvr_demo encode` (chunks of 2 clips) is killed once its first chunk is on disk; the next encode
    resumes from that chunk and writes the same cache as an encode that was never interrupted."""
    cache = tmp_path / "cache"
    stall_after_first_chunk = (  # the CLI, with small chunks and a pause after each one it saves
        "import sys, time\nimport tvr_demo.retrieval.gallery as g\ng.CHUNK = 2\nsave = g._save\n"
        "def stall(path, *args, **kwargs):\n    save(path, *args, **kwargs)\n"
        "    if path.name.startswith('videos_'):\n        time.sleep(120)\n"
        "g._save = stall\nfrom tvr_demo.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    command = [sys.executable, "-c", stall_after_first_chunk, "encode", "--checkpoint", small.models["drl-wti"],
               "--dataset", small.dataset, "--device", "cpu"]
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, "TVR_DEMO_CACHE": str(cache)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob("gallery/*.partial/videos_*.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, "the encode ended before its first chunk"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [p.name for p in cache.glob("gallery/*.partial/*.safetensors")] == ["videos_0000000.safetensors"]
    assert not [p for p in cache.glob("gallery/*") if not p.name.endswith(".partial")]

    monkeypatch.setattr(gallery, "CHUNK", 2)
    calls = _counting_decoder(monkeypatch)
    bench = load_benchmark(Path(small.dataset), "test")
    resumed = encode_gallery(checkpoint, bench, cache, progress=False)
    assert calls == [2, 2]  # chunks 2 and 3 of 3: the first came from disk
    assert not list(cache.glob("gallery/*.partial"))
    fresh = encode_gallery(checkpoint, bench, tmp_path / "fresh", progress=False)
    assert calls == [2, 2, 2, 2, 2]
    _same_cache(resumed.path, fresh.path)


def test_an_unreadable_chunk_is_encoded_again(small, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(gallery, "CHUNK", 4)
    bench = load_benchmark(Path(small.dataset), "test")
    key = gallery.gallery_fingerprint(checkpoint, bench)
    partial = tmp_path / "cache" / "gallery" / f"{key}.partial"
    partial.mkdir(parents=True)
    (partial / "videos_0000000.safetensors").write_bytes(b"half a chunk")
    calls = _counting_decoder(monkeypatch)
    encoded = encode_gallery(checkpoint, bench, tmp_path / "cache", progress=False)
    assert calls == [4, 2] and encoded.decoded_ok.all()


# ---------------------------------------------------------------- out of memory: smaller blocks


def _short_of_memory(monkeypatch, most: int) -> list[int]:
    """Make the block scorer raise CUDA's out-of-memory error for blocks of more than `most` texts."""
    sizes, score = [], kernels.wti_scores

    def limited(text, *args):
        sizes.append(text.shape[0])
        if text.shape[0] > most:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (test: {text.shape[0]} texts > {most})")
        return score(text, *args)

    monkeypatch.setattr(kernels, "wti_scores", limited)
    return sizes


def test_scoring_halves_its_block_when_memory_runs_out(monkeypatch, ragged_banks):
    texts, videos = ragged_banks(40, 7)
    expected = similarity_matrix(texts, videos, "wti", block=64)
    sizes = _short_of_memory(monkeypatch, most=10)
    got = similarity_matrix(texts, videos, "wti", block=64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert sizes == [40, 32, 16] + [8] * 5  # blocks of 64, 32 and 16 texts fail; 8 fits, for the rest too


def test_scoring_gives_up_when_even_one_text_does_not_fit(monkeypatch, ragged_banks):
    texts, videos = ragged_banks(3, 7)
    _short_of_memory(monkeypatch, most=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        similarity_matrix(texts, videos, "ti", block=4)


# ---------------------------------------------------------------- several users: a slow build holds up no one else


def test_a_gallery_in_use_answers_while_another_is_being_encoded(small):
    small.benchmark()
    answered = threading.Event()
    with small._lock:  # what a first-time engine build holds while it encodes a gallery (minutes)
        threading.Thread(target=lambda: (small.benchmark(), answered.set()), daemon=True).start()
        assert answered.wait(10)


# ---------------------------------------------------------------- galleries of zero and one video


def test_an_empty_gallery_is_a_clear_notice(tmp_path):
    session = tiny_session(tmp_path, n_test=0)
    cb = Listeners(session)
    with pytest.raises(gr.Error, match="has 0 videos: it needs at least one"):
        cb.load("drl-wti", "", "test", progress=None)
    with pytest.raises(gr.Error, match="has 0 videos"):
        cb.run_search("a red circle", 5, "auto", "unify", "", "test", progress=None)


def test_a_gallery_of_one_video_answers_or_explains_itself(tmp_path):
    """Every view on a one-clip gallery gives finite numbers or a notice, never an exception of its own."""
    session = tiny_session(tmp_path, n_test=1)
    cb = Listeners(session)
    caption = session.benchmark().captions[0]
    for model in ("drl-wti", "unify"):
        ctx = (model, "", "test")
        for query in ("a red circle moves left", caption):
            _, summary, table, *_ = cb.run_search(query, 5, "auto", *ctx, progress=None)
            table = table.data  # the Styler the page shows; its frame holds the numbers
            assert len(table) == 1 and np.isfinite(table.filter(like="score").to_numpy(float)).all()
            assert cb.run_explain(query, "", "", "", *ctx, progress=None)[0]
        assert "rank 1" in cb.run_search_video("0", None, 5, "auto", *ctx, progress=None)[0]
        assert "**0** of 1" in cb.run_failures("t2v", "auto", "rank", "(all)", 100, *ctx, progress=None)[1]
        _, table = cb.run_metrics(*ctx, progress=None)
        table = table.data  # the Styler the page shows; its frame holds the numbers
        # one clip: every query's ground truth is the only candidate, rank 1 (R@1 = 100, MdR = MnR = 1)
        assert set(table["R@1"]) == {100.0} and set(table["MdR"]) == {1.0} and set(table["MnR"]) == {1.0}
        assert len(table) == (6 if model == "unify" else 2)  # both directions, per branch for UNIFY
    with pytest.raises(gr.Error, match="needs at least 2 captions"):
        cb.run_correlation("drl-wti", "unify", "", "test", progress=None)


def test_the_server_keeps_only_the_most_recently_used_engines(tmp_path):
    """Browsing models and galleries does not grow memory without bound: past max_engines the least recently used
    engine is dropped (and rebuilt from the feature cache when asked for again, with the same answers)."""
    session = tiny_session(tmp_path)
    session.max_engines = 2
    wti = session.engine("drl-wti")
    unify = session.engine("unify")
    assert session.engine("drl-wti") is wti and session.engine("unify") is unify  # both held: no rebuild
    session = Session(list(session.models.values()), session.dataset, device="cpu", cache_root=session.cache_root,
                      max_engines=1)
    first = session.engine("drl-wti")
    latest = session.engine("unify")
    assert session.engine("unify") is latest  # the most recently used stays
    rebuilt = session.engine("drl-wti")  # the least recently used was dropped: built again
    assert rebuilt is not first and rebuilt is not wti and session.engine("drl-wti") is rebuilt
    np.testing.assert_array_equal(rebuilt.matrices["latent"], wti.matrices["latent"])
    assert unify.search_text("a red circle moves left", k=3).hits  # an evicted engine still answers its caller
