"""Inputs as clients send them: the branch picker's values, and number fields whose value a client may send as NaN,
text or out of range, which get one clear sentence instead of gradio's generic error."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import gradio as gr

from tvr_demo.errors import QueryError

if TYPE_CHECKING:
    from tvr_demo import Engine

BRANCHES = ["auto", "latent", "lexicon", "fused"]  # "auto": the model's own ranking branch


def ranking_branch(value: str | None) -> str | None:
    """The branch picker's value as the engine takes it: None for the model's own ranking branch."""
    return None if value in (None, "", "auto") else value


_WHOLE = re.compile(r"[+-]?\d{1,9}(\.0*)?")  # digits, optionally ".0": no exponent, underscore or fraction


def whole_number(payload, low: float, high: float, what: str) -> int:
    """The one rule for every count a client sends (top k, rows, lines): a whole number in [low, high], given as an
    int, a float with nothing after the point or those digits as text. Anything else (NaN, "1_0", 2.7, "50.9", text)
    gets the same sentence, where gradio's own rounding would fail or quietly change it."""
    value = None
    if isinstance(payload, int) and not isinstance(payload, bool):
        value = payload
    elif isinstance(payload, float) and math.isfinite(payload) and payload.is_integer():
        value = int(payload)
    elif isinstance(payload, str) and _WHOLE.fullmatch(payload.strip()):
        value = int(float(payload))
    if value is None or not low <= value <= high:
        raise gr.Error(f"{what} must be a number from {low:g} to {high:g}, a whole one, not {str(payload)[:40]!r}",
                       print_exception=False)
    return value


def checked_number(component: gr.Slider | gr.Number, what: str) -> gr.Slider | gr.Number:
    """The component, its preprocess first holding the value to `whole_number`'s rule."""
    low, high, preprocess = component.minimum, component.maximum, component.preprocess
    component.preprocess = lambda payload: preprocess(whole_number(payload, low, high, what))
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
