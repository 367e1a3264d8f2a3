"""The app's memory budget: what its engines hold is counted in bytes (not in engines), so a public server stays
inside its machine whatever galleries and views its clients ask for."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import weakref
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


# ---------------------------------------------------------------- the server's heap (glibc)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK_BYTES = 4 << 20  # blocks this size or larger (a batch's tensors) get their own mapping


def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, macOS): nothing to tune
        return None


_libc = _glibc()


def return_large_blocks_to_the_system(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Serve every block of `threshold` bytes or more from its own mapping, unmapped when freed. glibc by default
    raises that threshold each time such a block is freed (up to 32 MB), after which a batch's tensors come from the
    heap and leave the heap fragmented (bench/notes/mmap_threshold.md measures a build's peak both ways). Called once
    by the server; False where the C library is not glibc."""
    return bool(_libc is not None and _libc.mallopt(M_MMAP_THRESHOLD, threshold))


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (malloc_trim): glibc keeps what a thread freed in that thread's
    arena, and heavy work leaves hundreds of MB free but resident after each request, which a Space counts against
    its memory (milliseconds)."""
    if _libc is not None:
        _libc.malloc_trim(0)


def host_available_bytes() -> int:
    """Memory the host can still give without swapping (MemAvailable of /proc/meminfo, or the free physical pages
    where that file does not exist)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        return 0


# ---------------------------------------------------------------- objects dropped on purpose (evicted engines)

_dropped: weakref.WeakSet = weakref.WeakSet()  # dropped, not yet freed


def free_dropped(dropped: list) -> None:
    """Free the objects the caller just dropped (the list is emptied), now, not at the interpreter's next full
    collection: an engine sits in reference cycles (its analysis refers back to it; a failed request's traceback to
    the frames that held it), which reference counting cannot free, and a full collection comes only after hundreds
    of thousands of new objects, so evicted engines stayed resident while their replacements were built. One that a
    request still uses is freed by a later call (`collect_dropped`), after that request."""
    _dropped.update(dropped)
    dropped.clear()
    collect_dropped()


def collect_dropped() -> None:
    """Collect the cycles that keep dropped objects alive (only while any is), then return free pages to the system."""
    if len(_dropped):
        gc.collect()
    release_free_memory()


def freeze_startup_objects() -> None:
    """Exclude the objects alive now (modules, the app's page: half a million) from every later collection, so that
    a full one, whether `free_dropped`'s or the interpreter's own, scans only what requests made since. Call it once
    at start, before any engine exists: a frozen object in a reference cycle is never freed."""
    gc.collect()
    gc.freeze()
