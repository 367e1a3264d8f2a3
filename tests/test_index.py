"""Two-stage search (tvr_demo/retrieval/index.py) against exact scoring, and the engine's hook into it."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from tvr_demo.errors import QueryError
from tvr_demo.models import drl
from tvr_demo.retrieval.index import TwoStageConfig, TwoStageIndex
from tvr_demo.retrieval.scoring import TextBank, VideoBank, similarity_matrix
from tvr_demo.retrieval.split_scan import SplitScan


@pytest.fixture
def banks(ragged_banks):
    """Clips that cluster (so a pooled first stage means something) with padded frames, and short queries."""
    def make(n_videos: int = 400, n_texts: int = 6, dim: int = 32, seed: int = 0):
        return ragged_banks(n_texts, n_videos, tokens=32, frames=12, dim=dim, seed=seed, clustered=True)
    return make


def exact_top(texts: TextBank, videos: VideoBank, interaction: str, k: int = 10,
              valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    full = similarity_matrix(texts, videos, interaction).numpy()
    if valid is not None:
        full[:, ~valid] = -np.inf
    order = np.argsort(-full, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(full, order, 1)


@pytest.mark.parametrize("interaction", ["wti", "ti", "dp"])
def test_all_candidates_gives_the_exact_search(interaction: str, banks) -> None:
    texts, videos = banks()
    index = TwoStageIndex(videos, interaction, config=TwoStageConfig(candidates=400))
    assert index.kind == "flat"
    ids, scores = index.search(texts, k=10)
    want_ids, want_scores = exact_top(texts, videos, interaction)
    np.testing.assert_array_equal(np.stack(ids), want_ids)
    np.testing.assert_allclose(np.stack(scores), want_scores, atol=1e-5)


def test_rerank_scores_are_wti_similarity_of_the_candidates(banks) -> None:
    texts, videos = banks()
    index = TwoStageIndex(videos, "wti", config=TwoStageConfig(candidates=50))
    cands = index.candidates(texts)
    for a, (cand, got) in enumerate(zip(cands, index.rerank(texts, cands), strict=True)):
        assert len(cand) == 50
        pick = torch.as_tensor(cand)
        want = drl.wti_similarity(texts.tokens[a:a + 1], texts.mask[a:a + 1], texts.weights[a:a + 1],
                                  videos.frames[pick], videos.mask[pick], videos.weights[pick])[0]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_first_stage_ranks_by_pooled_inner_product(banks) -> None:
    texts, videos = banks()
    index = TwoStageIndex(videos, "wti", config=TwoStageConfig(candidates=20))
    q = index.query_vectors(texts)
    want = np.argsort(-(q @ videos.pooled.numpy().T), axis=1, kind="stable")[:, :20]
    for got, w in zip(index.candidates(texts), want, strict=True):
        assert set(got.tolist()) == set(w.tolist())


def test_the_8_bit_first_stage_of_large_galleries_ranks_like_the_flat_one(banks) -> None:
    """Above flat_max the first stage scans 8-bit codes: its candidates are (nearly) the exact inner product's, and
    with every clip a candidate the re-ranked search is the exact one."""
    texts, videos = banks(n_videos=2000)
    flat = TwoStageIndex(videos, "wti", config=TwoStageConfig(candidates=2000))
    coded = TwoStageIndex(videos, "wti", config=TwoStageConfig(candidates=2000, flat_max=0))
    assert (flat.kind, coded.kind) == ("flat", "sq8")
    for a, b in zip(flat.search(texts)[0], coded.search(texts)[0], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(flat.candidates(texts, 100), coded.candidates(texts, 100), strict=True):
        assert len(set(a.tolist()) & set(b.tolist())) >= 95


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_a_split_scan_finds_what_the_whole_index_finds(banks, parts: int) -> None:
    """The 8-bit codes cut into parts scanned in threads: the merged top k is the whole index's, for k within a part,
    above a part's size (parts of 143 rows, k = 400) and above the gallery (padded with -1 at the end)."""
    texts, videos = banks(n_videos=1000)
    pooled = videos.pooled.numpy()
    whole = faiss.IndexScalarQuantizer(pooled.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    whole.train(pooled)
    whole.add(pooled)
    queries = TwoStageIndex(videos, "wti").query_vectors(texts)
    split = SplitScan(whole, parts)
    for k in (20, 400, 1200):
        want_scores, want_ids = whole.search(queries, k)
        got_scores, got_ids = split.search(queries, k)
        assert got_ids.shape == (len(queries), k)
        np.testing.assert_array_equal(np.sort(got_ids, 1), np.sort(want_ids, 1))
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)


def test_undecodable_videos_are_never_candidates(banks) -> None:
    texts, videos = banks()
    valid = np.ones(400, dtype=bool)
    valid[::3] = False
    index = TwoStageIndex(videos, "wti", valid, TwoStageConfig(candidates=400))
    ids, _ = index.search(texts)
    want_ids, _ = exact_top(texts, videos, "wti", valid=valid)
    np.testing.assert_array_equal(np.stack(ids), want_ids)
    rows = index.row_scores(texts)
    assert np.isneginf(rows[:, ~valid]).all() and np.isfinite(rows[:, valid]).all()


# ---------------------------------------------------------------- the engine's hook


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tvr_demo.data import load_benchmark
    from tvr_demo.data.synthetic import SyntheticConfig, generate
    from tvr_demo.models import ModelConfig, TVRModel
    from tvr_demo.models.backbone import clip_config
    from tvr_demo.models.checkpoints import load_checkpoint, save_checkpoint
    from tvr_demo.retrieval.engine import Engine

    root = tmp_path_factory.mktemp("index_engine")
    bench_dir = generate(root / "bench", SyntheticConfig(n_train=0, n_val=0, n_test=12), progress=False,
                         num_workers=0)
    torch.manual_seed(0)
    model = TVRModel(ModelConfig(clip=clip_config("tvr-tiny"), interaction="wti")).eval()
    checkpoint = load_checkpoint(save_checkpoint(model, root / "ckpt"), "cpu")
    return Engine(checkpoint, load_benchmark(bench_dir, "test"), cache_root=root / "cache", progress=False)


def test_engine_two_stage_matches_exact_when_every_clip_is_a_candidate(engine) -> None:
    query = "a small red ball moves to the left"
    exact = engine.search_text(query, k=5, mode="exact")
    staged = engine.search_text(query, k=5, mode="two_stage")
    assert [h.index for h in staged.hits] == [h.index for h in exact.hits]
    np.testing.assert_allclose([h.score for h in staged.hits], [h.score for h in exact.hits], atol=1e-5)


def test_engine_picks_two_stage_above_its_threshold(engine, monkeypatch) -> None:
    calls = []
    real = type(engine.two_stage_index).row_scores
    monkeypatch.setattr(type(engine.two_stage_index), "row_scores",
                        lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    engine.search_text("a blue cube")
    assert not calls  # 12 clips: exact
    monkeypatch.setattr(engine, "two_stage_above", 5)
    engine.search_text("a blue cube")
    assert calls == [1]


def test_engine_rejects_an_unknown_mode(engine) -> None:
    with pytest.raises(QueryError, match="exact, two_stage"):
        engine.search_text("a blue cube", mode="fast")
