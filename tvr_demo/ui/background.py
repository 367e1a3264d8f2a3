"""Whole-split work at the lowest CPU priority, so that a search never waits for a core behind it.

Separate gradio pools (app.py) keep a search from queueing behind a first build or a UMAP fit, but both still share
the machine's cores: on the 2-core Space, two training-split builds took a search from 0.3 s to several seconds.
Linux keeps a nice value per thread and a thread's children inherit it, so heavy listeners run in threads niced to
19, whose torch (OpenMP) and numba workers inherit it: the scheduler then gives a search's threads the cores first,
and the heavy work the rest.
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from tvr_demo.memory import collect_dropped

LOWEST_PRIORITY = 19  # nice value of the heavy threads (19: runs only on cycles nothing else wants)
MAX_HEAVY_THREADS = 8  # more than the heavy pools' concurrency together (app.HEAVY_POOL, MAP_POOL, /load)

T = TypeVar("T")


def lower_this_thread(nice: int = LOWEST_PRIORITY) -> bool:
    """Set the calling thread's nice value (Linux: per thread); False where the platform cannot."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return True
    except (AttributeError, OSError):  # not Linux/Unix, or not permitted: run at the normal priority
        return False


# threads start on demand; nice values cannot be raised back unprivileged, so these stay low for good
_HEAVY_THREADS = ThreadPoolExecutor(MAX_HEAVY_THREADS, thread_name_prefix="tvr-heavy", initializer=lower_this_thread)


def low_priority(fn: Callable[..., T]) -> Callable[..., T]:
    """Run `fn` in a lowest-priority thread and wait for it; the request's context (gradio's progress and request
    variables) goes with it, its exceptions come back to the caller unchanged, and the free memory it leaves (an
    engine it held after its eviction, too) goes back to the system."""

    def run(*args, **kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            collect_dropped()

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> T:
        context = contextvars.copy_context()
        return _HEAVY_THREADS.submit(context.run, run, *args, **kwargs).result()

    wrapper.low_priority = True  # functools.wraps carries it to outer wrappers: the app's wiring can be checked
    return wrapper
