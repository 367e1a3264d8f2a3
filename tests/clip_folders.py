"""Folders of real clips for the folder-gallery tests: the three MSR-VTT reference clips (one in a subfolder) beside a
corrupt file, with or without a captions.csv written from the rows of the 1k-A CSV that caption them."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

CLIPS = {"video7500.mp4": "video7500.mp4", "video9770.mp4": "video9770.mp4", "gym/video9771.mp4": "video9771.mp4"}
CORRUPT = "broken.mp4"  # the first 3,000 bytes of a real clip: a cut-off download


@dataclass(frozen=True)
class ClipGallery:
    folder: Path  # the clips, no captions
    captioned: Path  # the same clips with a captions.csv
    checkpoints: list[str]  # random tiny drl-wti and unify (tests/app_support.py)
    cache: Path

    @property
    def wti(self) -> str:
        return self.checkpoints[0]


def reference_captions(reference: Path) -> dict[str, str]:
    """video id -> its caption, from the 1k-A CSV's rows for the three clips."""
    wanted = {Path(name).stem for name in CLIPS.values()}
    with (reference / "MSRVTT_JSFUSION_test.csv").open(newline="") as f:
        return {row["video_id"]: row["sentence"] for row in csv.DictReader(f) if row["video_id"] in wanted}


def clip_folder(root: Path, reference: Path, captions: bool) -> Path:
    """The three clips copied in (gym/ a subfolder) and the corrupt file; with captions, a captions.csv whose video
    column names each clip as the CSV does (by its stem)."""
    for relative, name in CLIPS.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reference / name, root / relative)
    (root / CORRUPT).write_bytes((reference / "video7500.mp4").read_bytes()[:3000])
    if captions:
        with (root / "captions.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video", "caption"])
            writer.writerows(reference_captions(reference).items())
    return root
