"""The annotation files: MSR-VTT's JSON and CSVs, one attribute JSON per video, and synthetic.json."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvr_demo.data.synthetic import SyntheticConfig


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


def write_annotations(root: Path, cfg: SyntheticConfig, records: list[dict], version: int,
                      rendered: list[str]) -> None:
    """MSR-VTT's files (what DRL-family code reads), one attribute JSON per video, and synthetic.json (which also
    records the splits whose clips are rendered)."""
    for r in records:
        (root / "videos" / f"{r['video_id']}.json").write_text(_dump_record(r), encoding="utf-8")
    msrvtt_split = {"train": "train", "val": "validate", "test": "test"}
    data = {
        "info": {
            "description": "tvr_demo synthetic benchmark (coloured shapes)",
            "version": version,
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
        "version": version,
        "config": asdict(cfg),
        "splits": {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")},
        "rendered": list(rendered),
    }
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
