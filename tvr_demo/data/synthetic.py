"""The bundled synthetic benchmark: coloured shapes that move, as H.264 clips with captions in MSR-VTT's layout."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tvr_demo.errors import DatasetError

GENERATOR_VERSION = 1  # bump when the content changes, so old copies can be told apart


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate; the defaults are the bundled benchmark."""

    seed: int = 0
    n_train: int = 5000  # enough for the tiny bundled model to learn every attribute word
    n_test: int = 1000  # the size of MSR-VTT 1k-A, so metrics read on the same scale
    n_val: int = 200  # for model selection without touching test
    resolution: int = 128  # square frames; the bundled model resizes to 64, an exact halving
    fps: int = 5  # enough for smooth motion; 1 fps sampling keeps every 5th frame
    min_duration_s: int = 4  # under 12 s a clip gives fewer than DRL's 12 frames: padding gets exercised
    max_duration_s: int = 16
    min_sequence_s: int = 6  # a two-event clip needs at least 3 sampled frames per event
    captions_per_train_clip: int = 5  # paraphrases per training clip (MSR-VTT has 20 per clip)
    twin_fraction: float = 0.4  # share of clips in twin pairs that differ in one attribute (hard negatives)
    crf: int = 23  # x264 quality: solid colours survive it, files stay about 10 kB


# ---------------------------------------------------------------------------------------------------- vocabulary

# fmt: off
COLOURS = {  # name: (RGB, words a caption may use)
    "red": ((230, 40, 40), ("red", "crimson", "scarlet")),
    "orange": ((255, 140, 20), ("orange", "tangerine")),
    "yellow": ((250, 220, 40), ("yellow", "golden")),
    "green": ((40, 180, 70), ("green", "emerald")),
    "blue": ((50, 90, 240), ("blue", "cobalt")),
    "purple": ((160, 70, 210), ("purple", "violet")),
    "white": ((245, 245, 245), ("white", "snow-white")),
}
BACKGROUNDS = {"black": (0, 0, 0), "charcoal": (45, 45, 50), "gray": (95, 95, 95)}  # never named in captions
SHAPES = {  # name: (singular, plural) word pairs
    "circle": (("circle", "circles"), ("disc", "discs"), ("ball", "balls")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
    "triangle": (("triangle", "triangles"), ("triangular shape", "triangular shapes")),
    "star": (("star", "stars"), ("star shape", "star shapes")),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
}
SIZES = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
RADIUS = {"small": 0.13, "large": 0.22}  # circumradius as a fraction of the frame side: 8 and 14 px at 64 px
MOTIONS = {  # name: (singular, plural) verb phrases; the first pair is the canonical wording
    "left": (("moves to the left", "move to the left"), ("slides left", "slide left"),
             ("travels leftwards", "travel leftwards"), ("moves from right to left", "move from right to left")),
    "right": (("moves to the right", "move to the right"), ("slides right", "slide right"),
              ("travels rightwards", "travel rightwards"), ("moves from left to right", "move from left to right")),
    "up": (("moves up", "move up"), ("rises", "rise"), ("floats upwards", "float upwards"),
           ("travels to the top", "travel to the top")),
    "down": (("moves down", "move down"), ("falls", "fall"), ("sinks downwards", "sink downwards"),
             ("drops to the bottom", "drop to the bottom")),
    "grows": (("grows", "grow"), ("gets bigger", "get bigger"), ("expands", "expand")),
    "shrinks": (("shrinks", "shrink"), ("gets smaller", "get smaller"), ("contracts", "contract")),
    "spins": (("spins", "spin"), ("rotates", "rotate"), ("turns around", "turn around")),
    "still": (("stays still", "stay still"), ("does not move", "do not move"), ("sits motionless", "sit motionless")),
    "appears": (("appears", "appear"), ("pops up", "pop up"), ("shows up", "show up")),
    "disappears": (("disappears", "disappear"), ("vanishes", "vanish"), ("goes away", "go away")),
}
OPPOSITE_MOTION = {  # a motion twin swaps a motion for its opposite
    a: b for pair in (("left", "right"), ("up", "down"), ("grows", "shrinks"), ("appears", "disappears"),
                      ("spins", "still")) for a, b in (pair, pair[::-1])
}
# fmt: on
NUMBERS = {2: ("two", "a pair of"), 3: ("three", "a trio of")}
SPIN_DEG_PER_S = 40.0  # never a multiple of a shape's symmetry angle, so 1 fps samples show the turn
STRUCTURES = {"single": 0.35, "pair": 0.25, "sequence": 0.25, "count": 0.15}  # sampling weights
_MARGIN = 0.03  # gap between a shape and the frame edge
_AXIS = {"left": "h", "right": "h", "up": "v", "down": "v"}
# each split draws from its own random stream, so the test split does not change with n_train
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


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
        "size": None if motion in ("grows", "shrinks") else str(rng.choice(list(SIZES))),
        "motion": motion,
    }


