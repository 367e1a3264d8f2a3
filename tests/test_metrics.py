"""Metrics checked against plain-loop references, hand-worked values and the real MSR-VTT 1k-A order."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from tvr_demo.evaluation import metrics
from tvr_demo.evaluation.metrics import QueryOutcome


def loop_ranks(sim: np.ndarray, gt) -> list[int]:
    """Pessimistic rank by counting, row by row, the other entries scoring >= the ground truth."""
    rows = sim.tolist()
    return [
        sum(1 for j, v in enumerate(row) if j != g and v >= row[g]) for row, g in zip(rows, gt, strict=True)
    ]


def loop_v2t_ranks(sim: np.ndarray, caption_video) -> list[int]:
    """For each video: captions of other videos scoring >= its best ground-truth caption, by explicit loops."""
    n_captions, n_videos = sim.shape
    ranks = []
    for v in range(n_videos):
        best = max(sim[c, v] for c in range(n_captions) if caption_video[c] == v)
        ranks.append(sum(1 for c in range(n_captions) if caption_video[c] != v and sim[c, v] >= best))
    return ranks


def loop_top_other(sim: np.ndarray, gt_of, n_items: int, query: int) -> int:
    """First item (column of row `query`) with the highest score among items that are not ground truths."""
    others = [j for j in range(n_items) if not gt_of(j)]
    best = max(sim[query, j] for j in others)
    return next(j for j in others if sim[query, j] == best)


def official_ranks(x: np.ndarray) -> np.ndarray:
    """DRL/CLIP4Clip `compute_metrics` rank lookup, as in the official code (correct only without ties)."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    return np.where(sx - d == 0)[1]


# A tiny worked example: 4 captions x 4 videos, one caption per video, with ties.
TIED = np.array(
    [
        [0.9, 0.9, 0.1, 0.0],  # gt 0 = 0.9 tied with col 1 for first -> rank 1 (pessimistic)
        [0.5, 0.2, 0.5, 0.2],  # gt 1 = 0.2: cols 0 and 2 above, col 3 tied -> rank 3
        [0.1, 0.2, 0.3, 0.4],  # gt 2 = 0.3: col 3 above, no tie -> rank 1
        [0.7, 0.7, 0.7, 0.7],  # all tied: the 3 others count -> rank 3
    ]
)


def test_ties_are_pessimistic():
    """A ground truth tied with others ranks below them: every other entry >= its score counts."""
    np.testing.assert_array_equal(metrics.gt_ranks(TIED, np.arange(4)), [1, 3, 1, 3])
    np.testing.assert_array_equal(metrics.gt_ranks(TIED, np.arange(4)), loop_ranks(TIED, range(4)))


def test_constant_scores_get_no_credit():
    """A model scoring everything alike (e.g. all-zero sparse lexicon scores) gets R@1 = 0, not 100."""
    for n in (2, 5, 100):
        result = metrics.evaluate_similarity(np.zeros((n, n), dtype=np.float32), np.arange(n))
        for direction in ("t2v", "v2t"):
            assert result[direction]["R@1"] == 0.0
            assert result[direction]["MdR"] == result[direction]["MnR"] == n  # every rank is n - 1
    # One item: nothing else to tie with, so it is found.
    assert metrics.evaluate_similarity(np.zeros((1, 1)), np.arange(1))["t2v"]["R@1"] == 100.0
    # Several captions per video: only captions of other videos count in v2t.
    caption_video = np.array([0, 0, 1, 2, 2, 2])
    sim = np.full((6, 3), 0.5)
    np.testing.assert_array_equal(metrics.text_to_video_ranks(sim, caption_video), [2] * 6)
    np.testing.assert_array_equal(metrics.video_to_text_ranks(sim, caption_video), [4, 5, 3])
    outcomes = metrics.query_outcomes(sim, caption_video, "t2v")
    assert len(metrics.failures(outcomes)) == 6 and all(o.margin == 0.0 for o in outcomes)


def test_official_lookup_misaligns_on_ties_but_agrees_without():
    """The official np.where gives extra hits on tied rows (the bug we avoid) and matches us without ties."""
    assert len(official_ranks(TIED)) > 4
    sim = np.random.default_rng(0).standard_normal((50, 50))
    np.testing.assert_array_equal(metrics.gt_ranks(sim, np.arange(50)), official_ranks(sim))


def test_recall_metrics_by_hand():
    """Ranks [0, 2, 1, 0, 7, 12]: R@1 2/6, R@5 4/6, R@10 5/6, MdR median(0,0,1,2,7,12)+1 = 2.5, MnR 22/6+1."""
    got = metrics.recall_metrics(np.array([0, 2, 1, 0, 7, 12]))
    want = {"R@1": 100 * 2 / 6, "R@5": 100 * 4 / 6, "R@10": 100 * 5 / 6, "MdR": 2.5, "MnR": 22 / 6 + 1}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value)


