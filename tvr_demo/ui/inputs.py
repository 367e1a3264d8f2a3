"""Inputs as clients send them: the branch picker's values, and number fields whose value a client may send as NaN,
text or out of range, which get one clear sentence instead of gradio's generic error."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import gradio as gr

from tvr_demo.errors import QueryError

if TYPE_CHECKING:
    from tvr_demo import Engine

BRANCHES = ["auto", "latent", "lexicon", "fused"]  # "auto": the model's own ranking branch


def ranking_branch(value: str | None) -> str | None:
    """The branch picker's value as the engine takes it: None for the model's own ranking branch."""
    return None if value in (None, "", "auto") else value


def checked_number(component: gr.Slider | gr.Number, what: str) -> gr.Slider | gr.Number:
    """The component, its preprocess first refusing anything but a finite number in its range (gradio's own
    round() fails on NaN with a ValueError, and on text with a TypeError, which clients see as a generic error)."""
    low, high, preprocess = component.minimum, component.maximum, component.preprocess

    def check(payload):
        value = None
        if isinstance(payload, (int, float, str)) and not isinstance(payload, bool):
            try:
                value = float(payload)
            except (ValueError, OverflowError):
                value = None
        if value is None or not math.isfinite(value) or (low is not None and value < low) \
                or (high is not None and value > high):
            raise gr.Error(f"{what} must be a number from {low:g} to {high:g}, not {str(payload)[:40]!r}",
                           print_exception=False)
        return preprocess(value)

    component.preprocess = check
    return component


def resolve_video(engine: Engine, video: str | int | float | None) -> int | None:
    """A gallery video given by id ("video7") or by 0-based index ("7"); None when blank."""
    if video is None or (isinstance(video, str) and not video.strip()):
        return None
    if isinstance(video, (int, float)):
        return engine.check_video(int(video))
    text = video.strip()
    if text in engine.bench.video_ids:
        return engine.bench.video_index(text)
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:  # "²".isdigit(), yet int("²") fails
        raise QueryError(f"no video {text[:60]!r} in this gallery: give a video id (e.g. "
                         f"{engine.bench.video_ids[0]}) or an index 0..{engine.gallery_size - 1}")
    return engine.check_video(int(text))
