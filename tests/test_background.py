"""Heavy listeners run at the lowest CPU priority, so a search gets the cores first. Nice values are read
from /proc, not through the code under test."""

from __future__ import annotations

import contextvars
import os
import threading
from pathlib import Path

import pytest
import torch

from tvr_demo.ui.background import LOWEST_PRIORITY, low_priority

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir() or not hasattr(os, "setpriority"),
                                reason="per-thread nice values are a Linux feature")


def nice_of(tid: int) -> int:
    """A thread's nice value, field 19 of /proc/self/task/<tid>/stat (after the command name in parentheses)."""
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[16])


def niced_threads() -> set[int]:
    return {int(t.name) for t in Path("/proc/self/task").iterdir() if nice_of(int(t.name)) == LOWEST_PRIORITY}


def test_the_work_runs_at_the_lowest_priority_and_the_caller_keeps_its_own():
    caller = threading.get_native_id()
    before = nice_of(caller)
    assert low_priority(lambda: nice_of(threading.get_native_id()))() == LOWEST_PRIORITY
    assert nice_of(caller) == before


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="torch runs single-threaded here: no workers to inherit")
def test_the_torch_workers_of_heavy_work_inherit_its_priority():
    """The matrix products run in torch's OpenMP workers, not in the calling thread: they must be low too. A fresh
    process, so that the only low threads are the heavy one and the workers it started."""
    import subprocess
    import sys

    script = f"""
import threading, torch, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_background import niced_threads
from tvr_demo.ui.background import low_priority
def heavy():
    a = torch.randn(512, 512)
    for _ in range(20):
        a = torch.tanh(a @ a)
    return len(niced_threads() - {{threading.get_native_id()}})
print(low_priority(heavy)())
"""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) >= 1, "no torch worker of the heavy thread runs at its priority"


def test_the_request_context_goes_with_the_work_and_errors_come_back():
    """gradio finds a request's progress bar through context variables; the caller sees the work's own exception."""
    request = contextvars.ContextVar("request")
    request.set("event-7")
    assert low_priority(request.get)() == "event-7"

    def fails() -> None:
        raise KeyError("video9")

    with pytest.raises(KeyError, match="video9"):
        low_priority(fails)()


def test_whole_split_listeners_run_low_and_searches_do_not(tiny_app):
    import app

    demo = app.build_demo(tiny_app)
    low = {}
    for block_fn in demo.fns.values():
        low[block_fn.name] = (block_fn.concurrency_id, getattr(block_fn.fn, "low_priority", False))
    heavy = {name for name, (pool, is_low) in low.items() if pool in ("heavy", "map") or name == "load"}
    assert {"run_metrics", "run_failures", "run_map", "run_papers", "load"} <= heavy
    assert all(low[name][1] for name in heavy), {n: low[n] for n in heavy if not low[n][1]}
    searching = {name for name, (pool, _) in low.items() if pool == "model"}
    assert {"run_search", "run_explain"} <= searching
    assert not any(low[name][1] for name in searching)
