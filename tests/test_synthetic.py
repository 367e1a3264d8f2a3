"""The synthetic benchmark: MSR-VTT layout, determinism, decodable clips, captions that name every attribute."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import decord
import numpy as np
import pytest

from tvr_demo.data import load_benchmark, synthetic
from tvr_demo.data.synthetic import COLOURS, MOTIONS, NUMBERS, SHAPES, SIZES, SyntheticConfig, generate
from tvr_demo.errors import DatasetError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY = SyntheticConfig(seed=3, n_train=12, n_test=8, n_val=4)
ANNOTATIONS = [
    "MSRVTT_data.json",
    "MSRVTT_train.9k.csv",
    "MSRVTT_JSFUSION_test.csv",
    "MSRVTT_JSFUSION_val.csv",
    "synthetic.json",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic") / "tiny", TINY, progress=False)


def _words(*tables) -> set[str]:
    return {w for table in tables for w in table}


def _mentions(caption: str, phrases) -> bool:
    return any(re.search(rf"\b{re.escape(p)}\b", caption) for p in phrases)


def _check_caption(caption: str, record: dict) -> None:
    """Every attribute that tells the clip apart appears in the caption, in one of its wordings."""
    for obj in record["objects"]:
        assert _mentions(caption, COLOURS[obj["colour"]][1]), (caption, obj)
        assert _mentions(caption, [w for pair in SHAPES[obj["shape"]] for w in pair]), (caption, obj)
        if obj["size"] is not None:
            assert _mentions(caption, SIZES[obj["size"]]), (caption, obj)
        assert _mentions(caption, [w for pair in MOTIONS[obj["motion"]] for w in pair]), (caption, obj)
    if record["structure"] == "count":
        assert _mentions(caption, NUMBERS[record["count"]]), caption
    if record["structure"] == "sequence":
        assert _mentions(caption, ["first", "then", "after", "before", "later"]), caption


def test_layout_is_msrvtt_and_loads(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == sorted([*ANNOTATIONS, "videos"])
    assert not list(tiny.parent.glob(".tiny.tmp-*"))  # the build folder was renamed into place
    test = load_benchmark(tiny)
    assert test.name == "synthetic" and test.num_videos == test.num_captions == 8
    assert test.video_ids == [f"video{i}" for i in range(16, 24)]  # train, then val, then test, as numbered
    train, val = load_benchmark(tiny, "train"), load_benchmark(tiny, "val")
    assert train.num_videos == 12 and train.num_captions == 12 * TINY.captions_per_train_clip
    assert all(len(train.captions_of(v)) == TINY.captions_per_train_clip for v in range(12))
    assert val.num_videos == 4 and val.video_ids == [f"video{i}" for i in range(12, 16)]
    header = (tiny / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[0]
    assert header == "key,vid_key,video_id,sentence"
    meta = json.loads((tiny / "synthetic.json").read_text())
    assert meta["config"] == json.loads(json.dumps(TINY.__dict__)) and meta["splits"] == {
        "train": 12,
        "val": 4,
        "test": 8,
    }


def test_attribute_records(tiny):
    for split in ("train", "val", "test"):
        bench = load_benchmark(tiny, split)
        for v, record in enumerate(bench.attributes):
            assert record["video_id"] == bench.video_ids[v] and record["split"] == split
            assert record["structure"] in ("single", "pair", "sequence", "count")
            assert len(record["objects"]) == record["count"] >= 1
            assert record["background"] in synthetic.BACKGROUNDS
            assert TINY.min_duration_s <= record["duration_s"] <= TINY.max_duration_s
            for obj in record["objects"]:
                assert {"colour", "shape", "size", "motion", "start", "end"} <= obj.keys()
                assert all(0 <= c <= 1 for c in obj["start"] + obj["end"])
                assert not (obj["motion"] == "spins" and obj["shape"] == "circle")
            assert [bench.captions[c] for c in bench.captions_of(v)] == record["captions"]
            for caption in [*record["captions"], record["canonical_caption"]]:
                _check_caption(caption, record)


def test_clips_decode_with_expected_frames(tiny):
    bench = load_benchmark(tiny)
    for path, record in zip(bench.video_paths, bench.attributes, strict=True):
        reader = decord.VideoReader(str(path))
        assert len(reader) == record["num_frames"] == record["duration_s"] * record["fps"]
        assert reader.get_avg_fps() == record["fps"]
        frame = reader[len(reader) // 2].asnumpy()
        assert frame.shape == (record["resolution"], record["resolution"], 3)
        # the decoded frame is the rendered one up to H.264 loss
        rendered = synthetic.render_frames(record)[len(reader) // 2]
        assert np.abs(frame.astype(int) - rendered.astype(int)).mean() < 6


def test_same_seed_same_bytes(tmp_path, tiny):
    again = generate(tmp_path / "again", TINY, progress=False, num_workers=0)
    for name in ANNOTATIONS:
        assert (again / name).read_bytes() == (tiny / name).read_bytes(), name
    for path in sorted((tiny / "videos").glob("*.json")):
        assert (again / "videos" / path.name).read_bytes() == path.read_bytes(), path.name
    other = generate(tmp_path / "other", replace(TINY, seed=4), progress=False)
    assert (other / "MSRVTT_data.json").read_bytes() != (tiny / "MSRVTT_data.json").read_bytes()


def test_test_split_is_well_posed_and_has_twins():
    """Plan a full-size test split (no rendering): distinct canonical captions, twins differing in one attribute."""
    records = [r for r in synthetic._records(SyntheticConfig(n_train=0, n_val=0)) if r["split"] == "test"]
    assert len(records) == 1000
    assert len({r["canonical_caption"] for r in records}) == 1000
    by_id = {r["video_id"]: r for r in records}
    twins = [r for r in records if r["twin_of"] is not None]
    assert 0.3 < len(twins) / len(records) < 0.5
    assert {r["differs_in"] for r in twins} == {"colour", "shape", "size", "motion", "order", "count"}
    for r in twins:
        other = by_id[r["twin_of"]]
        assert other["twin_of"] == r["video_id"] and other["differs_in"] == r["differs_in"]
        assert (other["duration_s"], other["background"]) == (r["duration_s"], r["background"])
        changed = {
            k
            for a, b in zip(r["objects"], other["objects"], strict=False)
            for k in ("colour", "shape", "size", "motion")
            if a[k] != b[k]
        }
        if r["differs_in"] in ("colour", "shape", "size", "motion"):
            assert changed == {r["differs_in"]}, (r, other)
    frames_seen = {min(12, -(-r["num_frames"] // r["fps"])) for r in records}
    assert min(frames_seen) < 12 and 12 in frames_seen  # some clips are padded at DRL's 1 fps, 12 frames


def test_captions_fit_the_text_context():
    """DRL keeps 30 BPE tokens after SOT: a longer caption would lose the attributes at its end."""
    from open_clip.tokenizer import SimpleTokenizer

    records = synthetic._records(SyntheticConfig(n_train=2000, n_val=0, n_test=0))
    longest = sorted({c for r in records for c in r["captions"]}, key=len)[-200:]  # tokens grow with length
    assert max(len(SimpleTokenizer().encode(c)) for c in longest) <= 30


def test_refuses_to_overwrite(tiny):
    with pytest.raises(DatasetError, match="not empty"):
        generate(tiny, TINY, progress=False)


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(job):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(synthetic, "_render_job", broken)
    with pytest.raises(RuntimeError):
        generate(tmp_path / "out", TINY, progress=False, num_workers=0)
    assert list(tmp_path.iterdir()) == []


def test_ensure_default_dataset_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TVR_DEMO_DATA", str(tmp_path))
    monkeypatch.setattr(synthetic, "SyntheticConfig", lambda: replace(TINY, n_train=2, n_test=2, n_val=2))
    first = synthetic.ensure_default_dataset(progress=False)
    assert first == tmp_path / "synthetic" and (first / "synthetic.json").is_file()
    stamp = (first / "synthetic.json").stat().st_mtime_ns
    assert synthetic.ensure_default_dataset(progress=False) == first
    assert (first / "synthetic.json").stat().st_mtime_ns == stamp


def test_test_split_first_then_the_others_on_request(tiny, tmp_path):
    """A first start renders the test clips alone; the training split, asked for later, comes out byte for byte as a
    full generation writes it, and the annotations never change."""
    lazy = generate(tmp_path / "lazy", TINY, progress=False, splits=("test",))
    full = {p.name: p.read_bytes() for p in (tiny / "videos").iterdir()}
    test_ids = set(load_benchmark(tiny, "test").video_ids)
    assert {p.stem for p in (lazy / "videos").glob("*.mp4")} == test_ids
    assert all((lazy / "videos" / name).read_bytes() == data for name, data in full.items() if name.endswith(".json"))
    assert load_benchmark(lazy, "test").video_ids == load_benchmark(tiny, "test").video_ids
    with pytest.raises(DatasetError, match="train split of lazy is not rendered yet"):
        load_benchmark(lazy, "train")
    synthetic.render_splits(lazy, ("train",), progress=False, num_workers=0)
    train = load_benchmark(lazy, "train")
    assert train.captions == load_benchmark(tiny, "train").captions and all(p.is_file() for p in train.video_paths)
    assert {p.name: p.read_bytes() for p in (lazy / "videos").glob("*.mp4")} == {
        n: d for n, d in full.items() if n.endswith(".mp4") and Path(n).stem not in
        set(load_benchmark(tiny, "val").video_ids)}
    assert synthetic.rendered_splits(lazy) == ("train", "test")
    assert not list(tmp_path.glob(".lazy.render-*"))


def test_ensure_default_dataset_renders_what_is_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("TVR_DEMO_DATA", str(tmp_path))
    small = functools.partial(SyntheticConfig, seed=3, n_train=2, n_test=2, n_val=2)  # and rebuilt from its fields
    monkeypatch.setattr(synthetic, "SyntheticConfig", small)
    root = synthetic.ensure_default_dataset(progress=False)
    assert synthetic.rendered_splits(root) == ("test",) and len(list((root / "videos").glob("*.mp4"))) == 2
    synthetic.ensure_default_dataset(progress=False, splits=("train", "val"))
    assert synthetic.rendered_splits(root) == ("train", "val", "test")
    assert len(list((root / "videos").glob("*.mp4"))) == 6


def test_generate_cli(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tvr_demo",
            "generate",
            "--out",
            str(out),
            "--n-train",
            "3",
            "--n-test",
            "3",
            "--seed",
            "5",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"out": str(out)}
    assert "generating synthetic clips" in result.stderr  # the progress bar goes to stderr
    assert load_benchmark(out).num_videos == 3 and load_benchmark(out, "train").num_videos == 3
    again = subprocess.run(
        [sys.executable, "-m", "tvr_demo", "generate", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert again.returncode == 2 and str(out) in again.stderr and len(again.stderr.strip().splitlines()) == 1
