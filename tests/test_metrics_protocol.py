"""Multi-caption evaluation as DRL's main.py ranks it, against a re-implementation of the official reshaping written
here from the official DRL code: captions grouped per video and padded with -inf into (videos, max captions, videos);
text-to-video by a double argsort over each caption's row; video-to-text on each group's best caption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvr_demo.evaluation import metrics


def _official(sim: np.ndarray, caption_video: np.ndarray) -> dict[str, dict[str, float]]:
    """main.py eval_epoch with multi_sentence_: captions contiguous per video, as its cut-off points assume."""
    starts = np.r_[0, np.flatnonzero(np.diff(caption_video)) + 1, len(caption_video)]
    longest = max(np.diff(starts))
    groups = [np.concatenate([sim[s:e], np.full((longest - (e - s), sim.shape[1]), -np.inf)])
              for s, e in zip(starts[:-1], starts[1:], strict=True)]
    tensor = torch.tensor(np.stack(groups))  # (V, max captions, V)
    # tensor_text_to_video_metrics
    stacked = tensor.permute(1, 0, 2)
    second = torch.argsort(torch.argsort(stacked, dim=-1, descending=True), dim=-1)
    ranks = torch.flatten(torch.diagonal(second, dim1=1, dim2=2))
    valid = ~torch.isinf(torch.flatten(torch.diagonal(tensor, dim1=0, dim2=2)))
    ranks = ranks[valid]
    t2v = {f"R@{k}": float(torch.sum(ranks < k) * 100 / len(ranks)) for k in (1, 5, 10)}
    t2v["MdR"] = float(torch.median(ranks + 1))
    t2v["MnR"] = float(np.mean(ranks.numpy() + 1))
    # tensor_video_to_text_sim, then compute_metrics
    v2t_sim = torch.max(tensor, dim=1, keepdim=True).values.squeeze().T.numpy()
    order = np.sort(-v2t_sim, axis=1)
    diag = -np.diag(v2t_sim)[:, None]
    v_ranks = np.where(order - diag == 0)[1]
    v2t = {f"R@{k}": float(100 * np.mean(v_ranks < k)) for k in (1, 5, 10)}
    v2t["MdR"] = float(np.median(v_ranks) + 1)
    v2t["MnR"] = float(np.mean(v_ranks) + 1)
    return {"t2v": t2v, "v2t": v2t}


def _assert_same(ours: dict, official: dict) -> None:
    for direction in ("t2v", "v2t"):
        assert ours[direction] == pytest.approx(official[direction], abs=1e-4)  # official R@k in float32, direction


# 4 videos, captions per video 2, 3, 1, 2. Four captions of other videos (rows 2, 3, 4 of video 1 and row 6 of
# video 3) beat video 0's best caption (0.50), but they form two groups: rank 4 per caption, rank 2 per group.
HAND = np.array([
    [0.50, 0.10, 0.20, 0.00],  # video 0
    [0.30, 0.40, 0.10, 0.05],  # video 0
    [0.60, 0.90, 0.20, 0.10],  # video 1
    [0.55, 0.20, 0.30, 0.25],  # video 1
    [0.70, 0.80, 0.10, 0.30],  # video 1
    [0.10, 0.15, 0.35, 0.40],  # video 2
    [0.65, 0.00, 0.45, 0.20],  # video 3
    [0.20, 0.30, 0.10, 0.95],  # video 3
])
HAND_VIDEO = np.array([0, 0, 1, 1, 1, 2, 3, 3])


def test_hand_made_matrix_ranks_groups_not_captions():
    """Video 0 ranks third among groups (videos 1 and 3 beat it), not fifth among captions."""
    got = metrics.grouped_video_to_text_ranks(HAND, HAND_VIDEO)
    # group maxima per query video j: video 0 -> groups [0.50, 0.70, 0.10, 0.65]; video 2 -> [0.20, 0.30, 0.35, 0.45]
    np.testing.assert_array_equal(got, [2, 0, 1, 0])
    assert metrics.video_to_text_ranks(HAND, HAND_VIDEO)[0] == 4  # the per-caption count differs here
    _assert_same(metrics.evaluate_similarity(HAND, HAND_VIDEO), _official(HAND, HAND_VIDEO))


@pytest.mark.parametrize("seed", range(5))
def test_random_multi_caption_matrices_match_the_official_protocol(seed):
    """Random matrices (no ties) with 1-5 captions per video: both directions equal DRL's main.py."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=30)
    caption_video = np.repeat(np.arange(30), counts)
    sim = rng.standard_normal((len(caption_video), 30)) + 1.5 * np.eye(30)[caption_video]
    ours = metrics.evaluate_similarity(sim, caption_video)
    _assert_same(ours, _official(sim, caption_video))
    # where the protocols differ: the per-caption video-to-text count would give other numbers
    per_caption = metrics.recall_metrics(metrics.video_to_text_ranks(sim, caption_video))
    assert per_caption["MnR"] > ours["v2t"]["MnR"]


def test_even_caption_count_takes_the_lower_median_as_torch():
    """Four captions with ranks 0, 0, 1, 1: torch.median's MdR is 1 (lower middle + 1); np.median's would be 1.5."""
    sim = np.array([[0.9, 0.1], [0.8, 0.7], [0.5, 0.4], [0.6, 0.3]])  # captions of videos 0, 0, 1, 1
    cv = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(metrics.text_to_video_ranks(sim, cv), [0, 0, 1, 1])
    assert metrics.evaluate_similarity(sim, cv)["t2v"]["MdR"] == _official(sim, cv)["t2v"]["MdR"] == 1.0
    assert metrics.recall_metrics(np.array([0, 0, 1, 1]))["MdR"] == 1.5


def test_one_caption_per_video_is_unchanged():
    """MSR-VTT 1k-A: S and S^T ranked as before (np.median), equal to the grouped protocol's v2t."""
    rng = np.random.default_rng(7)
    sim = rng.standard_normal((40, 40)) + np.eye(40)
    cv = np.arange(40)
    got = metrics.evaluate_similarity(sim, cv)
    assert got["t2v"] == metrics.recall_metrics(metrics.gt_ranks(sim, cv))
    assert got["v2t"] == metrics.recall_metrics(metrics.gt_ranks(sim.T, cv))
    np.testing.assert_array_equal(metrics.grouped_video_to_text_ranks(sim, cv), metrics.gt_ranks(sim.T, cv))
