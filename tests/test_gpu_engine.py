"""An Engine on CUDA against one on the CPU over a small gallery, through the public API (`tvr_demo.load`,
`engine.search_text`): the same rankings wherever the CPU's scores are further apart than the two devices can
disagree. The gallery is $TVR_DEMO_GPU_GALLERY (bench/gpu_check.sh run sets it to the rendered bundled test split),
else 24 generated clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import tvr_demo

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# CUDA encodes under fp16 autocast (scoring.encode_texts / encode_video_frames), the CPU in fp32. fp16 keeps 11
# significant bits, so each feature carries a relative error of a few 1e-4 after the tower's layers (the tiny model's
# fp16 features stay within 1e-2 of fp32, tests/test_kernel_selfcheck.py). A WTI score is a weighted mean of maxima of
# cosines of unit vectors, the weights summing to 1 on each side, so it moves by at most the largest cosine change
# plus the weights' change times the largest cosine: both under 5e-3, hence the bound 1e-2. Pairs of clips whose CPU
# scores differ by more than twice the bound cannot swap.
SCORE_BOUND = 1e-2
QUERIES = ["a red circle moves to the left", "two squares", "a person is cooking in a kitchen", "blue"]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    given = os.environ.get("TVR_DEMO_GPU_GALLERY")
    if given:
        return Path(given)
    pytest.importorskip("av", reason="PyAV renders the generated gallery (or set TVR_DEMO_GPU_GALLERY)")
    from tvr_demo.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("gpu_gallery")
    return generate(root / "bench", SyntheticConfig(n_train=0, n_val=0, n_test=24), progress=False, num_workers=0)


def _engine(gallery: Path, device: str, cache: Path, monkeypatch):
    monkeypatch.setenv("TVR_DEMO_CACHE", str(cache))  # one cache per device: the gallery key does not hold it
    return tvr_demo.load("drl-wti", dataset=gallery, device=device, progress=False)


def test_an_engine_on_cuda_ranks_as_one_on_the_cpu(gallery: Path, tmp_path: Path, monkeypatch) -> None:
    cpu = _engine(gallery, "cpu", tmp_path / "cpu", monkeypatch)
    cuda = _engine(gallery, "cuda", tmp_path / "cuda", monkeypatch)
    assert cuda.gallery.videos.frames.is_cuda and not cpu.gallery.videos.frames.is_cuda
    n = cpu.gallery_size
    queries = QUERIES + list(cpu.bench.captions[:8])  # typed queries and benchmark captions (the matrices' rows)
    for query in queries:
        want = {h.index: h.score for h in cpu.search_text(query, k=n, mode="exact").hits}
        got = {h.index: h.score for h in cuda.search_text(query, k=n, mode="exact").hits}
        cpu_scores = np.array([want[i] for i in range(n)])
        cuda_scores = np.array([got[i] for i in range(n)])
        assert np.abs(cuda_scores - cpu_scores).max() <= SCORE_BOUND, query
        apart = cpu_scores[:, None] - cpu_scores[None, :] > 2 * SCORE_BOUND  # pairs (i above j) that cannot swap
        assert (cuda_scores[:, None] > cuda_scores[None, :])[apart].all(), query
