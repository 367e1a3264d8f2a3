"""What the Triton kernel compiles to on a Hopper GPU, without one: each variant of the self-check (CONFIGS) compiled
for sm_90a by Triton's own compiler and ptxas, with its registers, spills, shared memory and matrix instruction.

    python -m bench.kernel_report [--dtypes fp32,fp16,bf16] [--tokens 16,32]

A variant that spills (bytes of local memory per thread) or uses mma.sync instead of Hopper's wgmma is slower than
its tiles suggest; the race on the device (tvr_demo/kernels/race.py) has the last word.
"""

from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from tvr_demo.kernels.geometry import CONFIGS, KernelConfig
from tvr_demo.kernels.wti_triton import _wti_kernel

HOPPER = GPUTarget("cuda", 90, 32)
TILE_SIZES = ("BLOCK_A", "TP", "BLOCK_B", "BLOCK_D")


def _signature(dtype: str) -> dict[str, str]:
    """Argument types as the launcher passes them: features in `dtype`, the rest float32 pointers and integers."""
    out = {}
    for name in inspect.signature(_wti_kernel.fn).parameters:
        if name in TILE_SIZES:
            out[name] = "constexpr"
        elif name in ("q_ptr", "f_ptr"):
            out[name] = f"*{dtype}"
        elif name.endswith("_ptr"):
            out[name] = "*fp32"
        else:
            out[name] = "i64" if name == "n_tiles" else "i32"
    return out


def compile_report(config: KernelConfig, dtype: str, tokens: int) -> dict:
    """Compile one variant for sm_90a and read ptxas's resource report."""
    source = ASTSource(fn=_wti_kernel, signature=_signature(dtype),
                       constexprs={"BLOCK_A": config.block_a, "TP": tokens, "BLOCK_B": config.block_b,
                                   "BLOCK_D": config.block_d})
    kernel = triton.compile(source, target=HOPPER, options={"num_warps": config.num_warps,
                                                             "num_stages": config.num_stages})
    ptx = kernel.asm["ptx"]
    arch = re.search(r"\.target (sm_\w+)", ptx).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
        done = subprocess.run([str(ptxas), "-v", f"--gpu-name={arch}", str(path), "-o", str(path.with_suffix(".o"))],
                              capture_output=True, text=True, check=True)
    report = done.stderr

    def number(pattern: str) -> int:
        found = re.search(pattern, report)
        return int(found.group(1)) if found else 0

    return {"variant": config.label, "dtype": dtype, "tokens": tokens, "arch": arch,
            "registers": number(r"Used (\d+) registers"), "spill_bytes": number(r"(\d+) bytes spill stores"),
            "shared_bytes": int(kernel.metadata.shared),
            "matrix_instruction": "wgmma" if "wgmma" in ptx else "mma.sync" if "mma.sync" in ptx else "none"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="fp32,fp16,bf16")
    parser.add_argument("--tokens", default="16,32")
    args = parser.parse_args()
    print(f"Triton {triton.__version__}, target sm_90a")
    print("| variant | dtype | tokens | registers | spill bytes | shared KB | matrix instruction |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for group in CONFIGS.values():
        for config in group:
            for dtype in args.dtypes.split(","):
                for tokens in map(int, args.tokens.split(",")):
                    r = compile_report(config, dtype, tokens)
                    print(f"| {r['variant']} | {dtype} | {tokens} | {r['registers']} | {r['spill_bytes']} | "
                          f"{r['shared_bytes'] / 1024:.0f} | {r['matrix_instruction']} |", flush=True)


if __name__ == "__main__":
    main()