def _sample_clip(rng: np.random.Generator, cfg: SyntheticConfig) -> dict:
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


def _make_twin(clip: dict, rng: np.random.Generator) -> tuple[dict, str] | None:
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
        if _describe(twin, canonical=True) != _describe(clip, canonical=True) and _valid(twin):
            return twin, str(attr)
    return None


# ---------------------------------------------------------------------------------------------------- captions


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(obj: dict, rng: np.random.Generator | None, count: int = 1) -> str:
    """Like "a small red circle", "a tiny disc colored crimson", "three big green boxes"; canonical if rng is None."""

    def pick(options):
        return options[0] if rng is None else options[int(rng.integers(len(options)))]

    colour, shape = pick(COLOURS[obj["colour"]][1]), pick(SHAPES[obj["shape"]])[0 if count == 1 else 1]
    size = pick(SIZES[obj["size"]]) + " " if obj["size"] else ""
    phrase = pick(
        [f"{size}{colour} {shape}", f"{size}{shape} in {colour}", f"{size}{shape} colored {colour}"]
    )
    if count == 1:
        return _article(phrase)
    return pick([f"{pick(NUMBERS[count])} {phrase}", f"a group of {NUMBERS[count][0]} {phrase}"])


def _clause(obj: dict, rng: np.random.Generator | None, count: int = 1) -> tuple[str, str]:
    """(noun phrase, verb phrase) of one object, or of `count` identical ones."""
    verbs = MOTIONS[obj["motion"]]
    verb = verbs[0 if rng is None else int(rng.integers(len(verbs)))][0 if count == 1 else 1]
    return _noun_phrase(obj, rng, count), verb


def _describe(clip: dict, canonical: bool = False, rng: np.random.Generator | None = None) -> str:
    """One caption naming every attribute that tells this clip apart; `canonical` gives the fixed wording."""
    rng = None if canonical else rng
    structure, objs = clip["structure"], clip["objects"]
    if structure in ("single", "count"):
        noun, verb = _clause(objs[0], rng, clip["count"])
        if rng is None:
            return f"{noun} {verb}"
        there = "there is" if clip["count"] == 1 else "there are"
        templates = [
            "{n} {v}",
            "on the screen, {n} {v}",
            "{n} {v} on a plain background",
            "in this clip {n} {v}",
            there + " {n} that {v}",
            "we see {n} that {v}",
        ]
        return templates[int(rng.integers(len(templates)))].format(n=noun, v=verb)
    first, second = (" ".join(_clause(o, rng)) for o in objs)
    if structure == "pair":
        if rng is None:
            return " while ".join(sorted([first, second]))
        if rng.random() < 0.5:
            first, second = second, first
        templates = ["{a} while {b}", "{a} and {b}", "at the same time, {a} and {b}", "{a}; meanwhile {b}"]
    else:  # sequence: the order of events matters, the order of words need not follow it
        if rng is None:
            return f"first {first}, then {second}"
        templates = [
            "first {a}, then {b}",
            "{a}, and after that {b}",
            "{a} before {b}",
            "after {a}, {b}",
            "{b} after {a}",
            "at first {a}; later {b}",
        ]
    return templates[int(rng.integers(len(templates)))].format(a=first, b=second)


def _captions(clip: dict, n: int, rng: np.random.Generator) -> list[str]:
    """n different paraphrases (fewer only if the templates run out)."""
    out: list[str] = []
    for _ in range(50 * n):
        caption = _describe(clip, rng=rng)
        if caption not in out:
            out.append(caption)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------------------------------------------- where things are


def _layout(clip: dict) -> list[dict]:
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


# ---------------------------------------------------------------------------------------------------- pixels

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


# ---------------------------------------------------------------------------------------------------- the benchmark


def _plan_split(rng: np.random.Generator, n: int, cfg: SyntheticConfig, unique: bool) -> list[dict]:
    """n clips, a `twin_fraction` share of them in twin pairs; `unique`: no two with the same canonical caption."""
    clips: list[dict] = []
    seen: set[str] = set()
    p_twin = cfg.twin_fraction / (
        2 - cfg.twin_fraction
    )  # a pair adds 2 clips: this gives the share asked for
    while len(clips) < n:
        clip = _sample_clip(rng, cfg)
        if unique and _describe(clip, canonical=True) in seen:
            continue
        group = [clip]
        if len(clips) + 2 <= n and rng.random() < p_twin:
            made = _make_twin(clip, rng)
            if made is not None and not (unique and _describe(made[0], canonical=True) in seen):
                twin, attr = made
                clip["twin_of"], twin["twin_of"] = len(clips) + 1, len(clips)
                clip["differs_in"] = twin["differs_in"] = attr
                group.append(twin)
        for c in group:
            c.setdefault("twin_of", None)
            c.setdefault("differs_in", None)
            seen.add(_describe(c, canonical=True))
            clips.append(c)
    for c in clips:
        c["captions"] = _captions(c, cfg.captions_per_train_clip if not unique else 1, rng)
    return clips


