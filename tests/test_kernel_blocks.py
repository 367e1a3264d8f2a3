"""Block sizes per device (tvr_demo/kernels/blocks.py): a pure function of the device's kind, cache and free memory,
checked here against values worked out by hand from the rules its docstrings state."""

from __future__ import annotations

import pytest
import torch

from tvr_demo.kernels.blocks import DeviceMemory, block_floats, device_memory, text_rows

GB, MB = 2**30, 2**20


@pytest.mark.parametrize("memory,floats", [
    (DeviceMemory("cpu", 32 * MB, 20 * GB), 2**20),  # the bench's EPYC: an eighth of 32 MB is 4 MB = 2**20 floats
    (DeviceMemory("cpu", 8 * MB, 20 * GB), 2**18),  # a laptop's 8 MB: 1 MB of cosines
    (DeviceMemory("cpu", 480 * MB, 20 * GB), 2**20),  # a large shared L3 behind a small VM: capped at 2**20
    (DeviceMemory("cpu", 0, 20 * GB), 2**20),  # cache size unreadable: the measured default
    (DeviceMemory("cpu", 32 * MB, 16 * MB), 2**18),  # 16 MB free: 16 MB / (4 x 16 B) = 2**18 floats
    (DeviceMemory("cuda", 60 * MB, 140 * GB), 2**24),  # an H200: the sweep's largest block
    (DeviceMemory("cuda", 60 * MB, 3 * GB // 2), 2**24),  # 1.5 GB / 64 B = 25M floats: still 2**24
    (DeviceMemory("cuda", 40 * MB, 256 * MB), 2**22),  # 256 MB / 64 B = 2**22 floats
    (DeviceMemory("cuda", 40 * MB, 100 * MB), 2**20),  # 1.6M floats, rounded down to a power of two
    (DeviceMemory("cuda", 40 * MB, MB), 2**14),  # almost nothing free: the smallest block
], ids=["epyc", "laptop", "shared-l3", "unknown-cache", "little-ram", "h200", "cuda-1.5gb", "cuda-256mb",
        "cuda-100mb", "cuda-full"])
def test_block_floats_follow_the_device(memory: DeviceMemory, floats: int) -> None:
    assert block_floats(memory) == floats


@pytest.mark.parametrize("memory,n_videos,rows", [
    (DeviceMemory("cpu", 32 * MB, 20 * GB), 1000, 1024),  # the CPU's cap
    (DeviceMemory("cuda", 60 * MB, 140 * GB), 1000, 8192),  # CUDA's cap: fewer launches
    (DeviceMemory("cuda", 60 * MB, GB), 10**6, 16),  # 1 GB / 16 = 64 MB of scores: 16 rows of 1e6 floats
    (DeviceMemory("cpu", 32 * MB, 100 * MB), 10**7, 1),  # never fewer than one row
])
def test_text_rows_fit_a_sixteenth_of_free_memory(memory: DeviceMemory, n_videos: int, rows: int) -> None:
    assert text_rows(memory, n_videos) == rows


def test_this_machine_is_read() -> None:
    """The CPU's numbers come from the host (sysfs, /proc/meminfo): something free, and a block within bounds."""
    memory = device_memory("cpu")
    assert memory.kind == "cpu" and memory.free_bytes > 0
    assert 2**14 <= block_floats(memory) <= 2**20


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_is_read() -> None:
    memory = device_memory("cuda")
    assert memory.kind == "cuda" and memory.free_bytes > 0 and memory.cache_bytes > 0
