"""The feature store (tvr_demo/retrieval/store.py, shards.py): what is written is read back (frames rounded to fp16, the rest
exact), scores from the memory map equal scores of the same features in memory, a writer killed mid-chunk leaves
nothing half-read, and damaged bytes are found."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import scipy.sparse
from reference import np_wti

from tvr_demo.retrieval import index as index_module
from tvr_demo.retrieval import shards
from tvr_demo.retrieval.index import TwoStageConfig, TwoStageIndex
from tvr_demo.retrieval.scoring import VideoBank
from tvr_demo.retrieval.shards import Layout, ShardWriter
from tvr_demo.retrieval.store import FeatureStore, StoreRows


def keys_of(names) -> np.ndarray:
    return np.stack([np.frombuffer(hashlib.sha256(str(n).encode()).digest(), np.uint8) for n in names])


def rows(bank: VideoBank, start: int, stop: int) -> VideoBank:
    return VideoBank(*(None if v is None else v[start:stop] for v in bank.__dict__.values()))


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 7 rows, so a few appends cross shard boundaries."""
    monkeypatch.setattr(shards, "SHARD_CLIPS", 7)


def write(directory, bank: VideoBank, layout: Layout, chunk: int = 5, prefix: str = "w") -> np.ndarray:
    """Append the bank in chunks; returns the keys given to its rows."""
    n = bank.frames.shape[0]
    keys = keys_of(range(n))
    writer = ShardWriter(directory, layout, prefix)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        writer.append(keys[start:stop], np.ones(stop - start, bool), rows(bank, start, stop), {})
    writer.close()
    return keys


def test_rows_read_back_with_frames_in_fp16(tmp_path, ragged_banks, small_shards):
    _, videos = ragged_banks(1, 23)
    keys = write(tmp_path, videos, Layout(5, 16))
    store = FeatureStore(tmp_path)
    assert len(store) == 23 and len(store.shards) == 4  # 7 + 7 + 7 + 2
    order = np.array([22, 0, 13, 7, 6, 8, 21])  # across every shard, out of order
    got = store.bank(store.locate(keys[order]))
    for i, clip in enumerate(order):
        want = videos.frames[clip].numpy().astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(got.frames[i].numpy(), want)
        np.testing.assert_array_equal(got.mask[i].numpy(), videos.mask[clip].numpy())
        np.testing.assert_array_equal(got.weights[i].numpy(), videos.weights[clip].numpy())
        np.testing.assert_array_equal(got.pooled[i].numpy(), videos.pooled[clip].numpy())
    assert (store.locate(keys_of(["never written"])) == -1).all()


def test_a_top_k_lexicon_reads_back_as_the_same_sparse_rows(tmp_path, ragged_banks):
    _, videos = ragged_banks(1, 9)
    g = np.random.default_rng(0)
    dense = np.zeros((9, 50), np.float32)
    for i in range(9):  # up to 4 words per clip, one clip with none
        words = g.choice(50, size=i % 5, replace=False)
        dense[i, words] = g.uniform(0.1, 2.0, size=len(words))
    videos.lexicon = scipy.sparse.csr_matrix(dense)
    keys = write(tmp_path, videos, Layout(5, 16, lexicon_k=4, vocab=50))
    got = FeatureStore(tmp_path).bank(FeatureStore(tmp_path).locate(keys[::-1]))
    np.testing.assert_array_equal(got.lexicon.toarray(), dense[::-1])


def _rounded(videos: VideoBank) -> VideoBank:
    """The bank as the store keeps it, built here: frames rounded to fp16 and back."""
    return VideoBank(videos.frames.half().float(), videos.mask, videos.weights, videos.pooled, None)


