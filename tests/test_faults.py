"""Faults the app must survive: bad files in a gallery, a damaged cache, a GPU out of memory, an encode killed half
way, and galleries too small to rank (tvr_demo/retrieval/gallery.py, tvr_demo/retrieval/scoring.py, the callbacks)."""

from __future__ import annotations

import hashlib
import json
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
from tvr_demo.data.synthetic import SyntheticConfig, generate
from tvr_demo.models.checkpoints import load_checkpoint
from tvr_demo.retrieval import gallery
from tvr_demo.retrieval.engine import Engine
from tvr_demo.retrieval.fingerprints import captions_key
from tvr_demo.retrieval.gallery import encode_gallery
from tvr_demo.retrieval.scoring import similarity_matrix
from tvr_demo.retrieval.store import FeatureStore
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


def _stored_features(cache: Path, bench, checkpoint) -> dict[str, np.ndarray]:
    """Every clip's stored arrays in gallery order, read back from the cache's feature store, and the captions'."""
    (directory,) = (cache / "store").iterdir()
    store = FeatureStore(directory)
    keys = np.stack([np.frombuffer(hashlib.sha256(p.read_bytes()).digest(), np.uint8) for p in bench.video_paths])
    locations = store.locate(keys)
    assert (locations >= 0).all()
    out = store.gather(locations)
    texts = cache / "texts" / f"{captions_key(checkpoint, bench.captions)}.safetensors"
    out |= {f"text_{k}": v.numpy() for k, v in load_file(str(texts)).items()}
    return out


