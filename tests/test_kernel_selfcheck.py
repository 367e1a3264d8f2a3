"""The Triton kernel's self-check and race (tvr_demo/kernels/selfcheck.py, race.py): a kernel that fails to compile,
to launch or to match falls back to the torch path with one warning, for good; the check's input catches the masking
bugs it is there for; the faster path serves each regime; and a --device this machine lacks is a one-line error.

References are written here from the official DRL code's WTI formula, never taken from the scorers under test.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tvr_demo.kernels.geometry import CONFIGS, KernelConfig
from tvr_demo.kernels.race import RaceResult, RaceShape
from tvr_demo.kernels.selfcheck import TOLERANCE, KernelGate, check_cases, run_check

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
VARIANTS = sum(len(c) for c in CONFIGS.values())  # the kernel variants the check compiles and tries


def wti_by_loop(text, tmask, tw, video, vmask, vw, token_pad: float = 0.0, frame_pad: float = 0.0) -> torch.Tensor:
    """drl.md, pair by pair: s[t, v] = <t_at, v_bv> * tmask[a, t] * vmask[b, v] (masked entries are 0, not -inf);
    t2v = sum_t w_t max_v s; v2t = sum_v w_v max_t s; S = (t2v + v2t) / 2. token_pad / frame_pad replace the 0 of a
    padded token / frame (-inf plants the bugs the check exists to catch)."""
    out = torch.zeros(text.shape[0], video.shape[0], dtype=torch.float64)
    for a in range(text.shape[0]):
        for b in range(video.shape[0]):
            s = (text[a].double() @ video[b].double().T) * tmask[a, :, None] * vmask[b, None, :]  # (T, V)
            if token_pad:
                s[~tmask[a].bool()] = token_pad
            if frame_pad:
                s[:, ~vmask[b].bool()] = frame_pad
            t2v = torch.where(tw[a] > 0, tw[a] * s.amax(1), 0.0).sum()  # a padded token's weight is 0
            v2t = torch.where(vw[b] > 0, vw[b] * s.amax(0), 0.0).sum()
            out[a, b] = (t2v + v2t) / 2
    return out.float()


class Counting:
    """A stand-in kernel: counts its calls, then raises or answers as told (answer may take the variant)."""

    def __init__(self, answer, takes_config: bool = False) -> None:
        self.answer, self.takes_config, self.calls = answer, takes_config, 0

    def __call__(self, *case, config: KernelConfig | None = None):
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(*case, config=config) if self.takes_config else self.answer(*case)


def gate_for(kernel, race=None) -> KernelGate:
    return KernelGate(lambda: kernel, race=race)


def _decided_twice(gate: KernelGate, caplog) -> tuple:
    """The gate's verdict on two calls, and the warnings logged meanwhile."""
    with caplog.at_level(logging.WARNING, logger="tvr_demo.kernels.selfcheck"):
        first, second = gate.path(CPU), gate.path(CPU)
    return first, second, [r for r in caplog.records if r.levelno == logging.WARNING]


def test_the_check_input_has_the_positions_it_promises() -> None:
    """Padding in every query of the kernel's first block of four (valid in a later query), padding in all queries,
    padded frames, all-negative pairs, and a one-word query (SOT, word, EOT)."""
    (text, tmask, _, video, vmask, _), (word, word_mask, _, _, _, _) = check_cases(CPU)
    first_block, rest = tmask[:4].bool(), tmask[4:].bool()
    assert (~first_block.any(0) & rest.any(0)).sum() >= 8
    assert (~tmask.bool().any(0)).sum() >= 8
    assert (vmask == 0).any(1).sum() >= 5 and (vmask == 1).all(1).any()
    cos = torch.einsum("atd,bvd->abtv", text, video)
    valid = tmask[:, None, :, None].bool() & vmask[None, :, None, :].bool()
    negative_pairs = [(a, b) for a in range(6) for b in range(20) if (cos[a, b][valid[a, b]] < 0).all()]
    assert len(negative_pairs) >= 6 * 5
    assert word.shape[0] == 1 and word_mask.sum() == 3


def test_a_kernel_written_from_the_formula_passes_without_a_warning(caplog) -> None:
    kernel = Counting(wti_by_loop)
    first, second, warnings = _decided_twice(gate_for(kernel), caplog)
    assert first.name == second.name == "triton" and "self-check passed" in first.reason
    assert kernel.calls == 2 * VARIANTS and not warnings  # the two check inputs, once per variant
    assert first.config_for(1) == CONFIGS["query"][0] and first.config_for(64) == CONFIGS["batch"][0]


