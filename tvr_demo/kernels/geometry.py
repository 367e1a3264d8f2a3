"""How the Triton kernel is launched, without Triton: its compiled variants (tile sizes, warps, pipeline depth), the
two regimes they serve, and the grid for any A x B, within CUDA's limits."""

from __future__ import annotations

from dataclasses import dataclass

GRID_X_LIMIT = 2**31 - 1  # CUDA's limit on grid axis x (axes y and z stop at 65,535; the kernel does not use them)
QUERY_BLOCK_LIMIT = 4  # launches of up to this many queries are the "query" regime (one query per tile)


@dataclass(frozen=True)
class KernelConfig:
    """One compiled variant of the kernel: tile sizes and the launch's warps and pipeline depth."""

    block_b: int  # videos per tile: the tensor-core product's M
    block_a: int  # queries per tile: their tokens are the product's N = block_a * TP
    block_d: int  # channels per step of the product's K loop
    num_warps: int
    num_stages: int

    @property
    def label(self) -> str:
        return f"{self.block_b}v x {self.block_a}q, d{self.block_d}, {self.num_warps}w{self.num_stages}s"


# The small set the self-check compiles and races per regime (selfcheck.py): which one serves is measured on the
# device. 64 and 128 videos are the M of one and two Hopper warpgroups; in a batch 4 or 2 queries share each video
# tile. Steps of 32 channels and 8 warps for batches: compiled for sm_90a, every variant then keeps its fp32 tiles in
# registers without spilling at 16 and 32 tokens, where steps of 64 spilled (bench/kernel_report.py prints the table).
CONFIGS = {"query": (KernelConfig(64, 1, 32, 4, 3), KernelConfig(128, 1, 32, 8, 3)),
           "batch": (KernelConfig(64, 4, 32, 8, 3), KernelConfig(128, 2, 32, 8, 3))}


def regime(a_n: int) -> str:
    """"query" for a launch of a few queries (a search), "batch" for more (a score matrix)."""
    return "query" if a_n <= QUERY_BLOCK_LIMIT else "batch"


def default_config(a_n: int) -> KernelConfig:
    return CONFIGS[regime(a_n)][0]


@dataclass(frozen=True)
class LaunchGeometry:
    """How A x B scores are cut into tiles and programs: a 1-D grid, each program walking tiles with a stride."""

    a_blocks: int  # query blocks
    b_blocks: int  # video blocks
    programs: int  # grid axis x

    @property
    def tiles(self) -> int:
        return self.a_blocks * self.b_blocks

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.programs, 1, 1)

    @property
    def tiles_per_program(self) -> int:
        return -(-self.tiles // self.programs)


def launch_geometry(a_n: int, b_n: int, block_a: int, block_b: int, max_programs: int = GRID_X_LIMIT
                    ) -> LaunchGeometry:
    """Tiles for A queries x B videos, numbered query block fastest (consecutive programs share a video block, which
    then comes from L2); one program per tile up to `max_programs`, past it each program walks several."""
    a_blocks, b_blocks = -(-a_n // block_a), -(-b_n // block_b)
    return LaunchGeometry(a_blocks, b_blocks, max(1, min(a_blocks * b_blocks, max_programs)))
