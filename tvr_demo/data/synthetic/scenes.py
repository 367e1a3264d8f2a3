"""What a clip shows (structure, objects, nuisance draws, twins) and where each object is over time."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from tvr_demo.data.synthetic.captions import describe
from tvr_demo.data.synthetic.vocabulary import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    OPPOSITE_MOTION,
    RADIUS,
    SHAPES,
    SIZES,
    SPIN_DEG_PER_S,
    STRUCTURES,
)

if TYPE_CHECKING:
    from tvr_demo.data.synthetic import SyntheticConfig

_MARGIN = 0.03  # gap between a shape and the frame edge
_AXIS = {"left": "h", "right": "h", "up": "v", "down": "v"}

CHANGING_SIZE = "changing"  # what a growing or shrinking shape's size is called: its record says None


# ---------------------------------------------------------------------------------------------------- what a clip shows


def _valid(clip: dict) -> bool:
    """Rules that keep every clip renderable and every caption unambiguous."""
    objs = clip["objects"]
    if any(o["motion"] == "spins" and o["shape"] == "circle" for o in objs):
        return False  # a spinning circle looks still
    if any((o["size"] is None) != (o["motion"] in ("grows", "shrinks")) for o in objs):
        return False  # growing/shrinking shapes have no one size
    if clip["structure"] in ("pair", "sequence") and len({(o["colour"], o["shape"]) for o in objs}) < 2:
        return False  # each object must be nameable by colour and shape
    if clip["structure"] == "pair" and {_AXIS.get(o["motion"]) for o in objs} >= {"h", "v"}:
        return False  # one lane layout cannot hold a horizontal and a vertical mover
    if clip["structure"] == "count":
        if objs[0]["motion"] in ("grows", "shrinks") or (clip["count"] == 3 and objs[0]["size"] == "large"):
            return False  # three large shapes do not fit side by side
    return True


def _random_object(rng: np.random.Generator, motions: list[str]) -> dict:
    motion = str(rng.choice(motions))
    return {
        "colour": str(rng.choice(list(COLOURS))),
        "shape": str(rng.choice(list(SHAPES))),
        "size": None if motion in ("grows", "shrinks") else str(rng.choice(list(SIZES))),  # None: CHANGING_SIZE
        "motion": motion,
    }


def sample_clip(rng: np.random.Generator, cfg: SyntheticConfig) -> dict:
    """Structure, objects and nuisance (background, duration, layout draws) of one clip, until valid."""
    while True:
        structure = str(rng.choice(list(STRUCTURES), p=list(STRUCTURES.values())))
        count = int(rng.choice([2, 3])) if structure == "count" else (1 if structure == "single" else 2)
        motions = [m for m in MOTIONS if not (structure == "count" and m in ("grows", "shrinks"))]
        objs = [_random_object(rng, motions) for _ in range(1 if structure in ("single", "count") else 2)]
        if structure == "count":
            objs = [dict(objs[0]) for _ in range(count)]
        low = cfg.min_sequence_s if structure == "sequence" else cfg.min_duration_s
        clip = {
            "structure": structure,
            "count": count,
            "objects": objs,
            "background": str(rng.choice(list(BACKGROUNDS))),
            "duration_s": int(rng.integers(low, cfg.max_duration_s + 1)),
            "layout_draws": rng.random((2, 3)).round(4).tolist(),  # shared by twins: only one thing differs
        }
        if _valid(clip):
            return clip


def make_twin(clip: dict, rng: np.random.Generator) -> tuple[dict, str] | None:
    """A copy of the clip that differs in exactly one attribute (of one object), or None when none is possible."""
    attrs = ["colour", "shape", "size", "motion"] + {"sequence": ["order"], "count": ["count"]}.get(
        clip["structure"], []
    )
    for attr in rng.permutation(attrs):
        twin = json.loads(json.dumps(clip))
        objs = twin["objects"]
        targets = range(len(objs)) if clip["structure"] == "count" else [int(rng.integers(len(objs)))]
        if attr == "order":
            objs.reverse()
        elif attr == "count":
            twin["count"] = 5 - clip["count"]
            twin["objects"] = [dict(objs[0]) for _ in range(twin["count"])]
        elif attr == "colour" or attr == "shape":
            table = COLOURS if attr == "colour" else SHAPES
            new = str(rng.choice([v for v in table if v != objs[targets[0]][attr]]))
            for i in targets:
                objs[i][attr] = new
        else:
            for i in targets:
                if attr == "size" and objs[i]["size"] is not None:
                    objs[i]["size"] = "large" if objs[i]["size"] == "small" else "small"
                elif attr == "motion":
                    objs[i]["motion"] = OPPOSITE_MOTION[objs[i]["motion"]]
        if describe(twin, canonical=True) != describe(clip, canonical=True) and _valid(twin):
            return twin, str(attr)
    return None


# ---------------------------------------------------------------------------------------------------- where things are


def layout(clip: dict) -> list[dict]:
    """Each object's path, size, visibility and spin, in frame fractions and seconds, from the clip's draws."""
    duration, structure, objs = clip["duration_s"], clip["structure"], clip["objects"]
    axes = {_AXIS.get(o["motion"]) for o in objs} - {None}
    full = (0.0, 1.0, 0.0, 1.0)  # x0, x1, y0, y1
    n = len(objs)
    if structure in ("single", "sequence"):
        regions = [full] * n
    elif "h" in axes or (not axes and structure == "pair" and clip["layout_draws"][0][2] < 0.5):
        regions = [(0.0, 1.0, i / n, (i + 1) / n) for i in range(n)]  # stacked rows: horizontal movers pass
    else:
        regions = [(i / n, (i + 1) / n, 0.0, 1.0) for i in range(n)]  # side-by-side columns
    windows = (
        [(0.0, duration / 2), (duration / 2, duration)] if structure == "sequence" else [(0.0, duration)] * n
    )
    placed = []
    for i, (obj, (x0, x1, y0, y1), (t0, t1)) in enumerate(zip(objs, regions, windows, strict=True)):
        u = clip["layout_draws"][0 if structure == "count" else i]  # a count's shapes move in step
        extent = RADIUS[obj["size"] or "large"]
        lo_x, hi_x = x0 + _MARGIN + extent, max(x0 + _MARGIN + extent, x1 - _MARGIN - extent)
        lo_y, hi_y = y0 + _MARGIN + extent, max(y0 + _MARGIN + extent, y1 - _MARGIN - extent)
        x, y = lo_x + u[0] * (hi_x - lo_x), lo_y + u[1] * (hi_y - lo_y)
        start, end = {
            "left": ((hi_x, y), (lo_x, y)),
            "right": ((lo_x, y), (hi_x, y)),
            "up": ((x, hi_y), (x, lo_y)),
            "down": ((x, lo_y), (x, hi_y)),
        }.get(obj["motion"], ((x, y), (x, y)))
        radius = {"grows": ("small", "large"), "shrinks": ("large", "small")}.get(
            obj["motion"], (obj["size"],) * 2
        )
        visible = {
            "appears": (t0 + (0.3 + 0.2 * u[2]) * (t1 - t0), t1),
            "disappears": (t0, t0 + (0.5 + 0.2 * u[2]) * (t1 - t0)),
        }.get(obj["motion"], (t0, t1))
        placed.append(
            {
                **obj,
                "start": [round(v, 4) for v in start],
                "end": [round(v, 4) for v in end],
                "radius": [RADIUS[r] for r in radius],
                "window_s": [round(float(t0), 4), round(float(t1), 4)],
                "visible_s": [round(float(v), 4) for v in visible],
                "spin_deg_per_s": SPIN_DEG_PER_S if obj["motion"] == "spins" else 0.0,
            }
        )
    return placed
