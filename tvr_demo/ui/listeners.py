"""How a listener runs, declared once where it is defined: its queue (pool), whether it needs a GPU (ZeroGPU), whether
it runs at the lowest CPU priority, and the guard that turns every error into one sentence for the user.

Pools keep fast requests from queueing behind heavy ones: MODEL answers one query with a loaded model, two at a time
(the CPU Space has two cores; bench/load_test.py measured this against other pool sizes), beside a slot for each
request that waits for its engine's preparation, so a search on a ready engine never waits behind them; HEAVY may
build an engine or touch every caption x video score (minutes for a training split); UPLOAD checks and decodes uploaded clips in killable
worker processes; MAP fits UMAP. A new listener: MODEL if it scores one query against a loaded engine, HEAVY if it may
build an engine or read the whole split's matrices.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from tvr_demo.errors import TVRError
from tvr_demo.safety import public_message
from tvr_demo.ui.background import low_priority
from tvr_demo.ui.gpu import gpu
from tvr_demo.ui.session import PREPARATION_WAITERS

LOG = logging.getLogger("tvr_demo.app")
PROGRESS = gr.Progress(track_tqdm=True)  # gradio reads each request's progress from context: one default serves all


@dataclass(frozen=True)
class Pool:
    """A gradio queue shared by the listeners that name it."""

    name: str
    size: int

    @property
    def queue(self) -> dict[str, Any]:
        return {"concurrency_id": self.name, "concurrency_limit": self.size}


MODEL = Pool("model", 2 + PREPARATION_WAITERS)  # two searches, and a slot for each that waits for its engine
HEAVY = Pool("heavy", 2)
UPLOAD = Pool("upload", 2)
MAP = Pool("map", 1)


def user_errors(fn: Callable) -> Callable:
    """Every listener's guard: the project's user-facing errors (empty query, unknown video, corrupt upload...)
    become a notice with their one sentence (server paths cut to file names), and anything unforeseen becomes one
    sentence too, its traceback kept in the server's log; never gradio's generic error or a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            raise gr.Error(public_message(str(err.message)), print_exception=False) from None
        except TVRError as err:
            raise gr.Error(public_message(str(err)), print_exception=False) from None
        except Exception as err:
            LOG.exception("%s failed", getattr(fn, "__name__", "a listener"))
            raise gr.Error(f"the server could not handle this request ({type(err).__name__}): check the inputs, or "
                           "try again; the error was logged", print_exception=False) from None

    return wrapper


class listener:  # noqa: N801 (used as a decorator, like functools.cached_property)
    """Declare a tab's method as a listener (or as the GPU part of one):

        @listener(MODEL, gpu_seconds=60)
        def run_search(self, query, ...): ...

    Each instance gets the method wrapped once: at the lowest CPU priority (`background`), on a GPU for at most
    `gpu_seconds` under ZeroGPU (the bound method is wrapped, so ZeroGPU pickles the call's arguments, never the
    tab, whose session holds locks and engines), then guarded by `user_errors` (`guarded`). The wrapped method
    carries its pool as `.queue`, which `wire` passes to gradio."""

    def __init__(self, pool: Pool | None = None, *, gpu_seconds: int | None = None, background: bool = False,
                 guarded: bool = True) -> None:
        self.pool, self.gpu_seconds, self.background, self.guarded = pool, gpu_seconds, background, guarded
        self.fn: Callable | None = None
        self.name = ""

    def __call__(self, fn: Callable) -> listener:
        self.fn = fn
        functools.update_wrapper(self, fn)
        return self

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, tab: Any, owner: type | None = None) -> Any:
        if tab is None:
            return self
        run = self.fn.__get__(tab, owner)
        if self.background:
            run = low_priority(run)
        if self.gpu_seconds is not None:
            run = gpu(run, duration=self.gpu_seconds)
        if self.guarded:
            run = user_errors(run)
        wrapped = run

        @functools.wraps(wrapped)  # the bound method's name and signature (no `self`), which gradio inspects
        def call(*args, **kwargs):
            return wrapped(*args, **kwargs)

        call.queue = self.pool.queue if self.pool else {}
        tab.__dict__[self.name] = call  # wrapped once per tab: later lookups find it in the instance
        return call


def wire(trigger: Callable | list, fn: Callable, inputs: Any, outputs: Any, **kwargs: Any) -> Any:
    """Attach `fn` to a trigger (a component's event method, a list of them, or a dependency's .then / .success) with
    the pool its definition declares; returns the dependency, so more steps can follow."""
    queue = getattr(fn, "queue", {})
    if isinstance(trigger, list):
        return gr.on(trigger, fn, inputs, outputs, **queue, **kwargs)
    return trigger(fn, inputs, outputs, **queue, **kwargs)