@pytest.mark.parametrize("interaction", ["wti", "ti", "dp"])
def test_scores_from_the_memory_map_equal_the_in_memory_scores(tmp_path, ragged_banks, small_shards, interaction):
    """Re-ranked from the store, every clip is a candidate: the top 10 and scores are the definition's (a float64
    loop) over the same features held in memory."""
    texts, videos = ragged_banks(4, 30, clustered=True)
    write(tmp_path, videos, Layout(5, 16))
    store = FeatureStore(tmp_path)
    index = TwoStageIndex(StoreRows(store, store.locations()), interaction, config=TwoStageConfig(candidates=30))
    ids, scores = index.search(texts, k=10)
    mem = _rounded(videos)
    if interaction == "dp":
        want = texts.pooled.double().numpy() @ mem.pooled.double().numpy().T
    else:
        uniform = (lambda m: m / m.sum(1, keepdims=True)) if interaction == "ti" else None
        tw = uniform(texts.mask.double().numpy()) if uniform else texts.weights.numpy()
        vw = uniform(mem.mask.double().numpy()) if uniform else mem.weights.numpy()
        want = np_wti(texts.tokens.numpy(), texts.mask.numpy(), tw, mem.frames.numpy(), mem.mask.numpy(), vw)
    for a in range(4):
        order = np.argsort(-want[a], kind="stable")[:10]
        np.testing.assert_array_equal(ids[a], order)
        np.testing.assert_allclose(scores[a], want[a, order], atol=1e-5)


def test_candidates_read_in_blocks_score_as_the_definition(tmp_path, ragged_banks, small_shards, monkeypatch):
    """Re-ranked 4 clips at a time (each block read into the same buffers as the last), candidates in the first
    stage's order across shards: every score is the definition's over the same features."""
    monkeypatch.setattr(index_module, "RERANK_BLOCK", 4)
    texts, videos = ragged_banks(3, 30, clustered=True)
    write(tmp_path, videos, Layout(5, 16))
    store = FeatureStore(tmp_path)
    index = TwoStageIndex(StoreRows(store, store.locations()), "wti", config=TwoStageConfig(candidates=30))
    cands = index.candidates(texts, 30)
    mem = _rounded(videos)
    want = np_wti(texts.tokens.numpy(), texts.mask.numpy(), texts.weights.numpy(), mem.frames.numpy(),
                  mem.mask.numpy(), mem.weights.numpy())
    for a, (cand, got) in enumerate(zip(cands, index.rerank(texts, cands), strict=True)):
        assert sorted(cand.tolist()) == list(range(30)) and not np.array_equal(cand, np.sort(cand))
        np.testing.assert_allclose(got.numpy(), want[a, cand], atol=1e-5)


def test_rows_read_with_pread_equal_the_mapped_rows(tmp_path, ragged_banks, small_shards):
    _, videos = ragged_banks(1, 23)
    keys = write(tmp_path, videos, Layout(5, 16))
    store = FeatureStore(tmp_path)
    locations = store.locate(keys[[22, 0, 13, 7, 6, 8, 21, 0]])  # across shards, out of order, one twice
    out = np.empty((len(locations), 5, 16), np.float16)
    store.read_rows(locations, "frames", out)
    np.testing.assert_array_equal(out, store.gather(locations, ("frames",))["frames"])
    with pytest.raises(ValueError, match="C-contiguous"):
        store.read_rows(locations[:2], "frames", np.empty((2, 5, 16), np.float32))


