"""Read the six benchmarks in the annotation layouts the CLIP4Clip family (and so DRL) uses, plus our synthetic one;
a folder with none of their annotation files but with video files is a gallery of one's own clips (data/folder.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tvr_demo.data.benchmark import Benchmark
from tvr_demo.data.folder import CAPTIONS_FILE, VIDEO_EXTENSIONS, has_videos, load_folder
from tvr_demo.errors import DatasetError

DIDEMO_END_S = 31.0  # CLIP4Clip's DiDeMo loader reads every video from 0 to 31 s (annotations stop at 30 s)
_MAX_VIDEO_DEPTH = (
    3  # root/MSRVTT/videos/all/*.mp4 and root/avi/<movie>/<clip>.avi are the deepest layouts in use
)


# ---------------------------------------------------------------------------------------------------- file helpers


def _require(root: Path, name: str, what: str) -> Path:
    path = root / name
    if not path.is_file():
        raise DatasetError(f"missing annotation file {path} ({what})")
    return path


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path} lacks column(s) {', '.join(missing)}: expected a header with "
                f"{', '.join(columns)}, found {', '.join(reader.fieldnames or []) or 'no header'}"
            )
        return list(reader)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON: {err}") from err


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class _PlainUnpickler(pickle.Unpickler):
    """Loads only dicts, lists and strings: a caption pickle has no business importing code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_pickle(path: Path):
    try:
        return _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as err:
        raise DatasetError(f"{path} is not a plain caption pickle (a dict of caption lists): {err}") from err


def _field(record, key: str, path: Path):
    if not isinstance(record, dict) or key not in record:
        raise DatasetError(f"{path}: an entry lacks the field {key!r}: {str(record)[:120]}")
    return record[key]


# ---------------------------------------------------------------------------------------------------- videos on disk


