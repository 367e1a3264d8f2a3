"""ZeroGPU support: `gpu` is `spaces.GPU` when the `spaces` package is installed (Hugging Face Spaces) and does
nothing elsewhere, so the same app runs on CPU, on a local GPU and on ZeroGPU hardware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import spaces
except ImportError:
    spaces = None


def gpu(fn: Callable | None = None, *, duration: int = 60) -> Any:
    """Decorate a function that runs the model (use as `@gpu` or `@gpu(duration=120)`): on ZeroGPU it gets a GPU
    for at most `duration` seconds per call; without `spaces` it is returned unchanged."""
    if spaces is None:
        return fn if fn is not None else (lambda f: f)
    decorate = spaces.GPU(duration=duration)
    return decorate(fn) if fn is not None else decorate


def on_zero_gpu() -> bool:
    """True on a ZeroGPU Space, where CUDA may only be used inside `@gpu` functions (so nothing is preloaded)."""
    import os

    return spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in {"1", "true"}
