"""Timing, peak memory and the machine's measured ceilings (the roofline beside every row)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_START = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr, with the seconds since the suite started."""
    print(f"[bench +{time.perf_counter() - _START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak extra memory while the block runs: CUDA allocator peak on GPU, else resident set sampled every 2 ms."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_bytes()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self._base)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() - self._base)


@dataclass
class Timing:
    ms: float  # median over the timed calls, after the first
    reps: int
    peak_mb: float
    first_ms: float  # the first call alone: compilation, allocator growth, cold caches

    def as_dict(self) -> dict:
        return {"ms": round(self.ms, 3), "reps": self.reps, "peak_mb": round(self.peak_mb, 1),
                "first_ms": round(self.first_ms, 3)}


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def measure(fn: Callable[[], object], device: torch.device, min_time_s: float = 0.3, max_reps: int = 15) -> Timing:
    """The first call timed on its own, then the median of calls until min_time_s has passed (at least one, at most
    max_reps): a compile or an allocation of the first call never counts in `ms`."""
    with PeakMemory(device) as mem:
        first = _timed(fn, device)
        times = [_timed(fn, device)]
        while len(times) < max_reps and sum(times) < min_time_s:
            times.append(_timed(fn, device))
    return Timing(statistics.median(times) * 1e3, len(times), mem.peak / 2**20, first * 1e3)


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on, with attained (not datasheet) fp32 matmul and read-bandwidth ceilings."""
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average_1m": os.getloadavg()[0], "cpus": os.cpu_count(), "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        n = 8192
    else:
        info["name"] = _cpu_name()
        n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = measure(lambda: a @ b, device, min_time_s=0.5)
    info["peak_gflops_fp32"] = round(2 * n**3 / (t.ms / 1e3) / 1e9, 1)
    if device.type == "cuda":  # the tensor cores' ceilings, which the kernel's tf32 / bf16 products can reach
        a16, b16 = a.bfloat16(), b.bfloat16()
        t = measure(lambda: a16 @ b16, device, min_time_s=0.5)
        info["peak_gflops_bf16"] = round(2 * n**3 / (t.ms / 1e3) / 1e9, 1)
        torch.backends.cuda.matmul.allow_tf32 = True
        t = measure(lambda: a @ b, device, min_time_s=0.5)
        info["peak_gflops_tf32"] = round(2 * n**3 / (t.ms / 1e3) / 1e9, 1)
        torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.ones(2**27 if device.type == "cpu" else 2**29, device=device)  # 512 MB / 2 GB
    t = measure(lambda: x.sum(), device, min_time_s=0.5)
    info["read_gbs"] = round(x.numel() * 4 / (t.ms / 1e3) / 1e9, 1)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def roofline_ms(flops: float, nbytes: float, machine: dict) -> float:
    """The least time the machine's measured ceilings allow: max(FLOPs / peak, bytes / bandwidth)."""
    return max(flops / (machine["peak_gflops_fp32"] * 1e9), nbytes / (machine["read_gbs"] * 1e9)) * 1e3


def provenance() -> dict:
    """What a reader needs to trust a run: the commit measured (and whether the tree had changes), the host, the load."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"git_commit": git("rev-parse", "HEAD") or "unknown", "git_dirty": bool(git("status", "--porcelain",
                                                                                       "--untracked-files=no")),
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
