"""The app's memory budget: what its engines hold is counted in bytes (not in engines), so a public server stays
inside its machine whatever galleries and views its clients ask for."""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass

import numpy as np
import scipy.sparse
import torch

from tvr_demo.errors import TVRError

# A 16 GB Space (cpu-basic): the process itself (Python, torch, gradio, the five bundled models) is about 1.5 GB
# resident, one request's working blocks and a UMAP fit a few hundred MB more; 8 GB for engines leaves the rest of the
# machine as headroom. A UNIFY engine on the bundled training split holds 2.6 GB once its score matrices exist.
DEFAULT_MEMORY_GB = 8.0


class MemoryBudgetError(TVRError):
    """A request would need more memory than the server's budget allows."""


def memory_budget() -> int:
    """Bytes the engines may hold together: $TVR_DEMO_MEMORY_GB (default 8), read when a session starts."""
    text = os.environ.get("TVR_DEMO_MEMORY_GB", "").strip()
    try:
        gb = float(text) if text else DEFAULT_MEMORY_GB
    except ValueError:
        raise TVRError(f"TVR_DEMO_MEMORY_GB must be a number of gigabytes, got {text!r}") from None
    if not gb > 0:
        raise TVRError(f"TVR_DEMO_MEMORY_GB must be positive, got {text!r}")
    return int(gb * 2**30)


def nbytes(value) -> int:
    """Bytes held by arrays, tensors and sparse matrices, also inside dicts, lists and dataclasses (the banks)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if scipy.sparse.issparse(value):
        return sum(getattr(value, name).nbytes for name in ("data", "indices", "indptr") if hasattr(value, name))
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in fields(value))
    return 0


def gigabytes(n: int) -> str:
    """Bytes for a message: GB, or MB below a tenth of one."""
    return f"{n / 2**30:.2f} GB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MB"
