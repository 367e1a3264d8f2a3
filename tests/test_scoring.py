"""tvr_demo/retrieval/scoring.py and the formulas it shares (the interaction's weights, DP, the lexicon score for dense and
sparse input, UNIFY's fusion, the model's frame sampling) against references written in the test."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch
from reference import loop_zscore, np_uniform_weights, np_wti

from tvr_demo.data.video import FrameSampling
from tvr_demo.models import drl
from tvr_demo.models.unify import lexicon_similarity
from tvr_demo.retrieval.scoring import fuse_scores, similarity_matrix


@pytest.mark.parametrize("interaction", ["wti", "ti", "dp"])
def test_similarity_matrix_is_the_definition(ragged_banks, interaction):
    texts, videos = ragged_banks(9, 13, seed=3)
    got = similarity_matrix(texts, videos, interaction, block=4).double().numpy()
    t, v = texts.tokens.double().numpy(), videos.frames.double().numpy()
    tm, vm = texts.mask.numpy(), videos.mask.numpy()
    if interaction == "dp":  # cos(EOT, normalised mean of the valid normalised frames), by a loop
        want = np.zeros((9, 13))
        for a in range(9):
            eot = t[a, tm[a].sum() - 1]
            for b in range(13):
                mean = v[b][vm[b] > 0].mean(0)
                want[a, b] = eot @ mean / np.linalg.norm(mean)
    elif interaction == "wti":
        want = np_wti(t, tm, texts.weights.double().numpy(), v, vm, videos.weights.double().numpy())
    else:  # TI ignores the heads' weights: uniform over valid positions
        want = np_wti(t, tm, np_uniform_weights(tm), v, vm, np_uniform_weights(vm))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_weights_for_decides_by_interaction():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    head = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    assert torch.equal(drl.weights_for("wti", mask, head), head)
    for interaction in ("ti", "dp"):
        np.testing.assert_allclose(drl.weights_for(interaction, mask, head), [[0.5, 0.5, 0, 0], [0.25] * 4])
    np.testing.assert_allclose(drl.weights_for("wti", mask, None), [[0.5, 0.5, 0, 0], [0.25] * 4])  # no heads


def test_lexicon_score_is_the_same_dense_or_sparse():
    """By hand: q = (1, 0, 2, 0), v1 = (3, 1, 0, 0), v2 = (0.5, 0, 0.25, 4): q.v1 = 3, q.v2 = 0.5 + 0.5 = 1."""
    q = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    v = torch.tensor([[3.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.25, 4.0]])
    for a, b in ((q, v), (scipy.sparse.csr_matrix(q.numpy()), v), (q, scipy.sparse.csr_matrix(v.numpy())),
                 (scipy.sparse.csr_matrix(q.numpy()), scipy.sparse.csr_matrix(v.numpy()))):
        np.testing.assert_allclose(lexicon_similarity(a, b).numpy(), [[3.0, 1.0]])


@pytest.mark.parametrize("query_axis", [0, 1])
def test_fusion_standardises_along_the_queries_gallery(query_axis):
    g = np.random.default_rng(0)
    latent, lexicon = g.normal(size=(4, 6)), np.abs(g.normal(size=(4, 6)))
    lexicon[1] = 0.0  # a query with no shared word: a constant row standardises to zeros
    got = fuse_scores(latent, lexicon, 0.5, query_axis)
    if query_axis == 0:
        want = [[a + 0.5 * b for a, b in zip(loop_zscore(latent[i]), loop_zscore(lexicon[i]), strict=True)]
                for i in range(4)]
    else:
        want = np.array([[a + 0.5 * b for a, b in zip(loop_zscore(latent[:, j]), loop_zscore(lexicon[:, j]),
                                                      strict=True)] for j in range(6)]).T
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_the_model_hands_out_its_frame_sampling():
    from helpers import tiny_config

    config = tiny_config(max_frames=4, framerate=2.0)
    assert config.sampling() == FrameSampling(max_frames=4, framerate=2.0)
    assert config.sampling(31.0) == FrameSampling(max_frames=4, framerate=2.0, end_s=31.0)


def test_the_map_thumbnail_is_a_frame_the_model_sees(tiny_app, monkeypatch):
    """The hover thumbnail is the middle frame of the model's own sampling, not of the default 12 frames at 1 fps."""
    from tvr_demo.ui import session as session_module

    engine = tiny_app.engine("drl-wti")
    monkeypatch.setattr(engine.config, "max_frames", 4)  # unlike the default 12 frames
    monkeypatch.setattr(engine.bench, "end_s", 31.0)  # a windowed gallery (DiDeMo's first 31 s)
    seen = []
    monkeypatch.setattr(session_module, "video_thumbnail", lambda path, sampling: seen.append(sampling) or "uri")
    assert tiny_app.thumbnail(session_module.gallery_key_of(engine.bench), 0) == "uri"
    assert seen == [FrameSampling(max_frames=4, framerate=engine.config.framerate, end_s=31.0)]
