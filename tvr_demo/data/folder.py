"""A folder of one's own clips as a gallery: every video file under it, each subfolder a slice, and the captions of
an optional `captions.csv` beside the clips as ground truth. Without captions the gallery still searches, explains
and maps; the views that need ground truth say so (`require_captions`)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from tvr_demo.data.benchmark import Benchmark
from tvr_demo.errors import DatasetError

# Every container decord opens (each written by PyAV and read back by decord in tests/test_folder_gallery.py); a file
# with one of these names that turns out not to be a video is skipped by the encoder with its reason.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".f4v", ".mkv", ".webm", ".avi", ".divx", ".flv", ".wmv",
                    ".asf", ".mpg", ".mpeg", ".vob", ".ts", ".m2ts", ".mts", ".mxf", ".y4m")
CAPTIONS_FILE = "captions.csv"
CAPTION_COLUMNS = ("video", "caption")
FOLDER_SPLIT = "all"  # a folder has one split, whichever the caller asks for
TOP_LEVEL = "(top level)"  # the slice of the clips directly in the folder


def is_video_file(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith(".")


def _video_files(root: Path):
    """(folder, video file names) under `root` at any depth, hidden files and folders skipped; a folder reached twice
    through symlinks is read once."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield Path(dirpath), [name for name in filenames if is_video_file(name)]


def find_videos(root: Path) -> list[Path]:
    """Every video file under `root`, sorted by its path relative to `root`."""
    found = [folder / name for folder, names in _video_files(root) for name in names]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def has_videos(root: Path) -> bool:
    """Whether any video file lies under `root` (stops at the first one)."""
    return any(names for _, names in _video_files(root))


def slice_of(video_id: str) -> str:
    """A clip's slice: the subfolder it lies in ("cats" for cats/a.mp4, "cats/indoor" deeper), else TOP_LEVEL."""
    parent = Path(video_id).parent.as_posix()
    return TOP_LEVEL if parent == "." else parent


class _VideoNames:
    """How a captions.csv row may name a clip: its id (the path relative to the folder), the id without its
    extension, or, when no other clip shares it, its file name with or without extension."""

    def __init__(self, video_ids: list[str]) -> None:
        self.exact: dict[str, int] = {}
        self.loose: dict[str, set[int]] = {}
        for i, vid in enumerate(video_ids):
            path = Path(vid)
            self.exact[vid] = i
            self.exact.setdefault(path.with_suffix("").as_posix(), i)
            for name in (path.name, path.stem):
                self.loose.setdefault(name, set()).add(i)

    def find(self, name: str, where: str, video_ids: list[str]) -> int:
        name = name.strip().replace("\\", "/").removeprefix("./")
        if name in self.exact:
            return self.exact[name]
        matches = sorted(self.loose.get(name, ()))
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise DatasetError(f"{where} names the video {name!r}, which could be any of "
                               f"{', '.join(video_ids[i] for i in matches[:3])}: give its path inside the folder")
        raise DatasetError(f"{where} names the video {name!r}, which is not in the folder: give a clip's path inside "
                           f"the folder (e.g. {video_ids[0]!r}) or its file name")


def read_captions(path: Path, video_ids: list[str]) -> list[tuple[int, str]]:
    """(video index, caption) per row of a captions.csv, in file order; a video may have several rows."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in CAPTION_COLUMNS if c not in header]
            if missing:
                raise DatasetError(f"{path.name} needs the columns video,caption in its first line; found "
                                   f"{','.join(header) or 'no header'}")
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path.name} is not UTF-8 text: {err.reason} at byte {err.start}") from None
    names, pairs = _VideoNames(video_ids), []
    for line, row in enumerate(rows, start=2):
        caption = " ".join(row["caption"].split())
        if not caption:
            raise DatasetError(f"{path.name} line {line} has an empty caption")
        pairs.append((names.find(row["video"], f"{path.name} line {line}", video_ids), caption))
    return pairs


def load_folder(root: Path) -> Benchmark:
    """All the clips under `root`, ids their paths relative to it; captions from its captions.csv when present.
    Clips that a caption names nowhere stay in the gallery (as distractors, and as queries of video search)."""
    root = Path(root)
    paths = find_videos(root)
    if not paths:
        raise DatasetError(f"{root.name}/ holds no video files (looked for {', '.join(VIDEO_EXTENSIONS)} in it and "
                           "its subfolders)")
    video_ids = [p.relative_to(root).as_posix() for p in paths]
    captions_path = root / CAPTIONS_FILE
    pairs = read_captions(captions_path, video_ids) if captions_path.is_file() else []
    return Benchmark(name="folder", root=root, split=FOLDER_SPLIT, video_ids=video_ids, video_paths=paths,
                     captions=[c for _, c in pairs], caption_video=np.array([v for v, _ in pairs], dtype=np.int64),
                     folders=[slice_of(vid) for vid in video_ids])


def missing_captions(bench: Benchmark, what: str) -> str | None:
    """The one sentence that refuses `what` on a gallery without captions, naming the file that would turn it on;
    None when the gallery has captions."""
    if bench.num_captions:
        return None
    if bench.name == "folder":
        return (f"{what} needs captions, and {bench.root.name}/ has none: a {CAPTIONS_FILE} beside the clips "
                "(columns video,caption; one row per caption) turns it on")
    return f"{what} needs captions, and {bench.name}/{bench.split} has none"


def require_captions(bench: Benchmark, what: str) -> None:
    """Refuse a view that needs captions (ground truth, or the texts of video -> text search) on a gallery without
    any, in one sentence."""
    sentence = missing_captions(bench, what)
    if sentence is not None:
        raise DatasetError(sentence)
