"""Pixels: a clip's frames drawn from its attribute record, and their H.264 encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tvr_demo.data.synthetic.vocabulary import BACKGROUNDS, COLOURS

_SUPERSAMPLE = 2  # draw at twice the size and average down: smooth edges without a drawing library


def _polygon(shape: str, cx: float, cy: float, r: float, angle_deg: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius r, turned by angle_deg (counter-clockwise on screen)."""
    if shape == "square":
        points = [(r, 45 + 90 * k) for k in range(4)]
    elif shape == "triangle":
        points = [(r, 90 + 120 * k) for k in range(3)]
    elif shape == "star":
        points = [(r if k % 2 == 0 else 0.45 * r, 90 + 36 * k) for k in range(10)]
    else:  # cross: a plus sign with arms 0.3 r wide
        w, arm = 0.3 * r, 0.95 * r
        # fmt: off
        corners = [(w, arm), (w, w), (arm, w), (arm, -w), (w, -w), (w, -arm),
                   (-w, -arm), (-w, -w), (-arm, -w), (-arm, w), (-w, w), (-w, arm)]
        # fmt: on
        points = [(float(np.hypot(px, py)), float(np.degrees(np.arctan2(py, px)))) for px, py in corners]
    return [
        (cx + d * np.cos(np.radians(a + angle_deg)), cy - d * np.sin(np.radians(a + angle_deg)))
        for d, a in points
    ]


def render_frames(record: dict) -> np.ndarray:
    """(num_frames, R, R, 3) uint8 RGB of a clip, from its attribute record alone."""
    size = record["resolution"] * _SUPERSAMPLE
    frames = np.empty((record["num_frames"], record["resolution"], record["resolution"], 3), dtype=np.uint8)
    for k in range(record["num_frames"]):
        t = k / record["fps"]
        image = Image.new("RGB", (size, size), BACKGROUNDS[record["background"]])
        draw = ImageDraw.Draw(image)
        for obj in record["objects"]:
            if not obj["visible_s"][0] <= t < obj["visible_s"][1]:
                continue
            t0, t1 = obj["window_s"]
            # progress through the object's window: 0 on its first frame, 1 on its last
            p = min(max((t - t0) / max(t1 - t0 - 1 / record["fps"], 1e-6), 0.0), 1.0)
            cx, cy = ((s + p * (e - s)) * size for s, e in zip(obj["start"], obj["end"], strict=True))
            r = (obj["radius"][0] + p * (obj["radius"][1] - obj["radius"][0])) * size
            colour = COLOURS[obj["colour"]][0]
            if obj["shape"] == "circle":
                draw.ellipse((cx - 0.9 * r, cy - 0.9 * r, cx + 0.9 * r, cy + 0.9 * r), fill=colour)
            else:
                draw.polygon(_polygon(obj["shape"], cx, cy, r, obj["spin_deg_per_s"] * (t - t0)), fill=colour)
        frames[k] = np.asarray(image.reduce(_SUPERSAMPLE))
    return frames


def _encode(frames: np.ndarray, path: Path, fps: int, crf: int) -> None:
    """H.264 mp4 (yuv420p, one thread: the worker processes already fill the cores)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _render_job(job: tuple[dict, str, int]) -> str:
    record, path, crf = job
    _encode(render_frames(record), Path(path), record["fps"], crf)
    return path
