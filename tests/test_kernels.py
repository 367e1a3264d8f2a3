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
from tvr_demo.kernels.geometry import CONFIGS, KernelConfig, LaunchGeometry, launch_geometry

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


# Every compiled variant on fp32 inputs; per regime, fp16 inputs (the fp16 reference upcasts the same fp16 numbers, so
# only the kernel's fp32 sums differ from it) and a program count capped at 3 so that each program walks many tiles.
_INTERPRETER_CHECK = """
import json, torch
from test_kernels import random_case, reference
from tvr_demo.kernels.geometry import CONFIGS
from tvr_demo.kernels.wti_triton import wti_scores_triton
out = []
for a_n, b_n, dim, weighted in [(3, 37, 64, True), (1, 20, 40, False), (5, 9, 32, True), (6, 70, 24, True)]:
    case = random_case(a_n, b_n, dim=dim, weighted=weighted)
    half = [x.half() if x.is_floating_point() else x for x in case]
    runs = [(c, case, 2**31 - 1) for group in CONFIGS.values() for c in group]
    runs += [(group[0], inputs, n) for group in CONFIGS.values() for inputs, n in ((case, 3), (half, 2**31 - 1))]
    for config, inputs, programs in runs:
        got, want = wti_scores_triton(*inputs, config=config, max_programs=programs).double(), reference(*inputs)
        k = min(10, b_n)
        out.append([config.label, programs, str(inputs[0].dtype), float((got - want).abs().max()),
                    bool(torch.equal(got.topk(k, 1).indices, want.topk(k, 1).indices))])
print(json.dumps(out))
"""


def test_triton_kernel_under_the_interpreter() -> None:
    """The Triton kernel itself, run on CPU tensors by TRITON_INTERPRET=1 (set before triton is imported, hence
    a child process): every variant; fp16 inputs; 3 programs walking all the tiles; short and long queries split."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 4 * (4 + 2 * 2)
    for label, programs, dtype, max_diff, same_top10 in results:
        assert max_diff < 1e-5, (label, programs, dtype, max_diff)  # fp32 sums: about 1e-7 from float64
        assert same_top10, (label, programs, dtype)


@pytest.mark.parametrize("a_n,b_n", [(1, 10**7), (10**5, 10**5), (10**6, 10**7)])
@pytest.mark.parametrize("config", [c for group in CONFIGS.values() for c in group], ids=lambda c: c.label)
def test_launch_geometry_stays_within_cuda_limits(a_n: int, b_n: int, config: KernelConfig) -> None:
    """Any A x B: grid axis x at most 2**31 - 1, axes y and z 1 (CUDA allows 65,535 there, fewer than the
    156,250 blocks of 64 clips in 1e7), and the programs' tiles cover every (query, video) pair."""
    g = launch_geometry(a_n, b_n, config.block_a, config.block_b)
    x, y, z = g.grid
    assert 1 <= x <= 2**31 - 1 and y == z == 1
    assert (g.a_blocks - 1) * config.block_a < a_n <= g.a_blocks * config.block_a
    assert (g.b_blocks - 1) * config.block_b < b_n <= g.b_blocks * config.block_b
    assert g.programs * g.tiles_per_program >= g.tiles > (g.programs - 1) * g.tiles_per_program - g.programs
    if a_n * b_n > 10**12:  # more tiles than grid axis x holds: each program walks several
        assert x == 2**31 - 1 and g.tiles_per_program > 1


def test_launch_geometry_by_hand() -> None:
    """One query vs 1e7 clips in tiles of 64: 156,250 programs; 1e5 x 1e5 in tiles of 4 x 128: 25,000 x 782."""
    assert launch_geometry(1, 10**7, 1, 64) == LaunchGeometry(1, 156_250, 156_250)
    assert launch_geometry(10**5, 10**5, 4, 128) == LaunchGeometry(25_000, 782, 19_550_000)
    assert launch_geometry(10, 100, 4, 64, max_programs=4).tiles_per_program == 2  # 3 x 2 tiles on 4 programs


# ---------------------------------------------------------------- on a GPU (bench/gpu_check.sh runs these there)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def on_cuda(case) -> list[torch.Tensor]:
    return [x.cuda() for x in case]