@pytest.mark.parametrize("bug,what", [(dict(token_pad=float("-inf")), "padded tokens left out of the max"),
                                      (dict(frame_pad=float("-inf")), "padded frames left out of the max")])
def test_the_check_rejects_a_kernel_with_a_masking_bug(bug: dict, what: str) -> None:
    """The two mistakes a masked max invites: the check's input must tell them from the formula."""
    check = run_check(lambda *c: wti_by_loop(*c, **bug), CPU)
    assert check.failure is not None, what
    assert "differs from the torch path" in check.failure


@pytest.mark.parametrize("stage", ["compile", "launch"])
def test_a_compile_or_launch_error_falls_back_once_and_for_good(caplog, stage: str) -> None:
    """Triton's own compile error, and the RuntimeError a failed launch raises."""
    errors = pytest.importorskip("triton.compiler.errors")
    error = (errors.CompilationError(None, ast.Name(), "bad block shape") if stage == "compile" else
             RuntimeError("Triton Error [CUDA]: an illegal instruction was encountered"))
    kernel = Counting(error)
    first, second, warnings = _decided_twice(gate_for(kernel), caplog)
    assert first == second and first.name == "torch"
    assert first.reason == f"the Triton kernel failed to {stage}: {type(error).__name__}"
    assert kernel.calls == VARIANTS and len(warnings) == 1  # each variant tried once; remembered, not re-logged
    assert "uses the torch path from now on" in warnings[0].getMessage()


@pytest.mark.parametrize("offset,path", [(1.5 * TOLERANCE, "torch"), (0.5 * TOLERANCE, "triton"),
                                         (float("nan"), "torch")])
def test_a_difference_above_the_tolerance_falls_back(caplog, offset: float, path: str) -> None:
    """One score off by 1.5e-3 is a mismatch, 0.5e-3 is not; a NaN always is."""
    def off(*case):
        out = wti_by_loop(*case)
        out[0, -1] += offset
        return out

    kernel = Counting(off)
    first, second, warnings = _decided_twice(gate_for(kernel), caplog)
    assert first.name == second.name == path
    assert len(warnings) == (path == "torch")
    if path == "torch" and offset == offset:
        assert first.reason == "the Triton kernel differs from the torch path by 0.0015, over the 0.001 allowed"


def test_missing_triton_falls_back_with_the_reason(caplog) -> None:
    def load():
        raise ModuleNotFoundError("No module named 'triton'")

    first, second, warnings = _decided_twice(KernelGate(load), caplog)
    assert first == second and (first.name, first.reason) == ("torch", "triton is not installed")
    assert len(warnings) == 1


def test_a_kernel_that_fails_later_on_a_real_input_is_dropped(caplog) -> None:
    gate = gate_for(Counting(wti_by_loop))
    assert gate.path(CPU).name == "triton"
    with caplog.at_level(logging.WARNING, logger="tvr_demo.kernels.selfcheck"):
        gate.give_up(CPU, RuntimeError("out of shared memory"))
    assert gate.path(CPU).name == "torch" and "on a real input" in gate.path(CPU).reason
    assert len(caplog.records) == 1


def told_race(times: dict[str, tuple[float, list[float]]], seen: list | None = None):
    """A stand-in for the race on CUDA: per regime, the torch path's ms and each variant's ms in CONFIGS order."""
    def race(kernel, configs, device):
        if seen is not None:
            seen.append({name: list(group) for name, group in configs.items()})
        return [RaceResult(RaceShape(name, 1 if name == "query" else 256, 10_000), times[name][0],
                           {c.label: times[name][1][CONFIGS[name].index(c)] for c in group})
                for name, group in configs.items()]

    return race


