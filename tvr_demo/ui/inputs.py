"""Input checks gradio runs before a listener: a number field whose value a client may send as NaN, text or out of
range gets one clear sentence instead of gradio's generic error."""

from __future__ import annotations

import math

import gradio as gr


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