def test_tiny_example_both_directions():
    """TIED as (captions, videos): t2v ranks [1,3,1,3]; v2t counts off-diagonal column entries >= diagonal."""
    result = metrics.evaluate_similarity(TIED, np.arange(4))
    # t2v: median(1,1,3,3) + 1 = 3, mean 8/4 + 1 = 3.
    assert result["t2v"] == pytest.approx({"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "MdR": 3.0, "MnR": 3.0})
    # Columns: v0 [.9,.5,.1,.7] gt .9 -> 0; v1 [.9,.2,.2,.7] gt .2 -> 3 (.9, .7 and the tied .2);
    # v2 [.1,.5,.3,.7] gt .3 -> 2; v3 [0,.2,.4,.7] gt .7 -> 0.
    np.testing.assert_array_equal(metrics.video_to_text_ranks(TIED, np.arange(4)), [0, 3, 2, 0])
    # v2t: median(0,0,2,3) + 1 = 2, mean 5/4 + 1 = 2.25.
    assert result["v2t"] == pytest.approx({"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 2.25})


def test_multi_caption_matches_loops():
    """Several captions per video (MSVD-like), quantised scores (many ties): both match loops."""
    rng = np.random.default_rng(1)
    caption_video = rng.permutation(np.repeat(np.arange(15), rng.integers(1, 5, size=15)))
    sim = rng.integers(0, 6, size=(caption_video.size, 15)).astype(np.float32) / 5
    np.testing.assert_array_equal(
        metrics.text_to_video_ranks(sim, caption_video), loop_ranks(sim, caption_video)
    )
    np.testing.assert_array_equal(
        metrics.video_to_text_ranks(sim, caption_video), loop_v2t_ranks(sim, caption_video)
    )


def test_multi_caption_v2t_uses_best_caption():
    """Video 0 has captions 0 and 2; caption 2 is its best, beaten only by caption 1 -> rank 1."""
    sim = np.array([[0.1, 0.0], [0.8, 0.9], [0.5, 0.2]])  # (3 captions, 2 videos)
    caption_video = np.array([0, 1, 0])
    np.testing.assert_array_equal(metrics.video_to_text_ranks(sim, caption_video), [1, 0])
    np.testing.assert_array_equal(metrics.text_to_video_ranks(sim, caption_video), [0, 0, 0])


def test_multi_caption_v2t_ties():
    """A video's own captions tied with its best never count; another video's tied caption does."""
    # Column v0: captions 0, 1 (both v0) and 2 (v1) all 0.5 -> only caption 2 counts -> rank 1, top 2.
    # Column v1: gt caption 2 = 0.3, captions 0 and 1 tie it -> rank 2, top 0.
    sim = np.array([[0.5, 0.3], [0.5, 0.3], [0.5, 0.3]])
    caption_video = np.array([0, 0, 1])
    np.testing.assert_array_equal(metrics.video_to_text_ranks(sim, caption_video), [1, 2])
    v2t = metrics.query_outcomes(sim, caption_video, "v2t")
    assert v2t[0] == QueryOutcome(query=0, gt=0, rank=1, top=2, gt_score=0.5, top_score=0.5, margin=0.0)
    assert v2t[1] == QueryOutcome(query=1, gt=2, rank=2, top=0, gt_score=0.3, top_score=0.3, margin=0.0)
    # t2v: caption 0's gt v0 = 0.5 beats v1 = 0.3 -> 0; caption 2's gt v1 = 0.3 is beaten by v0 -> 1.
    np.testing.assert_array_equal(metrics.text_to_video_ranks(sim, caption_video), [0, 0, 1])


def test_one_caption_per_video_reduces_to_diagonal():
    """With one caption per video (any order), v2t is gt_ranks on S transposed."""
    rng = np.random.default_rng(2)
    caption_video = rng.permutation(40)
    sim = rng.integers(0, 4, size=(40, 40)).astype(np.float64)
    want = metrics.gt_ranks(sim.T, np.argsort(caption_video))
    np.testing.assert_array_equal(metrics.video_to_text_ranks(sim, caption_video), want)


def test_blockwise_matches_loops(monkeypatch):
    """Tiny blocks (3 entries) exercise the block boundaries, including a block narrower than one row."""
    monkeypatch.setattr(metrics, "_BLOCK_ENTRIES", 3)
    rng = np.random.default_rng(3)
    caption_video = np.r_[np.arange(7), rng.integers(0, 7, size=5)]
    sim = rng.integers(0, 5, size=(12, 7)).astype(np.float32)
    np.testing.assert_array_equal(metrics.gt_ranks(sim, caption_video), loop_ranks(sim, caption_video))
    np.testing.assert_array_equal(
        metrics.video_to_text_ranks(sim, caption_video), loop_v2t_ranks(sim, caption_video)
    )
    for o in metrics.query_outcomes(sim, caption_video, "v2t"):
        if o.rank > 0:  # the first caption of another video with the top score among those
            want = loop_top_other(sim.T, lambda c, v=o.query: caption_video[c] == v, sim.shape[0], o.query)
            assert o.top == want and o.margin >= 0
    for o in metrics.query_outcomes(sim, caption_video, "t2v"):
        if o.rank > 0:  # the first video other than the gt with the top score among those
            assert o.top == loop_top_other(sim, lambda j, g=o.gt: j == g, sim.shape[1], o.query)
            assert o.top != o.gt and o.margin >= 0


def test_bad_inputs_are_refused():
    """NaN scores, a video with no caption and out-of-range ground truths raise instead of scoring."""
    with pytest.raises(ValueError, match="NaN"):
        metrics.gt_ranks(np.array([[np.nan, 0.0], [0.0, 1.0]]), np.arange(2))
    with pytest.raises(ValueError, match="no caption"):
        metrics.video_to_text_ranks(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        metrics.gt_ranks(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="empty"):
        metrics.recall_metrics(np.array([], dtype=np.int64))


def test_dual_softmax_matches_loops():
    """s[i, j] * exp(T s[i, j]) / sum_q exp(T s[q, j]) over queries, with loops; axis=1 is the transpose."""
    rng = np.random.default_rng(4)
    sim = rng.uniform(-1, 1, size=(6, 5))
    want = np.empty_like(sim)
    for j in range(5):
        denom = sum(math.exp(100 * sim[q, j]) for q in range(6))
        for i in range(6):
            want[i, j] = sim[i, j] * math.exp(100 * sim[i, j]) / denom
    np.testing.assert_allclose(metrics.dual_softmax(sim), want, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(metrics.dual_softmax(sim.T, axis=1), want.T, rtol=1e-10, atol=1e-300)


def test_dual_softmax_is_stable_and_keeps_float32():
    """Large temperatures must not overflow; float32 input stays float32 (a 10k x 10k matrix is 400 MB)."""
    sim = np.array([[10.0, -10.0], [9.0, 10.0]], dtype=np.float32)
    out = metrics.dual_softmax(sim, temperature=1000.0)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_standardize_rows():
    """Each row gets mean 0 and std 1 (population std); a constant row becomes zeros, not NaN."""
    sim = np.array([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    out = metrics.standardize_rows(sim)
    row = [1.0, 2.0, 3.0, 6.0]
    mean = sum(row) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in row) / 4)
    np.testing.assert_allclose(out[0], [(v - mean) / std for v in row])
    np.testing.assert_array_equal(out[1], 0.0)


def test_query_outcomes_t2v_and_v2t():
    """t2v: best other item and margin per caption; a tie is a miss with margin 0. v2t: gt is the best caption."""
    out = metrics.query_outcomes(TIED, np.arange(4), "t2v")
    assert out[0] == QueryOutcome(query=0, gt=0, rank=1, top=1, gt_score=0.9, top_score=0.9, margin=0.0)
    assert out[1] == QueryOutcome(
        query=1, gt=1, rank=3, top=0, gt_score=0.2, top_score=0.5, margin=pytest.approx(0.3)
    )
    assert out[2] == QueryOutcome(
        query=2, gt=2, rank=1, top=3, gt_score=0.3, top_score=0.4, margin=pytest.approx(0.1)
    )
    assert out[3] == QueryOutcome(query=3, gt=3, rank=3, top=0, gt_score=0.7, top_score=0.7, margin=0.0)
    # rank 3 (margins .3, 0), then rank 1 (margins .1, 0)
    assert [o.query for o in metrics.failures(out)] == [1, 3, 2, 0]

    sim = np.array([[0.1, 0.0], [0.8, 0.9], [0.5, 0.2]])
    v2t = metrics.query_outcomes(sim, np.array([0, 1, 0]), "v2t")
    assert v2t[0] == QueryOutcome(
        query=0, gt=2, rank=1, top=1, gt_score=0.5, top_score=0.8, margin=pytest.approx(0.3)
    )
    assert v2t[1] == QueryOutcome(query=1, gt=1, rank=0, top=1, gt_score=0.9, top_score=0.9, margin=0.0)
    with pytest.raises(ValueError, match="direction"):
        metrics.query_outcomes(sim, np.array([0, 1, 0]), "t2t")


def test_failures_order():
    """Only rank >= k; by rank worst first, or by margin largest first."""
    outcomes = [
        QueryOutcome(0, 0, 0, 0, 0.9, 0.9, 0.0),
        QueryOutcome(1, 1, 3, 4, 0.2, 0.3, 0.1),
        QueryOutcome(2, 2, 1, 5, 0.1, 0.6, 0.5),
        QueryOutcome(3, 3, 7, 6, 0.4, 0.6, 0.2),
    ]
    assert [o.query for o in metrics.failures(outcomes)] == [3, 1, 2]
    assert [o.query for o in metrics.failures(outcomes, sort_by="margin")] == [2, 3, 1]
    assert [o.query for o in metrics.failures(outcomes, k=5)] == [3]
    with pytest.raises(ValueError, match="sort_by"):
        metrics.failures(outcomes, sort_by="score")


def test_slice_metrics_single_and_multi_label():
    """Per slice: recall_metrics on the ranks a loop gathers; a multi-label query counts in each slice."""
    ranks = np.array([0, 3, 12, 0, 1, 20])
    single = ["cat", "dog", "cat", "cat", "dog", "bird"]
    got = metrics.slice_metrics(ranks, single)
    assert list(got) == ["cat", "dog", "bird"]
    for name in ("cat", "dog", "bird"):
        idx = [i for i, label in enumerate(single) if label == name]
        assert got[name] == {**metrics.recall_metrics(ranks[idx]), "n": len(idx)}
    assert got["cat"]["R@1"] == pytest.approx(200 / 3)

    multi = [["cat", "outdoor"], ["dog"], [], ("cat",), ["outdoor", "outdoor"], "bird"]
    got = metrics.slice_metrics(ranks, multi)
    assert {name: m["n"] for name, m in got.items()} == {"cat": 2, "outdoor": 2, "dog": 1, "bird": 1}
    assert got["outdoor"]["MnR"] == pytest.approx((0 + 1) / 2 + 1)
    with pytest.raises(ValueError, match="labels"):
        metrics.slice_metrics(ranks, single[:-1])


def test_keyword_slices():
    """Frequent content words become labels; stop words, rare words and one-letter pieces do not."""
    captions = ["A man is playing the guitar", "a man's dog runs", "the dog runs fast", "a woman is singing"]
    labels = metrics.keyword_slices(captions, min_count=2, max_slices=30)
    assert labels == [["man"], ["dog", "man", "runs"], ["dog", "runs"], []]
    assert metrics.keyword_slices(captions, min_count=2, max_slices=1) == [[], ["dog"], ["dog"], []]


def test_compare_ranks():
    """Each query lands in exactly one cell, by hit (rank < k) for a and b."""
    a = np.array([0, 0, 3, 3, 1])
    b = np.array([0, 2, 0, 5, 0])
    got = metrics.compare_ranks(a, b)
    want = {"both_right": [0], "a_only": [1], "b_only": [2, 4], "both_wrong": [3]}
    assert {key: got[key].tolist() for key in want} == want
    got = metrics.compare_ranks(a, b, k=3)
    want = {"both_right": [0, 1, 4], "a_only": [], "b_only": [2], "both_wrong": [3]}
    assert {key: got[key].tolist() for key in want} == want


def test_msrvtt_1ka_order(msrvtt_reference):
    """Real 1k-A: 1,000 distinct videos, row i's gt is column i; ranks match loops; identity is perfect."""
    with open(msrvtt_reference / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1000
    video_column = {row["video_id"]: i for i, row in enumerate(rows)}
    assert len(video_column) == 1000
    caption_video = np.array([video_column[row["video_id"]] for row in rows])
    np.testing.assert_array_equal(caption_video, np.arange(1000))

    rng = np.random.default_rng(1000)
    sim = (rng.integers(0, 50, size=(1000, 1000)) / 50).astype(np.float32)  # coarse values: many ties
    sim[np.arange(1000), caption_video] += rng.integers(0, 2, size=1000) * 0.5  # half the diagonal boosted
    np.testing.assert_array_equal(
        metrics.text_to_video_ranks(sim, caption_video), loop_ranks(sim, caption_video)
    )
    np.testing.assert_array_equal(
        metrics.video_to_text_ranks(sim, caption_video), loop_ranks(sim.T, caption_video)
    )

    perfect = metrics.evaluate_similarity(np.eye(1000, dtype=np.float32), caption_video)
    for direction in ("t2v", "v2t"):
        assert perfect[direction] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
