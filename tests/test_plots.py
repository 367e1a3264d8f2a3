"""Figures built from hand-made explanation arrays: the right traces, argmax markers where a loop puts them, and
contributions that add up to the score the figure states."""

from __future__ import annotations

import numpy as np
import pytest

from tvr_demo import plots
from tvr_demo.plots.explanations import PADDING

TOKENS = ["<sot>", "red", "ball", "<eot>"]
COSINE = np.array([[0.10, 0.20, 0.05],  # (T=4, V=3) hand-made, one clear maximum per row and column
                   [0.70, 0.30, 0.10],
                   [0.20, 0.60, 0.40],
                   [0.30, 0.25, 0.50]])
W_T = np.array([0.1, 0.4, 0.3, 0.2])
W_V = np.array([0.5, 0.3, 0.2])


def _loop_terms(cos, w_t, w_v):
    """WTI written as plain loops: argmaxes, per-token and per-frame contributions, t2v, v2t, S."""
    n_t, n_v = cos.shape
    t_arg = [max(range(n_v), key=lambda v, t=t: cos[t, v]) for t in range(n_t)]
    v_arg = [max(range(n_t), key=lambda t, v=v: cos[t, v]) for v in range(n_v)]
    t_con = [w_t[t] * cos[t, t_arg[t]] for t in range(n_t)]
    v_con = [w_v[v] * cos[v_arg[v], v] for v in range(n_v)]
    t2v, v2t = sum(t_con), sum(v_con)
    return np.array(t_arg), np.array(v_arg), np.array(t_con), np.array(v_con), t2v, v2t, (t2v + v2t) / 2


def _trace(fig, name_start):
    return next(t for t in fig.data if (t.name or "").startswith(name_start))


@pytest.fixture
def wti_figure():
    t_arg, v_arg, t_con, v_con, t2v, v2t, score = _loop_terms(COSINE, W_T, W_V)
    fig = plots.token_frame_figure(TOKENS, COSINE, W_T, W_V, t_arg, v_arg, t_con, v_con, t2v, v2t, score,
                                   thumbnails=["data:image/jpeg;base64,AAAA"] * 3, title="pair")
    return fig, score


def test_token_frame_figure_has_heatmap_markers_and_bars(wti_figure):
    fig, _ = wti_figure
    heat = next(t for t in fig.data if t.type == "heatmap")
    np.testing.assert_allclose(np.asarray(heat.z), COSINE)
    assert [t.type for t in fig.data].count("bar") == 4
    assert len(fig.layout.images) == 3 and [im.x for im in fig.layout.images] == [0, 1, 2]
    labels = list(fig.layout.yaxis2.ticktext)
    assert labels == TOKENS


def test_argmax_markers_sit_on_each_rows_and_columns_maximum(wti_figure):
    fig, _ = wti_figure
    tokens = _trace(fig, "each token's best frame")
    frames = _trace(fig, "each frame's best token")
    assert list(tokens.x) == [1, 0, 1, 2] and list(tokens.y) == [0, 1, 2, 3]
    assert list(frames.x) == [0, 1, 2] and list(frames.y) == [1, 2, 3]


def test_contributions_shown_are_the_hand_computed_ones(wti_figure):
    """Worked by hand from COSINE, W_T, W_V: tokens take their row maxima 0.20, 0.70, 0.60, 0.50, frames their column
    maxima 0.70, 0.60, 0.50; t2v = 0.02 + 0.28 + 0.18 + 0.10 = 0.58, v2t = 0.35 + 0.18 + 0.10 = 0.63, S = 0.605."""
    fig, _ = wti_figure
    np.testing.assert_allclose(list(_trace(fig, "token contribution").x), [0.02, 0.28, 0.18, 0.10], atol=1e-12)
    np.testing.assert_allclose(list(_trace(fig, "frame contribution").y), [0.35, 0.18, 0.10], atol=1e-12)
    assert "0.6050" in fig.layout.title.text and "0.5800" in fig.layout.title.text and "0.6300" in fig.layout.title.text


def test_max_on_a_padded_frame_is_shown_as_a_padding_column():
    """DRL zeroes masked entries before the max: a token whose real frames all score below 0 matches padding."""
    cos = np.array([[-0.2, -0.1], [0.3, 0.1]])
    w_t, w_v = np.array([0.5, 0.5]), np.array([0.5, 0.5])
    t_arg, v_arg = np.array([2, 0]), np.array([1, 1])  # token 0's max is the padded frame 2 (value 0)
    t_con = np.array([0.0, 0.15])
    v_con = w_v * np.array([0.3, 0.1])
    fig = plots.token_frame_figure(["a", "b"], cos, w_t, w_v, t_arg, v_arg, t_con, v_con, 0.15, 0.2, 0.175)
    heat = next(t for t in fig.data if t.type == "heatmap")
    assert np.asarray(heat.z).shape == (2, 3) and list(fig.layout.xaxis2.ticktext)[-1] == PADDING
    assert list(_trace(fig, "each token's best frame").x) == [2, 0]


