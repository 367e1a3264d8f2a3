"""The map's coordinates are computed once per model and gallery and read back from disk afterwards."""

from __future__ import annotations

import numpy as np
import pytest

from tvr_demo.diagnosis import embedding_map


def test_coordinates_are_cached_on_disk(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    text, video = rng.normal(size=(4, 8)), rng.normal(size=(3, 8))  # under 12 points: PCA, no umap import
    text_xy, video_xy = embedding_map.umap_coordinates(text, video, tmp_path)
    assert text_xy.shape == (4, 2) and video_xy.shape == (3, 2)
    assert len(list(tmp_path.glob("embedding_map-*.npz"))) == 1

    def fail(*_):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(embedding_map, "_project", fail)
    again = embedding_map.umap_coordinates(text, video, tmp_path)
    np.testing.assert_array_equal(again[0], text_xy)
    np.testing.assert_array_equal(again[1], video_xy)


def test_a_cache_for_other_shapes_is_not_reused(tmp_path):
    rng = np.random.default_rng(0)
    embedding_map.umap_coordinates(rng.normal(size=(4, 8)), rng.normal(size=(3, 8)), tmp_path)
    text_xy, video_xy = embedding_map.umap_coordinates(rng.normal(size=(5, 8)), rng.normal(size=(2, 8)), tmp_path)
    assert text_xy.shape == (5, 2) and video_xy.shape == (2, 2)


@pytest.mark.slow
def test_umap_separates_two_clusters(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 16)) + 5, rng.normal(size=(20, 16)) - 5
    text_xy, video_xy = embedding_map.umap_coordinates(a, b, tmp_path)
    gap = np.linalg.norm(text_xy.mean(0) - video_xy.mean(0))
    assert gap > 3 * max(text_xy.std(0).max(), video_xy.std(0).max())