@pytest.mark.parametrize("times,name,query,batch", [
    ({"query": (3.0, [2.0, 2.5]), "batch": (4.0, [5.0, 4.5])}, "triton+torch", 0, None),
    ({"query": (3.0, [2.0, 2.5]), "batch": (4.0, [5.0, 3.5])}, "triton", 0, 1),
    ({"query": (1.0, [2.0, 2.5]), "batch": (4.0, [5.0, 4.5])}, "torch", None, None),
], ids=["kernel-wins-queries", "kernel-wins-both", "torch-wins-both"])
def test_the_faster_path_serves_each_regime(times, name: str, query: int | None, batch: int | None) -> None:
    """The fastest variant serves a regime where it beats the torch path; the reason carries both timings."""
    path = gate_for(Counting(wti_by_loop), race=told_race(times)).path(CPU)
    assert path.name == name
    assert path.config_for(1) == (None if query is None else CONFIGS["query"][query])
    assert path.config_for(256) == (None if batch is None else CONFIGS["batch"][batch])
    for regime, served in (("query", query), ("batch", batch)):
        torch_ms, kernel_ms = times[regime]
        assert (f"Triton {min(kernel_ms):g} ms ({CONFIGS[regime][kernel_ms.index(min(kernel_ms))].label}), "
                f"torch {torch_ms:g} ms, {'torch' if served is None else 'Triton'} serves") in path.reason
    assert [r.torch_ms for r in path.race] == [times["query"][0], times["batch"][0]]


def test_variants_that_fail_the_check_do_not_race(caplog) -> None:
    """A variant that mis-scores (here every 128-video tile) is left out of the race, with one warning; the others
    serve."""
    def wrong_at_128(*case, config):
        out = wti_by_loop(*case)
        return out + 0.1 if config.block_b == 128 else out

    seen: list = []
    race = told_race({"query": (3.0, [2.0, 1.0]), "batch": (4.0, [3.0, 1.0])}, seen)
    with caplog.at_level(logging.WARNING, logger="tvr_demo.kernels.selfcheck"):
        path = gate_for(Counting(wrong_at_128, takes_config=True), race=race).path(CPU)
    assert [c.block_b for group in seen[0].values() for c in group] == [64, 64]
    assert path.name == "triton" and path.config_for(1).block_b == 64 and path.config_for(256).block_b == 64
    assert "2 variants failed it" in path.reason and len(caplog.records) == 1


def test_a_race_that_breaks_falls_back_to_torch(caplog) -> None:
    def race(kernel, configs, device):
        raise RuntimeError("Triton Error [CUDA]: invalid argument")

    first, second, warnings = _decided_twice(gate_for(Counting(wti_by_loop), race=race), caplog)
    assert first == second and first.name == "torch" and "in the race" in first.reason
    assert len(warnings) == 1


_INTERPRETED = """
import json, torch
from tests.test_kernel_selfcheck import wti_by_loop
from tvr_demo.kernels.selfcheck import check_cases
from tvr_demo.kernels.wti_triton import wti_scores_triton
cpu = torch.device("cpu")
print(json.dumps([float((wti_scores_triton(*case) - wti_by_loop(*case)).abs().max()) for case in check_cases(cpu)]))
"""