class _VideoIndex:
    """Every video file under root (a few levels deep), found by file name or by name without extension."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            depth = len(Path(dirpath).relative_to(root).parts)
            dirnames[:] = (
                sorted(d for d in dirnames if not d.startswith(".")) if depth < _MAX_VIDEO_DEPTH else []
            )
            for name in sorted(filenames):
                if name.lower().endswith(VIDEO_EXTENSIONS):
                    path = Path(dirpath) / name
                    self.by_name.setdefault(name, path)
                    self.by_stem.setdefault(name.rsplit(".", 1)[0], path)
        self.default_dir = root / "videos" if (root / "videos").is_dir() else root

    def find(self, video_id: str, *aliases: str) -> Path:
        """The file of this video, or where it would be expected when it is not on disk."""
        for key in (video_id, *aliases):
            if key in self.by_name:
                return self.by_name[key]
            stem = key.rsplit(".", 1)[0] if key.lower().endswith(VIDEO_EXTENSIONS) else key
            if stem in self.by_stem:
                return self.by_stem[stem]
        return self.default_dir / (
            video_id if video_id.lower().endswith(VIDEO_EXTENSIONS) else f"{video_id}.mp4"
        )


def _assemble(
    name: str,
    root: Path,
    split: str,
    pairs: list[tuple[str, str]],
    video_order: list[str] | None = None,
    aliases: Callable[[str], tuple[str, ...]] = lambda vid: (),
    end_s: float | None = None,
) -> Benchmark:
    """(video_id, caption) pairs in row order -> Benchmark; videos in `video_order` or first-mention order."""
    video_ids = list(dict.fromkeys(video_order if video_order is not None else [v for v, _ in pairs]))
    position = {vid: i for i, vid in enumerate(video_ids)}
    index = _VideoIndex(root)
    return Benchmark(
        name=name,
        root=root,
        split=split,
        video_ids=video_ids,
        video_paths=[index.find(vid, *aliases(vid)) for vid in video_ids],
        captions=[caption for _, caption in pairs],
        caption_video=np.array([position[vid] for vid, _ in pairs], dtype=np.int64),
        end_s=end_s,
    )


# ---------------------------------------------------------------------------------------------------- formats


def _load_msrvtt(root: Path, split: str) -> Benchmark:
    """1k-A test/val: one caption per CSV row, row order kept. Train: every caption of the 9k videos (CLIP4Clip's
    `expand_msrvtt_sentences`)."""
    if split in ("test", "val"):
        path = _require(
            root, f"MSRVTT_JSFUSION_{split}.csv", f"the MSR-VTT {split} split: key,vid_key,video_id,sentence"
        )
        rows = _read_csv(path, ("video_id", "sentence"))
        return _assemble("msrvtt", root, split, [(r["video_id"], r["sentence"]) for r in rows])
    if split == "train":
        train_csv = _require(root, "MSRVTT_train.9k.csv", "the MSR-VTT training videos: a video_id column")
        data_json = _require(
            root, "MSRVTT_data.json", 'MSR-VTT captions: {"sentences": [{"video_id", "caption"}]}'
        )
        train_ids = [r["video_id"] for r in _read_csv(train_csv, ("video_id",))]
        wanted = set(train_ids)
        sentences = _field(_read_json(data_json), "sentences", data_json)
        pairs = [(_field(s, "video_id", data_json), _field(s, "caption", data_json)) for s in sentences]
        return _assemble(
            "msrvtt", root, split, [(v, c) for v, c in pairs if v in wanted], video_order=train_ids
        )
    raise DatasetError(f"MSR-VTT has the splits train, val and test, not {split!r}")


def _listed_caption_pairs(ids: list[str], captions: dict, captions_path: Path, split: str) -> list[tuple]:
    """(video, caption) for every caption of every listed video, in list order (MSVD, VATEX)."""
    pairs = []
    for vid in ids:
        if vid not in captions:
            raise DatasetError(f"{captions_path} has no captions for video {vid!r} listed in {split}_list.txt")
        pairs += [(vid, cap) for cap in captions[vid]]
    return pairs


def _load_msvd(root: Path, split: str) -> Benchmark:
    """raw-captions.pkl ({video: [[token, ...], ...]}) with {split}_list.txt; every caption is a query."""
    ids = _read_list(_require(root, f"{split}_list.txt", f"the MSVD {split} video ids, one per line"))
    captions_path = _require(
        root, "raw-captions.pkl", "MSVD captions: a pickled dict of token lists per video"
    )
    captions = _read_pickle(captions_path)
    pairs = _listed_caption_pairs(ids, captions, captions_path, split)
    pairs = [(vid, cap if isinstance(cap, str) else " ".join(cap)) for vid, cap in pairs]
    return _assemble("msvd", root, split, pairs, video_order=ids)


def _load_vatex(root: Path, split: str) -> Benchmark:
    """ref_captions.json ({video: [caption, ...]}) with {split}_list.txt (TS2-Net/CLIP2Video layout)."""
    ids = _read_list(_require(root, f"{split}_list.txt", f"the VATEX {split} video ids, one per line"))
    captions_path = _require(root, "ref_captions.json", "VATEX English captions: {video_id: [caption, ...]}")
    captions = _read_json(captions_path)
    return _assemble("vatex", root, split, _listed_caption_pairs(ids, captions, captions_path, split), video_order=ids)


def _load_didemo(root: Path, split: str) -> Benchmark:
    """{split}_data.json moments; CLIP4Clip joins a video's descriptions (in file order) into one paragraph query.
    {split}_list.txt, when present, restricts the videos as CLIP4Clip does. Videos are read over 0-31 s as there:
    the annotators saw only the first 30 s of longer videos."""
    data_path = _require(
        root, f"{split}_data.json", 'DiDeMo moments: [{"video", "description", "times"}, ...]'
    )
    listed = set(_read_list(root / f"{split}_list.txt")) if (root / f"{split}_list.txt").is_file() else None
    paragraphs: dict[str, list[str]] = {}
    for moment in _read_json(data_path):
        vid = _field(moment, "video", data_path)
        if listed is None or vid in listed:
            paragraphs.setdefault(vid, []).append(_field(moment, "description", data_path).strip())
    pairs = [(vid, " ".join(texts)) for vid, texts in paragraphs.items()]
    return _assemble("didemo", root, split, pairs, end_s=DIDEMO_END_S)


_LSMDC_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}


def _load_lsmdc(root: Path, split: str) -> Benchmark:
    """Tab-separated clip_id, 4 timestamps, sentence; one query per line (the 1,000-clip public test for "test")."""
    if split not in _LSMDC_FILES:
        raise DatasetError(f"LSMDC has the splits {', '.join(_LSMDC_FILES)}, not {split!r}")
    path = _require(root, _LSMDC_FILES[split], "LSMDC: tab-separated clip_id, 4 timestamps, sentence")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != 6:
            raise DatasetError(
                f"{path} line {n}: expected 6 tab-separated fields (clip_id, start_aligned, "
                f"end_aligned, start_extracted, end_extracted, sentence), found {len(fields)}"
            )
        pairs.append((fields[0], fields[5]))
    return _assemble("lsmdc", root, split, pairs)


def _load_activitynet(root: Path, split: str) -> Benchmark:
    """Paragraph-to-video: each video's sentences joined. "test" means val_1, the split the field reports on."""
    names = {"train": ("train_ids.json", "train.json"), "val": ("val_ids.json", "val_1.json")}
    if split not in ("train", "val", "test"):
        raise DatasetError(f"ActivityNet Captions has the splits train and val (test = val), not {split!r}")
    ids_name, captions_name = names["val" if split == "test" else split]
    ids = _read_json(_require(root, ids_name, 'ActivityNet video ids: ["v_...", ...]'))
    captions_path = _require(root, captions_name, 'ActivityNet captions: {"v_...": {"sentences": [...]}}')
    captions = _read_json(captions_path)
    pairs = [
        (vid, " ".join(s.strip() for s in _field(captions[vid], "sentences", captions_path)))
        for vid in dict.fromkeys(ids)
        if vid in captions
    ]
    # CLIP4Clip finds the file of "v_abc" under the name "abc"; downloads also keep the prefix
    return _assemble(
        "activitynet", root, split, pairs, aliases=lambda vid: (vid[2:],) if vid.startswith("v_") else ()
    )


