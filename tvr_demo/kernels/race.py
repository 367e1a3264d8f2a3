"""Which fused scorer is faster on this GPU, measured when the process first scores there: each compiled variant of
the Triton kernel against the torch path (cuBLAS products and torch reductions at the device's block size) on one
shape per regime. Nobody can time every GPU the app may meet in advance, so the device itself decides."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tvr_demo.kernels.geometry import KernelConfig
from tvr_demo.kernels.wti_torch import wti_scores_torch
from tvr_demo.models import drl

Scorer = Callable[..., torch.Tensor]  # (text, text_mask, text_weights, video, video_mask, video_weights) -> (A, B)
TOKENS, FRAMES, DIM = 32, 12, 512  # CLIP ViT-B/32 features as DRL pads them: the bundled models' shapes


@dataclass(frozen=True)
class RaceShape:
    regime: str  # "query" or "batch" (geometry.regime)
    queries: int
    clips: int

    def __str__(self) -> str:
        return f"{self.queries} {'query' if self.queries == 1 else 'queries'} x {self.clips:,} clips"


# A typed search against a large gallery, and a block of captions against a gallery (the engine's score matrices).
RACE_SHAPES = (RaceShape("query", 1, 100_000), RaceShape("batch", 256, 10_000))


@dataclass(frozen=True)
class RaceResult:
    """One regime's race: the torch path's time and each kernel variant's (median ms after a warm-up call)."""

    shape: RaceShape
    torch_ms: float
    kernel_ms: dict[str, float]  # KernelConfig.label -> ms

    @property
    def best(self) -> tuple[str, float] | None:
        return min(self.kernel_ms.items(), key=lambda kv: kv[1]) if self.kernel_ms else None

    def as_dict(self) -> dict:
        return {"regime": self.shape.regime, "shape": str(self.shape), "torch_ms": round(self.torch_ms, 3),
                "kernel_ms": {k: round(v, 3) for k, v in self.kernel_ms.items()}}


def race_case(shape: RaceShape, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random unit features of the bundled models' shapes with caption-like masks (5-20 of 32 tokens valid) and
    clip-like ones (6-12 of 12 frames), made on the device."""
    g = torch.Generator(device=device).manual_seed(seed)

    def lengths(n: int, low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high + 1, (n,), generator=g, device=device)

    def mask(n: int, width: int, low: int, high: int) -> torch.Tensor:
        return (torch.arange(width, device=device)[None] < lengths(n, low, high)[:, None]).long()

    text = drl.l2_normalize(torch.randn(shape.queries, TOKENS, DIM, generator=g, device=device))
    video = drl.l2_normalize(torch.randn(shape.clips, FRAMES, DIM, generator=g, device=device))
    tmask, vmask = mask(shape.queries, TOKENS, 5, 20), mask(shape.clips, FRAMES, 6, FRAMES)
    tw = drl.interaction_weights(torch.randn(shape.queries, TOKENS, generator=g, device=device), tmask)
    vw = drl.interaction_weights(torch.randn(shape.clips, FRAMES, generator=g, device=device), vmask)
    return text, tmask, tw, video, vmask, vw


def fitting(shape: RaceShape, free_bytes: int) -> RaceShape:
    """The shape with its gallery cut to an eighth of the free device memory (a small GPU still races)."""
    per_clip = FRAMES * DIM * 4
    return RaceShape(shape.regime, shape.queries, max(1024, min(shape.clips, free_bytes // (8 * per_clip))))


def time_ms(fn: Callable[[], object], device: torch.device, reps: int = 10, budget_ms: float = 200.0) -> float:
    """Median of up to `reps` calls timed with CUDA events, after one untimed call (compilation, allocations)."""
    fn()
    torch.cuda.synchronize(device)
    times: list[float] = []
    while len(times) < reps and sum(times) < budget_ms:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def race_on_cuda(kernel: Scorer, configs: dict[str, Sequence[KernelConfig]], device: torch.device
                 ) -> list[RaceResult]:
    """Each regime's shape scored by every config of `kernel` and by the torch path."""
    free, _ = torch.cuda.mem_get_info(device)
    results = []
    for shape in RACE_SHAPES:
        if not configs.get(shape.regime):
            continue
        shape = fitting(shape, free)
        case = race_case(shape, device)
        torch_ms = time_ms(lambda case=case: wti_scores_torch(*case), device)
        kernel_ms = {c.label: time_ms(lambda c=c, case=case: kernel(*case, config=c), device)
                     for c in configs[shape.regime]}
        results.append(RaceResult(shape, torch_ms, kernel_ms))
        del case
        torch.cuda.empty_cache()
    return results


def winners(results: Sequence[RaceResult], configs: dict[str, Sequence[KernelConfig]]) -> dict[str, KernelConfig]:
    """Per regime, the fastest kernel variant where it beat the torch path (a regime missing here: torch serves)."""
    by_label = {c.label: c for group in configs.values() for c in group}
    out = {}
    for r in results:
        best = r.best
        if best is not None and best[1] < r.torch_ms:
            out[r.shape.regime] = by_label[best[0]]
    return out


def describe(results: Sequence[RaceResult], served: dict[str, KernelConfig]) -> str:
    """The race in words, for the app header, the bench JSON and the log."""
    parts = []
    for r in results:
        best = r.best
        kernel = f"Triton {best[1]:.3g} ms ({best[0]})" if best else "no Triton variant"
        winner = "Triton serves" if r.shape.regime in served else "torch serves"
        parts.append(f"{r.shape}: {kernel}, torch {r.torch_ms:.3g} ms, {winner}")
    return "; ".join(parts)
