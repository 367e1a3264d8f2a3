"""Block sizes of the torch path per device: a CPU block stays inside the last-level cache, a CUDA block is as large as
free device memory comfortably allows (bench/scoring_bench.py `block_sweep` measured both; bench/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from tvr_demo.memory import host_available_bytes

# CPU: the largest block that helped in the sweep on a 32 MB L3 (AMD EPYC): 2**20 floats = 4 MB, an eighth of the
# cache. Caches shared by many cores (a 480 MB L3 behind a 2-core VM) are not ours to fill, so this is also the cap.
CPU_BLOCK_FLOATS = 2**20
CPU_CACHE_SHARE = 8
# CUDA: 2**22 took 43.8 ms where 2**20 took 156 ms (256 queries vs 1e4 clips on an H200); larger blocks only cost
# memory, so the cap is the sweep's largest size, 2**24 floats = 64 MB of cosines.
CUDA_BLOCK_FLOATS = 2**24
# A block holds its cosines, their two maxima and a masked copy of its frames (at most about twice the cosines when
# the frames are zeroed): 4 floats per cosine, of which a quarter of the free memory may go to one block.
BYTES_PER_BLOCK_FLOAT = 4 * 4
FREE_SHARE = 4
SMALLEST_BLOCK = 2**14


@dataclass(frozen=True)
class DeviceMemory:
    """What sizes a block: the device kind, its last-level cache and the memory free on it."""

    kind: str  # "cpu" or "cuda"
    cache_bytes: int  # CPU: last-level cache; CUDA: L2
    free_bytes: int  # CPU: MemAvailable; CUDA: free device memory


def _pow2_floor(n: int) -> int:
    return 1 << max(0, int(n).bit_length() - 1)


def block_floats(memory: DeviceMemory) -> int:
    """Cosines per block of the torch path: an eighth of the CPU's cache (at most CPU_BLOCK_FLOATS), or on CUDA
    CUDA_BLOCK_FLOATS; never more than a quarter of the free memory, never under SMALLEST_BLOCK."""
    by_memory = memory.free_bytes // (FREE_SHARE * BYTES_PER_BLOCK_FLOAT)
    if memory.kind == "cuda":
        wanted = CUDA_BLOCK_FLOATS
    else:
        wanted = min(CPU_BLOCK_FLOATS, memory.cache_bytes // (CPU_CACHE_SHARE * 4) or CPU_BLOCK_FLOATS)
    return max(SMALLEST_BLOCK, _pow2_floor(min(wanted, by_memory)))


def text_rows(memory: DeviceMemory, n_videos: int) -> int:
    """Queries per call of the scorer (scoring.similarity_matrix): their (rows, n_videos) float32 scores take at
    most a sixteenth of the free memory; 1024 rows at most on the CPU, 8192 on CUDA (fewer launches)."""
    cap = 8192 if memory.kind == "cuda" else 1024
    return max(1, min(cap, memory.free_bytes // (16 * 4 * max(1, n_videos))))


@lru_cache(maxsize=1)
def _cpu_cache_bytes() -> int:
    """The largest cache level of cpu0 (sysfs), 0 where it is not readable."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=0)


def device_memory(device: torch.device | str) -> DeviceMemory:
    """Read the cache and free memory of `device` (on CUDA: the allocator's cached blocks count as free)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
        return DeviceMemory("cuda", int(l2), int(free + reserved))
    return DeviceMemory("cpu", _cpu_cache_bytes(), host_available_bytes())