def _load_synthetic(root: Path, split: str) -> Benchmark:
    """MSR-VTT's layout, plus each video's ground-truth attributes from the JSON beside it."""
    rendered = _read_json(root / "synthetic.json").get("rendered")
    if rendered is not None and split in ("train", "val", "test") and split not in rendered:
        raise DatasetError(f"the {split} split of {root.name} is not rendered yet (the bundled benchmark renders "
                           "each split on first use: choose it in the app's Split menu), or write a whole benchmark "
                           "with `python -m tvr_demo generate --out DIR`")
    bench = _load_msrvtt(root, split)
    attributes = []
    for path in bench.video_paths:
        json_path = path.with_suffix(".json")
        if not json_path.is_file():
            raise DatasetError(
                f"missing attribute file {json_path} of the synthetic benchmark; regenerate it "
                "with `python -m tvr_demo generate`"
            )
        attributes.append(_read_json(json_path))
    bench.name, bench.attributes = "synthetic", attributes
    return bench


_LOADERS: dict[str, Callable[[Path, str], Benchmark]] = {
    "synthetic": _load_synthetic,
    "msrvtt": _load_msrvtt,
    "msvd": _load_msvd,
    "vatex": _load_vatex,
    "lsmdc": _load_lsmdc,
    "activitynet": _load_activitynet,
    "didemo": _load_didemo,
    "folder": lambda root, split: load_folder(root),  # one split: the folder as it is
}

# The files that identify each layout, checked in this order (the synthetic one is also an MSR-VTT layout).
_MARKERS: dict[str, tuple[str, ...]] = {
    "synthetic": ("synthetic.json",),
    "msrvtt": ("MSRVTT_JSFUSION_test.csv", "MSRVTT_data.json", "MSRVTT_train.9k.csv"),
    "msvd": ("raw-captions.pkl",),
    "vatex": ("ref_captions.json",),
    "lsmdc": tuple(_LSMDC_FILES.values()),
    "activitynet": ("train_ids.json", "val_ids.json", "val_1.json"),
    "didemo": ("train_data.json", "val_data.json", "test_data.json"),
}


def detect_kind(root: Path) -> str:
    """Which benchmark layout `root` holds, from the annotation files present; "folder" when it has none of them but
    holds video files (at any depth)."""
    for kind, markers in _MARKERS.items():
        if any((root / m).is_file() for m in markers):
            return kind
    if has_videos(root):
        return "folder"
    expected = "; ".join(f"{kind}: {' or '.join(markers)}" for kind, markers in _MARKERS.items())
    raise DatasetError(
        f"{root} holds no video files and no known benchmark annotations: give a folder of clips (with an optional "
        f"{CAPTIONS_FILE}), or a benchmark folder with one of these files ({expected})"
    )


def load_benchmark(root: Path, split: str = "test", kind: str | None = None) -> Benchmark:
    """Load one split of the benchmark in `root`; the format is detected from its files unless `kind` is given."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"benchmark folder not found: {root}")
    kind = detect_kind(root) if kind is None else kind
    if kind not in _LOADERS:
        raise DatasetError(f"unknown benchmark kind {kind!r}; expected one of {', '.join(_LOADERS)}")
    return _LOADERS[kind](root, split)
