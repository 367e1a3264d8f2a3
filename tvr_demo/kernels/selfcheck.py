"""Which WTI path serves on a CUDA device: the Triton kernel once it compiles, launches and matches the torch path on a
small hard input, else the torch path, decided on the first CUDA use and remembered for the process.

A Triton release, driver or GPU the kernel was never tried on must cost speed, never a crash or a wrong ranking.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tvr_demo.kernels.wti_torch import wti_scores_torch
from tvr_demo.models import drl

log = logging.getLogger(__name__)

TOLERANCE = 1e-3  # the bound both fast paths are held to against drl.wti_similarity (tests/test_kernels.py)
Scorer = Callable[..., torch.Tensor]  # (text, text_mask, text_weights, video, video_mask, video_weights) -> (A, B)


@dataclass(frozen=True)
class ScoringPath:
    """The path that scores token-wise interactions on a device, and why (shown by the bench JSON and the app)."""

    name: str  # "triton" or "torch"
    reason: str

def check_cases(device: torch.device, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Two small inputs that reach every masked branch of the kernel, as (text, tmask, tweights, video, vmask,
    vweights) on `device`:
    - six queries of 3-20 tokens out of 32 (the kernel takes four per block): positions 6-19 are padding in every
      query of the first block but valid in the second, positions 20-31 are padding in all six (dropped before the
      product, so the max over tokens is clamped at 0); the third query also has a hole at position 1;
    - 20 clips of 1-12 frames out of 12 (three blocks of eight, the last partial), every third pointing away from
      the queries, so each valid cosine of those pairs is negative and a padded position's 0 wins the maxima; width
      512 (CLIP ViT-B);
    - one typed one-word query (SOT, word, EOT: 3 valid tokens) against the same kind of clips, width 96 (not a
      multiple of the kernel's 64-wide steps over D).
    """
    g = torch.Generator().manual_seed(seed)

    def case(t_len: list[int], n_videos: int, dim: int) -> tuple[torch.Tensor, ...]:
        a_n, t_n, v_n = len(t_len), 32, 12
        common = drl.l2_normalize(torch.randn(dim, generator=g))  # every token leans towards it (cosine ~0.7)
        text = drl.l2_normalize(torch.randn(a_n, t_n, dim, generator=g) / dim**0.5 + common)
        tmask = (torch.arange(t_n)[None] < torch.tensor(t_len)[:, None]).long()
        if a_n > 2:
            tmask[2, 1] = 0  # a hole inside a query
        video = torch.randn(n_videos, v_n, dim, generator=g) / dim**0.5
        away = torch.arange(n_videos) % 3 == 0  # these clips point away: every valid cosine is about -0.7
        video[away] = 0.3 * video[away] - common
        video = drl.l2_normalize(video)
        v_len = torch.randint(1, v_n + 1, (n_videos,), generator=g)
        v_len[:2] = torch.tensor([v_n, 1])
        vmask = (torch.arange(v_n)[None] < v_len[:, None]).long()
        tw = drl.interaction_weights(torch.randn(a_n, t_n, generator=g), tmask)
        vw = drl.interaction_weights(torch.randn(n_videos, v_n, generator=g), vmask)
        return text, tmask, tw, video, vmask, vw

    return [tuple(x.to(device) for x in c) for c in (case([3, 5, 6, 4, 20, 11], 20, 512), case([3], 20, 96))]


def _failure(err: BaseException) -> str:
    """A compile error or a launch error, in words (the type name only: messages can carry server paths)."""
    try:
        from triton.compiler.errors import CompilationError
        from triton.runtime.errors import PTXASError

        compile_errors: tuple[type[BaseException], ...] = (CompilationError, PTXASError)
    except ImportError:
        compile_errors = ()
    stage = "compile" if isinstance(err, compile_errors) else "launch"
    return f"the Triton kernel failed to {stage}: {type(err).__name__}"


def _first_line(err: BaseException) -> str:
    """For the server log only."""
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"


def run_check(kernel: Scorer, device: torch.device, reference: Scorer = wti_scores_torch) -> tuple[ScoringPath, str]:
    """Score `check_cases` with `kernel` and `reference`; the verdict, and a detail line for the log."""
    worst = 0.0
    for case in check_cases(device):
        try:
            got = kernel(*case)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # an asynchronous launch failure surfaces here, inside the check
        except Exception as err:  # whatever the compiler or the driver raises, the torch path serves
            return ScoringPath("torch", _failure(err)), _first_line(err)
        want = reference(*case)
        diff = float((got.float() - want.float()).abs().max()) if got.shape == want.shape else float("inf")
        if not diff <= TOLERANCE:  # NaN fails too
            reason = (f"the Triton kernel differs from the torch path by {diff:.2g}, over the {TOLERANCE:g} allowed"
                      if got.shape == want.shape else
                      f"the Triton kernel returned shape {tuple(got.shape)}, not {tuple(want.shape)}")
            return ScoringPath("torch", reason), f"Seen on the check's {case[0].shape[0]} queries x {case[3].shape[0]} clips."
        worst = max(worst, diff)
    return ScoringPath("triton", f"self-check passed, max difference {worst:.1e}"), ""


def _load_triton() -> Scorer:
    from tvr_demo.kernels.wti_triton import wti_scores_triton

    return wti_scores_triton


class KernelGate:
    """Decides once per device whether the kernel serves; a failed check logs one warning and the torch path serves
    from then on."""

    def __init__(self, load_kernel: Callable[[], Scorer] = _load_triton) -> None:
        self.load_kernel = load_kernel
        self._decided: dict[str, ScoringPath] = {}
        self._lock = threading.Lock()  # concurrent first searches run the check once

    def path(self, device: torch.device) -> ScoringPath:
        key = str(device)
        with self._lock:
            if key not in self._decided:
                self._decided[key] = self._decide(device)
            return self._decided[key]

    def give_up(self, device: torch.device, err: Exception) -> None:
        """The kernel raised on a real input after passing the check (a shape it was not compiled for)."""
        verdict = ScoringPath("torch", _failure(err) + " on a real input")
        with self._lock:
            self._decided[str(device)] = verdict
        _warn(device, verdict, _first_line(err))

    def _decide(self, device: torch.device) -> ScoringPath:
        try:
            kernel = self.load_kernel()
        except ImportError as err:
            verdict, detail = ScoringPath("torch", "triton is not installed"), _first_line(err)
        except Exception as err:  # a triton release the kernel's module does not import under
            verdict, detail = ScoringPath("torch", f"the Triton kernel failed to load: {type(err).__name__}"), \
                _first_line(err)
        else:
            verdict, detail = run_check(kernel, device)
        if verdict.name != "triton":
            _warn(device, verdict, detail)
        return verdict


def _warn(device: torch.device, verdict: ScoringPath, detail: str) -> None:
    log.warning("Token-wise scoring on %s uses the torch path from now on: %s. %s", device, verdict.reason, detail)


GATE = KernelGate()


def _cuda(device: torch.device) -> torch.device:
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def serving_path(device: torch.device | str) -> ScoringPath:
    """The path the fused scorer takes for tensors on `device` (the Triton kernel is checked on the first call)."""
    device = torch.device(device)
    if device.type != "cuda":
        return ScoringPath("torch", "no CUDA device" if not torch.cuda.is_available() else f"{device.type} tensors")
    return GATE.path(_cuda(device))


def kernel_failed(device: torch.device, err: Exception) -> None:
    """Called by the scorer when the kernel raised on a real input: the torch path serves `device` from now on."""
    GATE.give_up(_cuda(device), err)