def test_the_kernel_matches_the_formula_on_the_check_input_under_the_interpreter() -> None:
    """The Triton kernel itself on the check's input (TRITON_INTERPRET=1 must be set before triton is imported,
    hence a child process), against the loop: padded positions in every query of a block, the one-word query."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    diffs = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(diffs) == 2 and max(diffs) < 1e-5  # fp32 sums: ~1e-7 apart, far inside the check's 1e-3


# ---------------------------------------------------------------- --device cuda on a machine without CUDA

NO_CUDA = "error: --device cuda: no CUDA device is available to PyTorch on this machine"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cli_device_cuda_without_cuda_is_one_line() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "tvr_demo", "evaluate", "--checkpoint", "drl-wti", "--device",
                           "cuda"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(NO_CUDA) and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


@pytest.mark.parametrize("argv", [
    ["score", "--checkpoint", "drl-wti", "--captions", "c.txt", "--videos", "v", "--out", "o.npy"],
    ["encode", "--checkpoint", "drl-wti"],
    ["evaluate", "--checkpoint", "drl-wti"],
    ["train", "--config", "drl-wti", "--out", "run"],
], ids=["score", "encode", "evaluate", "train"])
def test_every_cli_command_rejects_a_missing_cuda_before_loading(no_cuda, capsys, argv) -> None:
    """Before anything loads: the files named here do not exist, yet the device is what is reported."""
    from tvr_demo.cli import main

    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(NO_CUDA) and len(err.splitlines()) == 1


@pytest.mark.parametrize("device,message", [("gpu", "error: --device gpu is not a torch device"),
                                            ("cuda:7", NO_CUDA.replace("--device cuda", "--device cuda:7"))])
def test_cli_rejects_an_unknown_device_name(no_cuda, capsys, device: str, message: str) -> None:
    from tvr_demo.cli import main

    assert main(["evaluate", "--checkpoint", "drl-wti", "--device", device]) == 2
    assert capsys.readouterr().err.strip().startswith(message)


def test_app_device_cuda_without_cuda_is_one_line(no_cuda, capsys) -> None:
    import app

    assert app.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(NO_CUDA) and len(err.splitlines()) == 1


# ---------------------------------------------------------------- on a GPU (scripts/test.sh runs these there)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_triton_is_installed_where_cuda_is() -> None:
    """Fails (not skips) a CUDA machine without triton: the GPU run would otherwise silently test the torch path."""
    import triton  # noqa: F401


@pytest.mark.gpu
@needs_cuda
def test_every_variant_passes_and_races_on_this_gpu() -> None:
    """Every variant compiles and matches here; the race timed each against the torch path in both regimes, and
    each regime is served by the faster (the timings are in the reason the app and the bench show)."""
    from tvr_demo.kernels import serving_path

    path = serving_path("cuda")
    assert "self-check passed" in path.reason and "failed it" not in path.reason, path.reason
    assert [r.shape.regime for r in path.race] == list(CONFIGS)
    for result, (regime_name, configs) in zip(path.race, CONFIGS.items(), strict=True):
        assert set(result.kernel_ms) == {c.label for c in configs} and result.torch_ms > 0
        label, best_ms = min(result.kernel_ms.items(), key=lambda kv: kv[1])
        served = path.kernel.get(regime_name)
        assert (served.label if served else None) == (label if best_ms < result.torch_ms else None), path.reason
        assert f"torch {result.torch_ms:.3g} ms" in path.reason


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("stage", ["launch", "mismatch"])
def test_a_failing_kernel_falls_back_to_torch_on_this_gpu(caplog, stage: str) -> None:
    """The check on CUDA tensors (the reference: the torch path on the GPU): a kernel that raises, or one whose
    padded tokens leave the max, leaves the torch path serving with one warning; so does a later failure."""
    def broken(*case, config=None):
        if stage == "launch":
            raise RuntimeError("Triton Error [CUDA]: invalid argument")
        return wti_by_loop(*(x.cpu() for x in case), token_pad=float("-inf")).to(case[0].device)

    gpu = torch.device("cuda", torch.cuda.current_device())
    with caplog.at_level(logging.WARNING, logger="tvr_demo.kernels.selfcheck"):
        path = KernelGate(lambda: broken).path(gpu)
    assert path.name == "torch" and not path.kernel and len(caplog.records) == 1
    assert ("failed to launch" if stage == "launch" else "differs from the torch path") in path.reason
    right = Counting(lambda *c: wti_by_loop(*(x.cpu() for x in c)).to(gpu))
    gate = gate_for(right, race=told_race({"query": (9.0, [1.0, 2.0]), "batch": (9.0, [1.0, 2.0])}))
    assert gate.path(gpu).name == "triton"
    gate.give_up(gpu, RuntimeError("Triton Error [CUDA]: invalid argument"))
    assert gate.path(gpu).name == "torch" and "on a real input" in gate.path(gpu).reason


@pytest.mark.gpu
@needs_cuda
def test_gpu_encoding_runs_fp16_autocast_and_keeps_fp32_features() -> None:
    """The same random tiny model on CUDA (fp16 autocast) and on the CPU (fp32): float32 banks, cosines within 1e-2."""
    from tvr_demo.models import ModelConfig, TVRModel
    from tvr_demo.models.backbone import clip_config
    from tvr_demo.retrieval.scoring import encode_texts, encode_video_frames

    torch.manual_seed(0)
    model = TVRModel(ModelConfig(clip=clip_config("tvr-tiny"), interaction="wti")).eval()
    size = model.config.image_size
    frames = torch.randint(0, 256, (3, model.config.max_frames, 3, size, size), dtype=torch.uint8)
    masks = torch.ones(3, model.config.max_frames, dtype=torch.int64)
    masks[1, 5:] = 0
    captions = ["a red circle moves left", "dog"]
    cpu_v, cpu_t = encode_video_frames(model, frames, masks), encode_texts(model, captions)
    model.cuda()
    gpu_v, gpu_t = encode_video_frames(model, frames, masks), encode_texts(model, captions)
    for got, want in ((gpu_v.frames, cpu_v.frames), (gpu_v.weights, cpu_v.weights), (gpu_t.tokens, cpu_t.tokens)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.cpu(), want, atol=1e-2, rtol=0)
