"""Which WTI path serves on a CUDA device, decided on the first CUDA use and remembered for the process: each compiled
variant of the Triton kernel must compile, launch and match the torch path on a small hard input (which compiles
every variant, so no request pays for a JIT); the variants that pass then race the torch path (race.py), and per
regime (a search's few queries, a score matrix's many) the faster one serves.

A Triton release, driver or GPU the kernel was never tried on must cost speed, never a crash or a wrong ranking.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from tvr_demo.kernels.geometry import CONFIGS, KernelConfig, regime
from tvr_demo.kernels.race import RaceResult, describe, race_on_cuda, winners
from tvr_demo.kernels.wti_torch import wti_scores_torch
from tvr_demo.models import drl

log = logging.getLogger(__name__)

TOLERANCE = 1e-3  # the bound both fast paths are held to against drl.wti_similarity (tests/test_kernels.py)
Scorer = Callable[..., torch.Tensor]  # (text, text_mask, text_weights, video, video_mask, video_weights) -> (A, B)
Race = Callable[[Scorer, dict[str, Sequence[KernelConfig]], torch.device], list[RaceResult]]


@dataclass(frozen=True)
class ScoringPath:
    """The path that scores token-wise interactions on a device, and why (shown by the bench JSON and the app)."""

    name: str  # "triton" (every regime), "torch" (none), or "triton+torch" (the kernel serves one regime)
    reason: str
    kernel: dict[str, KernelConfig] = field(default_factory=dict)  # regime -> the variant that serves it
    race: tuple[RaceResult, ...] = ()  # the timings behind the choice (CUDA only)

    def config_for(self, a_n: int) -> KernelConfig | None:
        """The kernel variant that scores a launch of `a_n` queries, or None for the torch path."""
        return self.kernel.get(regime(a_n))

    def as_dict(self) -> dict:
        return {"path": self.name, "reason": self.reason,
                "kernel": {r: c.label for r, c in self.kernel.items()}, "race": [r.as_dict() for r in self.race]}


def _path(kernel: dict[str, KernelConfig], reason: str, race: Sequence[RaceResult] = ()) -> ScoringPath:
    name = "torch" if not kernel else "triton" if set(kernel) == set(CONFIGS) else "triton+torch"
    return ScoringPath(name, reason, dict(kernel), tuple(race))


def check_cases(device: torch.device, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Two small inputs that reach every masked branch of the kernel, as (text, tmask, tweights, video, vmask,
    vweights) on `device`:
    - six queries of 3-20 tokens out of 32 (a batch variant takes four per tile; the 20-token one launches apart
      from the five within 16 positions): positions 6-19 are padding in every query of the first four but valid in
      the others, positions 20-31 are padding in all six (dropped before the product, so the max over tokens is
      clamped at 0); the third query also has a hole at position 1;
    - 20 clips of 1-12 frames out of 12 (one partial tile of videos), every third pointing away from
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


@dataclass(frozen=True)
class Check:
    """One scorer's self-check: why it may not serve (None: it passed), a detail for the log, the worst difference."""

    failure: str | None
    detail: str = ""
    worst: float = 0.0


def run_check(kernel: Scorer, device: torch.device, reference: Scorer = wti_scores_torch) -> Check:
    """Score `check_cases` with `kernel` and `reference`."""
    worst = 0.0
    for case in check_cases(device):
        try:
            got = kernel(*case)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # an asynchronous launch failure surfaces here, inside the check
        except Exception as err:  # whatever the compiler or the driver raises, the torch path serves
            return Check(_failure(err), _first_line(err))
        want = reference(*case)
        diff = float((got.float() - want.float()).abs().max()) if got.shape == want.shape else float("inf")
        if not diff <= TOLERANCE:  # NaN fails too
            reason = (f"the Triton kernel differs from the torch path by {diff:.2g}, over the {TOLERANCE:g} allowed"
                      if got.shape == want.shape else
                      f"the Triton kernel returned shape {tuple(got.shape)}, not {tuple(want.shape)}")
            return Check(reason, f"Seen on the check's {case[0].shape[0]} queries x {case[3].shape[0]} clips.")
        worst = max(worst, diff)
    return Check(None, worst=worst)


def _load_triton() -> Scorer:
    from tvr_demo.kernels.wti_triton import wti_scores_triton

    return wti_scores_triton


class KernelGate:
    """Decides once per device which path serves each regime: the variants of the kernel that pass the check race
    the torch path (on CUDA; `race` stands in for it elsewhere); a kernel that fails logs one warning and the torch
    path serves from then on."""

    def __init__(self, load_kernel: Callable[[], Scorer] = _load_triton, race: Race | None = None,
                 configs: dict[str, Sequence[KernelConfig]] = CONFIGS) -> None:
        self.load_kernel, self.race, self.configs = load_kernel, race, configs
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
        verdict = _path({}, _failure(err) + " on a real input")
        with self._lock:
            self._decided[str(device)] = verdict
        _warn(device, verdict, _first_line(err))

    def _decide(self, device: torch.device) -> ScoringPath:
        try:
            kernel = self.load_kernel()
        except ImportError as err:
            return _warn(device, _path({}, "triton is not installed"), _first_line(err))
        except Exception as err:  # a triton release the kernel's module does not import under
            return _warn(device, _path({}, f"the Triton kernel failed to load: {type(err).__name__}"),
                         _first_line(err))
        passed: dict[str, list[KernelConfig]] = {}
        failed: list[Check] = []
        worst = 0.0
        for name, configs in self.configs.items():
            for config in configs:
                check = run_check(functools.partial(kernel, config=config), device)
                if check.failure is None:
                    passed.setdefault(name, []).append(config)
                    worst = max(worst, check.worst)
                else:
                    failed.append(check)
        if not passed:
            return _warn(device, _path({}, failed[0].failure), failed[0].detail)
        reason = f"self-check passed, max difference {worst:.1e}"
        if failed:
            reason += f" ({len(failed)} variants failed it: {failed[0].failure})"
            log.warning("Token-wise scoring on %s: %s. %s", device, reason, failed[0].detail)
        race = self.race or (race_on_cuda if device.type == "cuda" else None)
        if race is None:
            return _path({name: configs[0] for name, configs in passed.items()}, reason)
        try:
            results = race(kernel, passed, device)
        except Exception as err:  # a variant that breaks on the race's larger shape breaks on real ones too
            return _warn(device, _path({}, _failure(err) + " in the race against the torch path"), _first_line(err))
        served = winners(results, passed)
        verdict = _path(served, f"{reason}; {describe(results, served)}", results)
        log.info("Token-wise scoring on %s: %s", device, verdict.reason)
        return verdict


def _warn(device: torch.device, verdict: ScoringPath, detail: str) -> ScoringPath:
    log.warning("Token-wise scoring on %s uses the torch path from now on: %s. %s", device, verdict.reason, detail)
    return verdict


GATE = KernelGate()


def _cuda(device: torch.device) -> torch.device:
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def serving_path(device: torch.device | str) -> ScoringPath:
    """The path the fused scorer takes for tensors on `device` (the Triton kernel is checked on the first call)."""
    device = torch.device(device)
    if device.type != "cuda":
        return _path({}, "no CUDA device" if not torch.cuda.is_available() else f"{device.type} tensors")
    return GATE.path(_cuda(device))


def kernel_failed(device: torch.device, err: Exception) -> None:
    """Called by the scorer when the kernel raised on a real input: the torch path serves `device` from now on."""
    GATE.give_up(_cuda(device), err)