def _same_features(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Two encodes of the same clips agree (CPU encodes of the same clips agree to float rounding)."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        if np.issubdtype(a[key].dtype, np.floating):
            np.testing.assert_allclose(a[key].astype(np.float32), b[key].astype(np.float32), rtol=0, atol=1e-3
                                       if a[key].dtype == np.float16 else 1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


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


def _shard(cache: Path) -> Path:
    (shard,) = cache.glob("store/*/shard-*")
    return shard


@pytest.mark.parametrize("damage", ["flip a frame byte", "cut a file short", "garble the commit",
                                    "garble the captions"])
def test_a_damaged_cache_is_encoded_again_not_trusted(small, checkpoint, encoded, tmp_path, monkeypatch, damage):
    bench = load_benchmark(Path(small.dataset), "test")
    shutil.copytree(encoded, tmp_path / "cache")
    shard = _shard(tmp_path / "cache")
    if damage == "flip a frame byte":  # the file still parses: only the chunk's sha256 can tell
        path = shard / "frames.npy"
        data = bytearray(path.read_bytes())
        data[4096 + 3] ^= 0xFF  # the first clip's first frame
        path.write_bytes(bytes(data))
    elif damage == "cut a file short":
        (shard / "weights.npy").write_bytes((shard / "weights.npy").read_bytes()[:100])
    elif damage == "garble the commit":
        (shard / "committed.json").write_text('{"rows": "many"')
    else:
        (texts,) = (tmp_path / "cache" / "texts").iterdir()
        texts.write_bytes(texts.read_bytes()[:100])
    calls = _counting_decoder(monkeypatch)
    again = encode_gallery(checkpoint, bench, tmp_path / "cache", progress=False)
    assert calls == ([] if damage == "garble the captions" else [bench.num_videos])
    assert again.decoded_ok.all() and again.complete
    _same_features(_stored_features(tmp_path / "cache", bench, checkpoint),
                   _stored_features(encoded, bench, checkpoint))


def test_a_sound_cache_is_read_back_without_encoding(small, checkpoint, encoded, monkeypatch):
    calls = _counting_decoder(monkeypatch)
    encode_gallery(checkpoint, load_benchmark(Path(small.dataset), "test"), encoded, progress=False)
    assert calls == []


# ---------------------------------------------------------------- clips are cached by content: only new ones encode


def _gallery_of(root: Path, clips: list[Path]):
    """A benchmark of these clip files (copied under new names), one caption each."""
    (root / "videos").mkdir(parents=True)
    rows = ["key,vid_key,video_id,sentence"]
    for i, clip in enumerate(clips):
        shutil.copy(clip, root / "videos" / f"clip{i}.mp4")
        rows.append(f"ret{i},msr{i},clip{i},caption of {clip.name}")
    (root / "MSRVTT_JSFUSION_test.csv").write_text("\n".join(rows) + "\n")
    return load_benchmark(root, "test")


def test_adding_clips_encodes_only_them(small, checkpoint, encoded, tmp_path, monkeypatch):
    """The six encoded clips copied under other names into another gallery with two more: two are encoded, and
    every clip's features are those of an encode of the whole gallery from scratch."""
    extra = generate(tmp_path / "extra", SyntheticConfig(seed=9, n_train=0, n_val=0, n_test=2), progress=False,
                     num_workers=0)
    clips = [Path(small.dataset) / "videos" / f"video{i}.mp4" for i in range(6)]
    bench = _gallery_of(tmp_path / "grown", clips + [extra / "videos" / f"video{i}.mp4" for i in range(2)])
    shutil.copytree(encoded, tmp_path / "cache")
    calls = _counting_decoder(monkeypatch)
    grown = encode_gallery(checkpoint, bench, tmp_path / "cache", progress=False)
    assert calls == [2] and grown.decoded_ok.all()
    encode_gallery(checkpoint, bench, tmp_path / "fresh", progress=False)
    assert calls == [2, 8]
    _same_features(_stored_features(tmp_path / "cache", bench, checkpoint),
                   _stored_features(tmp_path / "fresh", bench, checkpoint))


# ---------------------------------------------------------------- an encode killed half way loses no finished chunk


def test_killing_an_encode_loses_no_finished_chunk(small, checkpoint, tmp_path, monkeypatch):
    """`python -m tvr_demo encode` (chunks of 2 clips) is killed once its first chunk is committed; the next encode
    resumes after that chunk and stores what an encode that was never interrupted stores."""
    cache = tmp_path / "cache"
    stall_after_first_chunk = (  # the CLI, with small chunks and a pause after each chunk it commits
        "import sys, time\nimport tvr_demo.retrieval.gallery as g\ng.CHUNK = 2\nappend = g.ShardWriter.append\n"
        "def stall(self, *args, **kwargs):\n    append(self, *args, **kwargs)\n    time.sleep(120)\n"
        "g.ShardWriter.append = stall\nfrom tvr_demo.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    command = [sys.executable, "-c", stall_after_first_chunk, "encode", "--checkpoint", small.models["drl-wti"],
               "--dataset", small.dataset, "--device", "cpu"]
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, "TVR_DEMO_CACHE": str(cache)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def committed() -> int:
        return sum(json.loads(p.read_text())["rows"] for p in cache.glob("store/*/shard-*/committed.json"))

    try:
        deadline = time.monotonic() + 120
        while committed() < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the encode ended before its first chunk"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert committed() == 2

    monkeypatch.setattr(gallery, "CHUNK", 2)
    calls = _counting_decoder(monkeypatch)
    bench = load_benchmark(Path(small.dataset), "test")
    resumed = encode_gallery(checkpoint, bench, cache, progress=False)
    assert calls == [2, 2]  # chunks 2 and 3 of 3: the first came from disk
    assert resumed.complete and len(list(cache.glob("store/*/shard-*"))) == 1  # the killed writer's shard resumed
    encode_gallery(checkpoint, bench, tmp_path / "fresh", progress=False)
    assert calls == [2, 2, 2, 2, 2]
    _same_features(_stored_features(cache, bench, checkpoint), _stored_features(tmp_path / "fresh", bench, checkpoint))


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
    with pytest.raises(gr.Error, match="has no videos: it needs at least one"):
        cb.load("drl-wti", "", "test", progress=None)
    with pytest.raises(gr.Error, match="has no videos"):
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
