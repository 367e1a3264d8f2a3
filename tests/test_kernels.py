"""The fused WTI / TI scorers (tvr_demo/kernels) against the definition in float64 numpy, written in the test
(tests/reference.np_wti, from the official DRL code's formula), never against another of the project's scorers.

Tolerance 1e-3 (the issue's bound; fp32 paths agree to ~1e-6) and identical top-10 rankings, with masked tokens
and frames, negative cosines (where a masked entry's 0 wins the max) and blocks that end mid-way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reference import np_softmax_weights, np_uniform_weights, np_wti

from tvr_demo.kernels import wti_scores, wti_scores_torch

ROOT = Path(__file__).resolve().parent.parent


def random_case(a_n: int, b_n: int, t_n: int = 32, v_n: int = 12, dim: int = 64, seed: int = 0,
                weighted: bool = True) -> tuple[torch.Tensor, ...]:
    """Normalised features; prefix masks of every length (a query with all 32 tokens, a clip with 1 frame) plus a
    few non-prefix masks; WTI softmax weights or TI uniform weights."""
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(a_n, t_n, dim, generator=g), dim=-1)
    video = torch.nn.functional.normalize(torch.randn(b_n, v_n, dim, generator=g), dim=-1)
    t_len = torch.randint(2, t_n + 1, (a_n,), generator=g)
    t_len[0] = t_n
    v_len = torch.randint(1, v_n + 1, (b_n,), generator=g)
    v_len[0], v_len[-1] = v_n, 1
    tmask = (torch.arange(t_n)[None] < t_len[:, None]).long()
    vmask = (torch.arange(v_n)[None] < v_len[:, None]).long()
    if a_n > 2:
        tmask[1, 1] = 0  # a hole in the middle
    if b_n > 2:
        vmask[1, 0] = 0
    if weighted:
        tw = np_softmax_weights(torch.randn(a_n, t_n, generator=g), tmask)
        vw = np_softmax_weights(torch.randn(b_n, v_n, generator=g), vmask)
    else:
        tw, vw = np_uniform_weights(tmask), np_uniform_weights(vmask)
    return text, tmask, torch.tensor(tw, dtype=torch.float32), video, vmask, torch.tensor(vw, dtype=torch.float32)


def reference(*case: torch.Tensor) -> torch.Tensor:
    """The definition's S in float64, from the same inputs."""
    return torch.from_numpy(np_wti(*(x.detach().cpu().double().numpy() for x in case)))


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    torch.testing.assert_close(got.float(), want.float(), atol=1e-3, rtol=0)
    k = min(10, want.shape[1])
    assert torch.equal(got.topk(k, dim=1).indices, want.topk(k, dim=1).indices)


@pytest.mark.parametrize("weighted", [True, False], ids=["wti", "ti"])
@pytest.mark.parametrize("a_n,b_n", [(1, 300), (5, 64), (70, 40)])
def test_torch_path_equals_the_definition(weighted: bool, a_n: int, b_n: int) -> None:
    case = random_case(a_n, b_n, weighted=weighted)
    want = reference(*case)
    assert_same(wti_scores_torch(*case), want)
    assert_same(wti_scores_torch(*case, block_floats=500), want)  # many blocks, the last one partial
    assert torch.allclose(wti_scores_torch(*case).double(), want, atol=1e-5)


def test_masked_zero_wins_the_max_as_in_the_official_code() -> None:
    """Every valid cosine negative: a clip with a padded frame scores max_v s = 0 there, a full clip does not."""
    text, tmask, tw, video, vmask, vw = random_case(3, 6, dim=16, seed=1)
    video = -text[0, :1].expand(6, 12, -1).clone() + 0.01 * torch.randn(6, 12, 16)
    video = torch.nn.functional.normalize(video, dim=-1)
    want = reference(text, tmask, tw, video, vmask, vw)
    assert_same(wti_scores_torch(text, tmask, tw, video, vmask, vw), want)
    assert_same(wti_scores(text, tmask, tw, video, vmask, vw), want)


def test_a_block_whose_widest_query_has_16_tokens_keeps_the_masked_zero() -> None:
    """16 valid tokens is already a multiple of 16, so no padded column is kept for the product: the padded tokens'
    s = 0 must still take part in every frame's max over tokens. With every cosine negative, v2t is then 0."""
    g = torch.Generator().manual_seed(3)
    u = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    text = torch.nn.functional.normalize(u + 0.05 * torch.randn(2, 32, 16, generator=g), dim=-1)
    video = torch.nn.functional.normalize(-u + 0.05 * torch.randn(5, 12, 16, generator=g), dim=-1)
    tmask = torch.zeros(2, 32, dtype=torch.long)
    tmask[0, :16], tmask[1, :9] = 1, 1
    vmask = torch.ones(5, 12, dtype=torch.long)
    tw = torch.tensor(np_uniform_weights(tmask), dtype=torch.float32)
    vw = torch.tensor(np_uniform_weights(vmask), dtype=torch.float32)
    assert_same(wti_scores_torch(text, tmask, tw, video, vmask, vw), reference(text, tmask, tw, video, vmask, vw))


def test_short_queries_drop_masked_positions_exactly() -> None:
    """A 3-token query (29 positions dropped before the product) against 12-frame clips."""
    text, tmask, tw, video, vmask, vw = random_case(1, 50, seed=2)
    tmask[:] = 0
    tmask[0, :3] = 1
    tw = torch.tensor(np_softmax_weights(torch.randn(1, 32), tmask), dtype=torch.float32)
    assert_same(wti_scores_torch(text, tmask, tw, video, vmask, vw), reference(text, tmask, tw, video, vmask, vw))


def test_dispatch_on_cpu_gives_the_definition() -> None:
    """What the engine calls (wti_scores) on CPU tensors scores as the definition does."""
    case = random_case(4, 30)
    assert_same(wti_scores(*case), reference(*case))


_INTERPRETER_CHECK = """
import json, torch
from test_kernels import random_case, reference
from tvr_demo.kernels.wti_triton import wti_scores_triton
out = []
for a_n, b_n, dim, weighted in [(3, 37, 64, True), (1, 20, 40, False), (5, 9, 32, True)]:
    case = random_case(a_n, b_n, dim=dim, weighted=weighted)
    got, want = wti_scores_triton(*case).double(), reference(*case)
    k = min(10, b_n)
    out.append([float((got - want).abs().max()),
                bool(torch.equal(got.topk(k, 1).indices, want.topk(k, 1).indices))])
print(json.dumps(out))
"""


def test_triton_kernel_under_the_interpreter() -> None:
    """The Triton kernel itself, run on CPU tensors by TRITON_INTERPRET=1 (set before triton is imported, hence
    a child process)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for max_diff, same_top10 in json.loads(done.stdout.strip().splitlines()[-1]):
        assert max_diff < 1e-3
        assert same_top10


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("a_n,b_n", [(1, 5000), (33, 1000)])
def test_triton_kernel_on_gpu(a_n: int, b_n: int) -> None:
    pytest.importorskip("triton")
    case = [x.cuda() for x in random_case(a_n, b_n, dim=512)]
    want = reference(*case)
    assert_same(wti_scores(*case), want)
    half = [x.half() if x.is_floating_point() else x for x in case]
    torch.testing.assert_close(wti_scores(*half).float(), want.float(), atol=5e-3, rtol=0)  # fp16 inputs, fp32 sums