def _records(cfg: SyntheticConfig) -> list[dict]:
    """Every clip's attribute record, train then val then test, numbered video0, video1, ... as in MSR-VTT."""
    records: list[dict] = []
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        first = len(records)
        rng = np.random.default_rng([cfg.seed, _SPLIT_STREAM[split]])
        for clip in _plan_split(rng, n, cfg, unique=split != "train"):
            twin = clip["twin_of"]
            records.append(
                {
                    "video_id": f"video{len(records)}",
                    "split": split,
                    "structure": clip["structure"],
                    "count": clip["count"],
                    "background": clip["background"],
                    "duration_s": clip["duration_s"],
                    "fps": cfg.fps,
                    "num_frames": clip["duration_s"] * cfg.fps,
                    "resolution": cfg.resolution,
                    "objects": _layout(clip),
                    "twin_of": None if twin is None else f"video{first + twin}",
                    "differs_in": clip["differs_in"],
                    "canonical_caption": _describe(clip, canonical=True),
                    "captions": clip["captions"],
                }
            )
    return records


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _dump_record(record: dict) -> str:
    """JSON with one key per line and one object or caption per line: readable in an editor and in a diff."""
    lines = []
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], (dict, str)):
            items = ",\n".join("    " + json.dumps(item) for item in value)
            lines.append(f"  {json.dumps(key)}: [\n{items}\n  ]")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _write_annotations(root: Path, cfg: SyntheticConfig, records: list[dict]) -> None:
    """MSR-VTT's files (what DRL-family code reads), one attribute JSON per video, and synthetic.json."""
    for r in records:
        (root / "videos" / f"{r['video_id']}.json").write_text(_dump_record(r), encoding="utf-8")
    msrvtt_split = {"train": "train", "val": "validate", "test": "test"}
    data = {
        "info": {
            "description": "tvr_demo synthetic benchmark (coloured shapes)",
            "version": GENERATOR_VERSION,
        },
        "videos": [
            {
                "video_id": r["video_id"],
                "id": i,
                "split": msrvtt_split[r["split"]],
                "category": 0,
                "url": "",
                "start time": 0.0,
                "end time": float(r["duration_s"]),
            }
            for i, r in enumerate(records)
        ],
        "sentences": [
            {"caption": c, "video_id": r["video_id"], "sen_id": 0} for r in records for c in r["captions"]
        ],
    }
    for i, sentence in enumerate(data["sentences"]):
        sentence["sen_id"] = i
    (root / "MSRVTT_data.json").write_text(json.dumps(data) + "\n", encoding="utf-8")
    _write_csv(
        root / "MSRVTT_train.9k.csv",
        ["video_id"],
        [[r["video_id"]] for r in records if r["split"] == "train"],
    )
    for split in ("test", "val"):
        rows = [r for r in records if r["split"] == split]
        _write_csv(
            root / f"MSRVTT_JSFUSION_{split}.csv",
            ["key", "vid_key", "video_id", "sentence"],
            [
                [f"ret{i}", f"msr{r['video_id'][5:]}", r["video_id"], r["captions"][0]]
                for i, r in enumerate(rows)
            ],
        )
    meta = {
        "generator": "tvr_demo.data.synthetic",
        "version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "splits": {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")},
    }
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def generate(out: Path, config: SyntheticConfig, progress: bool = True, num_workers: int = 2) -> Path:
    """Write the benchmark to `out` (which must not exist or be empty); atomic: built beside it, then renamed."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} already exists and is not empty; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "videos").mkdir(parents=True)
    try:
        records = _records(config)
        _write_annotations(tmp, config, records)
        jobs = [(r, str(tmp / "videos" / f"{r['video_id']}.mp4"), config.crf) for r in records]
        with tqdm(
            total=len(jobs),
            desc="generating synthetic clips",
            unit="clip",
            file=sys.stderr,
            disable=not progress,
        ) as bar:
            if num_workers > 0:
                # fork where there is one: spawn would re-run an unguarded caller script in every worker; the
                # workers touch no torch, so locks a forked child might inherit from torch threads do not matter
                methods = multiprocessing.get_all_start_methods()
                context = multiprocessing.get_context("fork" if "fork" in methods else None)
                with context.Pool(num_workers) as pool:
                    for _ in pool.imap_unordered(_render_job, jobs, chunksize=8):
                        bar.update(1)
            else:
                for job in jobs:
                    _render_job(job)
                    bar.update(1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (out / "synthetic.json").is_file():  # another process finished the same dataset first
            return out
        raise
    return out


def ensure_default_dataset(progress: bool = True) -> Path:
    """The bundled benchmark's folder, generated with the default config on first use (a few minutes, once)."""
    from tvr_demo.paths import default_dataset_dir

    target = default_dataset_dir()
    if (target / "synthetic.json").is_file():
        return target
    return generate(target, SyntheticConfig(), progress=progress)