def test_pooled_figure_states_the_score():
    fig = plots.pooled_figure(["<sot>", "a", "<eot>"], np.array([0.1, 0.3]), 0.25)
    assert fig.data[0].type == "bar" and list(fig.data[0].y) == [0.1, 0.3]
    assert any("0.2500" in a.text for a in fig.layout.annotations)


def test_lexicon_figure_shared_words_add_up_to_the_lexicon_score():
    query = [("red", 1.2), ("ball", 0.8), ("moves", 0.4)]
    video = [("red", 0.9), ("circle", 0.7), ("ball", 0.5)]
    shared = [("red", 1.2, 0.9), ("ball", 0.8, 0.5)]
    fig = plots.lexicon_figure(query, video, shared, {"latent": 0.3, "lexicon": 1.48, "fused": 1.1})
    q_bars, v_bars, s_bars = fig.data
    assert sum(s_bars.x) == pytest.approx(1.2 * 0.9 + 0.8 * 0.5) == pytest.approx(1.48)
    assert list(q_bars.marker.color) == [plots.explanations.SHARED_COLOUR] * 2 + [plots.explanations.ALONE_COLOUR]
    assert "fused 1.1000" in fig.layout.title.text


def test_lexicon_difference_sums_to_the_score_gap():
    a, b = {"red": 1.0, "ball": 0.4}, {"red": 0.2, "square": 0.5}
    fig = plots.lexicon_difference_figure(a, b, "wrong", "right")
    by_word = dict(zip(fig.data[0].y, fig.data[0].x, strict=True))  # by hand: red 1.0 - 0.2, ball 0.4, square -0.5
    assert by_word == pytest.approx({"red": 0.8, "ball": 0.4, "square": -0.5})
    assert list(fig.data[0].y)[0] == "red"  # largest absolute difference first


def test_metrics_slice_and_compare_figures():
    m = {"R@1": 40.0, "R@5": 70.0, "R@10": 80.0, "MdR": 2.0, "MnR": 9.5}
    fig = plots.metrics_figure({"latent": {"t2v": m, "v2t": m}, "fused": {"t2v": m, "v2t": m}})
    assert len(fig.data) == 4 and list(fig.data[0].y) == [40.0, 70.0, 80.0]
    fig = plots.slice_figure({"a": {"colour:red": {"R@1": 50.0, "n": 4}, "shape:star": {"R@1": 25.0, "n": 8}}})
    assert list(fig.data[0].x) == [50.0, 25.0]
    fig = plots.compare_figure({"both_right": 5, "a_only": 2, "b_only": 1, "both_wrong": 3}, "A", "B")
    assert np.asarray(fig.data[0].z).tolist() == [[5, 2], [1, 3]]


def test_correlation_figure_and_stats():
    identity = np.eye(5)
    noisy = identity + 0.1 * (np.ones((5, 5)) - identity)
    stats = plots.correlation_stats(noisy)
    assert stats["diag_mean"] == pytest.approx(1.0) and stats["offdiag_mean_abs"] == pytest.approx(0.1)
    fig = plots.correlation_figure({"cdcr": identity, "plain": noisy})
    assert [t.type for t in fig.data] == ["heatmap", "histogram", "heatmap", "histogram"]
    assert len(fig.data[1].x) == 20  # off-diagonal entries only


def test_embedding_map_has_points_with_ids_and_failure_lines():
    text_xy, video_xy = np.arange(6.0).reshape(3, 2), -np.arange(4.0).reshape(2, 2)
    fig = plots.embedding_map_figure(text_xy, video_xy, ["t0", "t1", "t2"], ["v0", "v1"], ["caption"] * 3,
                                     ["video"] * 2, failures=[(0, 1, 0)], key="g")
    video, caption, to_gt, to_winner, failed, truth, winner = fig.data  # captions drawn over the videos
    assert caption.type == "scattergl" and [list(c) for c in caption.customdata] == [["caption", i, "g"] for i in range(3)]
    assert [c[0] for c in video.customdata] == ["video", "video"]
    assert list(to_gt.x) == [0.0, -2.0, None] and list(to_winner.x) == [0.0, -0.0, None]
    # each failure's ends are marked too, since most lie close to both their videos
    assert (list(failed.x), list(truth.x), list(winner.x)) == ([0.0], [-2.0], [-0.0])