def assert_same_on_device(got: torch.Tensor, case, atol: float) -> None:
    """got (on the GPU) against the float64 definition of the same inputs, computed on the CPU and moved to the GPU."""
    want = reference(*case).to(got.device)
    assert got.device == want.device and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=atol, rtol=0)
    k = min(10, want.shape[1])
    assert torch.equal(got.double().topk(k, dim=1).indices, want.topk(k, dim=1).indices)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", [c for group in CONFIGS.values() for c in group], ids=lambda c: c.label)
@pytest.mark.parametrize("a_n,b_n", [(1, 5000), (33, 1000)])
def test_triton_kernel_on_gpu(a_n: int, b_n: int, config: KernelConfig, dtype: torch.dtype) -> None:
    """Every variant in fp32 (tf32 products), fp16 and bf16, against the definition of the same (rounded) inputs:
    the products of fp16 / bf16 numbers are exact in fp32, so only the sums' order separates them (1e-4); tf32
    rounds each fp32 input to 10 bits, about 1e-5 on a cosine of unit vectors of width 512 (1e-3, the check's)."""
    pytest.importorskip("triton")
    from tvr_demo.kernels.wti_triton import wti_scores_triton

    case = [x.to(dtype) if x.is_floating_point() else x for x in on_cuda(random_case(a_n, b_n, dim=512))]
    got = wti_scores_triton(*case, config=config)
    assert got.dtype == torch.float32
    assert_same_on_device(got, case, atol=1e-3 if dtype == torch.float32 else 1e-4)


@pytest.mark.gpu
@needs_cuda
def test_triton_kernel_past_65535_video_blocks_and_2_31_elements() -> None:
    """One query against 65,537 blocks of 128 tiny clips (grid axis y would have refused it), and a gallery of
    more than 2**31 fp16 elements (32-bit offsets would wrap): the last clips score as the definition says."""
    pytest.importorskip("triton")
    from tvr_demo.kernels.wti_triton import wti_scores_triton

    for b_n, v_n, dim, dtype in ((65_537 * 128, 2, 16, torch.float32), (2**31 // 1024 + 5000, 1, 1024,
                                                                         torch.float16)):
        text, tmask, tw, _, _, _ = random_case(1, 1, t_n=4, v_n=v_n, dim=dim, seed=5)
        video = torch.nn.functional.normalize(torch.randn(b_n, v_n, dim, device="cuda"), dim=-1).to(dtype)
        vmask = torch.ones(b_n, v_n, dtype=torch.long, device="cuda")
        vw = torch.full((b_n, v_n), 1.0 / v_n, device="cuda")
        text, tmask, tw = text.cuda().to(dtype), tmask.cuda(), tw.cuda()
        got = wti_scores_triton(text, tmask, tw, video, vmask, vw, config=CONFIGS["query"][-1])
        tail = slice(b_n - 3000, b_n)
        want = reference(text, tmask, tw, video[tail], vmask[tail], vw[tail]).to(got.device)
        torch.testing.assert_close(got[:, tail].double(), want, atol=1e-4, rtol=0)
        del video
        torch.cuda.empty_cache()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("a_n,b_n", [(1, 5000), (70, 1000)])
def test_torch_path_on_gpu(a_n: int, b_n: int) -> None:
    """The torch path on CUDA tensors, at the block the device gives it and at a small one (many blocks)."""
    case = on_cuda(random_case(a_n, b_n, dim=512))
    assert_same_on_device(wti_scores_torch(*case), case, atol=1e-5)
    assert_same_on_device(wti_scores_torch(*case, block_floats=2**14), case, atol=1e-5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("a_n,b_n", [(1, 5000), (33, 1000)])
def test_what_serves_on_gpu_gives_the_definition(a_n: int, b_n: int) -> None:
    """wti_scores on CUDA, whichever path the race chose for this regime."""
    case = on_cuda(random_case(a_n, b_n, dim=512))
    assert_same_on_device(wti_scores(*case), case, atol=1e-3)


@pytest.mark.parametrize("config", [c for group in CONFIGS.values() for c in group], ids=lambda c: c.label)
def test_every_variant_compiles_for_hopper(config: KernelConfig) -> None:
    """Each variant compiled for sm_90a by Triton's compiler and ptxas, no GPU needed (the interpreter runs the
    kernel's arithmetic, not its compilation): fp32 features reach Hopper's wgmma tensor-core instruction."""
    pytest.importorskip("triton")
    report = pytest.importorskip("bench.kernel_report")
    r = report.compile_report(config, "fp32", 16)
    assert r["arch"] == "sm_90a" and r["matrix_instruction"] == "wgmma" and r["registers"] > 0