def test_an_index_written_to_disk_is_read_back_and_ranks_alike(tmp_path, ragged_banks):
    texts, videos = ragged_banks(5, 400, clustered=True)
    write(tmp_path / "store", videos, Layout(5, 16), chunk=100)
    store = FeatureStore(tmp_path / "store")
    config = TwoStageConfig(candidates=50, flat_max=0)
    built = TwoStageIndex(StoreRows(store, store.locations()), "wti", config=config, path=tmp_path / "sq8.faiss")
    assert built.kind == "sq8" and (tmp_path / "sq8.faiss").is_file()
    read = TwoStageIndex(StoreRows(store, store.locations()), "wti", config=config, path=tmp_path / "sq8.faiss")
    for a, b in zip(built.search(texts)[0], read.search(texts)[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_rows_written_after_the_last_commit_are_ignored_then_overwritten(tmp_path, ragged_banks, small_shards):
    """A writer killed mid-chunk: its rows are on disk but not committed. A reader does not see them; the next
    writer resumes the same shard at the committed row."""
    _, videos = ragged_banks(1, 6)
    layout = Layout(5, 16)
    writer = ShardWriter(tmp_path, layout)
    writer.append(keys_of(range(3)), np.ones(3, bool), rows(videos, 0, 3), {})
    shard = writer.shard
    shard["key"][3:5] = keys_of([3, 4])  # the next chunk's bytes, written but never committed
    shard["frames"][3:5] = 1.0
    writer.close()
    store = FeatureStore(tmp_path)
    assert len(store) == 3 and (store.locate(keys_of([3, 4])) == -1).all()
    resumed = ShardWriter(tmp_path, layout)
    resumed.append(keys_of(range(3, 6)), np.ones(3, bool), rows(videos, 3, 6), {})
    resumed.close()
    assert [p.name for p in sorted(tmp_path.glob("shard-*"))] == ["shard-w-0000"]
    store.refresh()
    got = store.bank(store.locate(keys_of(range(6))))
    np.testing.assert_array_equal(got.frames.numpy(), videos.frames.half().float().numpy())


def test_two_writers_never_share_a_shard(tmp_path, ragged_banks):
    """A second writer (another process, or another rank) finds the first one's shard locked and opens its own."""
    _, videos = ragged_banks(1, 8)
    layout = Layout(5, 16)
    first, second = ShardWriter(tmp_path, layout), ShardWriter(tmp_path, layout)
    first.append(keys_of(range(4)), np.ones(4, bool), rows(videos, 0, 4), {})
    second.append(keys_of(range(4, 8)), np.ones(4, bool), rows(videos, 4, 8), {})
    first.close()
    second.close()
    assert len(list(tmp_path.glob("shard-*"))) == 2
    store = FeatureStore(tmp_path)
    got = store.bank(store.locate(keys_of(range(8))))
    np.testing.assert_array_equal(got.weights.numpy(), videos.weights.numpy())


def test_failures_are_kept_with_their_rows(tmp_path, ragged_banks):
    _, videos = ragged_banks(1, 4)
    writer = ShardWriter(tmp_path, Layout(5, 16))
    writer.append(keys_of(range(4)), np.array([True, False, True, False]), videos, {1: "truncated", 3: "no frames"})
    writer.close()
    store = FeatureStore(tmp_path)
    locations = store.locate(keys_of(range(4)))
    assert [store.failure(int(loc)) for loc in locations] == [None, "truncated", None, "no frames"]
    assert store.gather(locations, ("ok",))["ok"].tolist() == [True, False, True, False]


def test_a_flipped_byte_fails_its_chunk_and_only_that_chunk(tmp_path, ragged_banks):
    _, videos = ragged_banks(1, 10)
    keys = write(tmp_path, videos, Layout(5, 16), chunk=4)  # chunks of rows 0-3, 4-7, 8-9
    (shard,) = tmp_path.glob("shard-*")
    committed = json.loads((shard / "committed.json").read_text())
    assert [c[:2] for c in committed["chunks"]] == [[0, 4], [4, 8], [8, 10]]
    store = FeatureStore(tmp_path)
    assert store.verify(store.locate(keys)).all()
    path = shard / "weights.npy"
    data = bytearray(path.read_bytes())
    data[4096 + 5 * 4 * 5 + 2] ^= 0xFF  # row 5's weights (5 frames of float32 after a page of header)
    path.write_bytes(bytes(data))
    store = FeatureStore(tmp_path)
    assert store.verify(store.locate(keys)).tolist() == [True] * 4 + [False] * 4 + [True] * 2
