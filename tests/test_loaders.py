"""Each benchmark format on a small hand-written fixture, MSR-VTT 1k-A on the real file, and DiDeMo's 0-31 s window."""

from __future__ import annotations

import csv
import dataclasses
import json
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import build_model, tiny_config

from tvr_demo.data import Benchmark, detect_kind, load_benchmark
from tvr_demo.data.video import FrameSampling, load_video, sample_video
from tvr_demo.errors import DatasetError
from tvr_demo.models.checkpoints import Checkpoint, save_checkpoint
from tvr_demo.retrieval.gallery import GalleryEncoder, encode_gallery
from tvr_demo.training.framecache import cached_frames


def _touch_videos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"\x00")


def _pairs(bench: Benchmark) -> list[tuple[str, str]]:
    """(ground-truth video id, caption) per caption: the loaders' whole contract in one list."""
    return [(bench.video_ids[v], c) for v, c in zip(bench.caption_video, bench.captions, strict=True)]


def test_msrvtt_1k_a_real_file(msrvtt_reference):
    bench = load_benchmark(msrvtt_reference)
    assert (bench.name, bench.split) == ("msrvtt", "test")
    assert bench.num_captions == 1000 and bench.num_videos == 1000
    with (msrvtt_reference / "MSRVTT_JSFUSION_test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert _pairs(bench) == [(r["video_id"], r["sentence"]) for r in rows]  # row order is the matrix order
    assert bench.captions[154] == "a soccer team walking out on the field"
    assert bench.video_ids[154] == "video7500" and bench.captions_of(154) == [154]
    assert bench.video_paths[154] == msrvtt_reference / "video7500.mp4" and bench.video_paths[154].is_file()
    assert bench.video_paths[0] == msrvtt_reference / "video9770.mp4"  # row ret0
    # the videos not on disk are kept (the encoder reports them); those on disk are the reference clips
    on_disk = {bench.video_ids[i] for i, p in enumerate(bench.video_paths) if p.is_file()}
    assert on_disk == {p.stem for p in msrvtt_reference.glob("*.mp4")} and len(on_disk) >= 1
    assert bench.caption_video.dtype == np.int64 and bench.attributes is None


def _write_msrvtt(root: Path) -> None:
    with (root / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        w.writerows(
            [["ret0", "msr9", "video9", "a dog, running"], ["ret1", "msr7", "video7", "a cat sleeps"]]
        )
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo1\nvideo0\n")
    sentences = [("video0", "zero a"), ("video9", "nine"), ("video1", "one a"), ("video0", "zero b")]
    data = {
        "videos": [],
        "sentences": [{"video_id": v, "caption": c, "sen_id": i} for i, (v, c) in enumerate(sentences)],
    }
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    _touch_videos(root / "MSRVTT_Videos" / "all", ["video9.mp4", "video0.mp4"])


def test_msrvtt_layout(tmp_path):
    _write_msrvtt(tmp_path)
    assert detect_kind(tmp_path) == "msrvtt"
    test = load_benchmark(tmp_path)
    assert _pairs(test) == [("video9", "a dog, running"), ("video7", "a cat sleeps")]
    assert test.video_paths[0] == tmp_path / "MSRVTT_Videos" / "all" / "video9.mp4"
    assert test.video_paths[1] == tmp_path / "video7.mp4" and not test.video_paths[1].exists()
    train = load_benchmark(tmp_path, "train")
    assert train.video_ids == ["video1", "video0"]  # the train CSV's order
    assert _pairs(train) == [("video0", "zero a"), ("video1", "one a"), ("video0", "zero b")]  # every caption
    assert train.captions_of(1) == [0, 2]
    assert test.end_s is None and train.end_s is None  # whole clips
    with pytest.raises(DatasetError, match="MSRVTT_JSFUSION_val.csv"):
        load_benchmark(tmp_path, "val")


def test_msrvtt_missing_column_names_file(tmp_path):
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video\nret0,msr1,video1\n")
    with pytest.raises(DatasetError) as err:
        load_benchmark(tmp_path)
    assert (
        "MSRVTT_JSFUSION_test.csv" in str(err.value)
        and "video_id" in str(err.value)
        and "sentence" in str(err.value)
    )


def test_msvd_layout(tmp_path):
    captions = {
        "vidA_1_5": [["a", "man", "sings"], ["someone", "sings"]],
        "vidB_0_9": [["a", "cat"]],
        "vidC": [["unused"]],
    }
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    (tmp_path / "test_list.txt").write_text("vidB_0_9\nvidA_1_5\n")
    _touch_videos(tmp_path / "YouTubeClips", ["vidA_1_5.avi", "vidB_0_9.avi", "vidC.avi"])
    bench = load_benchmark(tmp_path)
    assert bench.name == "msvd" and bench.video_ids == ["vidB_0_9", "vidA_1_5"]
    assert _pairs(bench) == [
        ("vidB_0_9", "a cat"),
        ("vidA_1_5", "a man sings"),
        ("vidA_1_5", "someone sings"),
    ]
    assert bench.captions_of(1) == [1, 2]
    assert bench.video_paths[1] == tmp_path / "YouTubeClips" / "vidA_1_5.avi"
    assert bench.end_s is None


def test_msvd_pickle_with_code_is_refused(tmp_path):
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"v": [np.array(["a"])]}))
    (tmp_path / "test_list.txt").write_text("v\n")
    with pytest.raises(DatasetError, match="raw-captions.pkl"):
        load_benchmark(tmp_path)


def test_vatex_layout(tmp_path):
    captions = {
        "abc_000010_000020": ["A girl dances.", "A child is dancing."],
        "xyz_000001_000011": ["Rain."],
    }
    (tmp_path / "ref_captions.json").write_text(json.dumps(captions))
    (tmp_path / "test_list.txt").write_text("xyz_000001_000011\nabc_000010_000020\n")
    _touch_videos(tmp_path / "videos", ["abc_000010_000020.mp4"])
    bench = load_benchmark(tmp_path)
    assert bench.name == "vatex"
    assert _pairs(bench) == [
        ("xyz_000001_000011", "Rain."),
        ("abc_000010_000020", "A girl dances."),
        ("abc_000010_000020", "A child is dancing."),
    ]
    assert bench.video_paths[1] == tmp_path / "videos" / "abc_000010_000020.mp4"
    assert bench.video_paths[0] == tmp_path / "videos" / "xyz_000001_000011.mp4"  # expected place when absent
    assert bench.end_s is None
    with pytest.raises(DatasetError, match="train_list.txt"):
        load_benchmark(tmp_path, "train")


def test_didemo_layout(tmp_path):
    moments = [
        {"video": "111@N00_222_abc.mov", "description": "a dog appears ", "times": [[0, 0], [0, 1]]},
        {"video": "333@N00_444_def.mp4", "description": "people cheer", "times": [[2, 3]]},
        {"video": "111@N00_222_abc.mov", "description": "the dog leaves", "times": [[4, 5]]},
        {"video": "555@N00_666_ghi.avi", "description": "not listed", "times": [[1, 1]]},
    ]
    (tmp_path / "test_data.json").write_text(json.dumps(moments))
    (tmp_path / "test_list.txt").write_text("111@N00_222_abc.mov\n333@N00_444_def.mp4\n")
    _touch_videos(tmp_path / "videos", ["111@N00_222_abc.mp4", "333@N00_444_def.mp4"])  # re-encoded to mp4
    bench = load_benchmark(tmp_path)
    assert bench.name == "didemo"
    assert _pairs(bench) == [
        ("111@N00_222_abc.mov", "a dog appears the dog leaves"),
        ("333@N00_444_def.mp4", "people cheer"),
    ]
    assert bench.video_paths == [
        tmp_path / "videos" / "111@N00_222_abc.mp4",
        tmp_path / "videos" / "333@N00_444_def.mp4",
    ]
    assert bench.end_s == 31  # CLIP4Clip/DRL read every DiDeMo video from 0 to 31 s



# ---------------------------------------------------------------- DiDeMo's 0-31 s window


def _write_long_clip(path: Path, seconds: int = 40, fps: int = 2) -> Path:
    """A real H.264 clip longer than DiDeMo's 31 s window (tiny frames, few of them)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for k in range(seconds * fps):
            frame = np.full((32, 32, 3), 6 * k % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def same_clip_twice(tmp_path_factory) -> tuple[Benchmark, Benchmark, Path]:
    """One 40 s clip as the only video of a DiDeMo test split and of an MSR-VTT one (both link the same file)."""
    root = tmp_path_factory.mktemp("window")
    clip = _write_long_clip(root / "clip.mp4")
    didemo, msrvtt = root / "didemo", root / "msrvtt"
    for folder, name in ((didemo, "111@N00_222_abc.mp4"), (msrvtt, "video1.mp4")):
        (folder / "videos").mkdir(parents=True)
        (folder / "videos" / name).symlink_to(clip)
    moments = [{"video": "111@N00_222_abc.mp4", "description": "a long clip", "times": [[0, 5]]}]
    (didemo / "test_data.json").write_text(json.dumps(moments))
    (msrvtt / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a long clip\n")
    return load_benchmark(didemo), load_benchmark(msrvtt), clip


def test_didemo_gallery_frames_stop_at_31_seconds(same_clip_twice):
    didemo, msrvtt, _ = same_clip_twice
    config = tiny_config(max_frames=12, framerate=1.0)
    seconds = {b.name: sample_video(b.video_paths[0], config.sampling(b.end_s)).timestamps.tolist()
               for b in (didemo, msrvtt)}
    assert seconds["didemo"] == [0, 2, 5, 8, 11, 14, 16, 19, 22, 25, 28, 31]  # 32 one-second frames thinned to 12
    assert seconds["msrvtt"] == [0, 3, 7, 10, 14, 17, 21, 24, 28, 31, 35, 39]  # the whole 40 s clip


def test_didemo_training_frames_stop_at_31_seconds(same_clip_twice, tmp_path, monkeypatch):
    """The frame cache keeps the window apart: the same file cached whole for MSR-VTT is not reused for DiDeMo."""
    didemo, msrvtt, clip = same_clip_twice
    monkeypatch.setenv("TVR_DEMO_CACHE", str(tmp_path))
    config = tiny_config(max_frames=12, framerate=1.0)
    whole, _ = cached_frames(msrvtt, config, progress=False)
    first_31s, _ = cached_frames(didemo, config, progress=False)
    expected, _ = load_video(clip, FrameSampling(12, 1.0, end_s=31), config.image_size)
    assert np.array_equal(first_31s[0], expected.numpy())
    assert not np.array_equal(whole[0], first_31s[0])


def test_didemo_window_is_part_of_the_gallery_key(same_clip_twice, tmp_path):
    """A clip encoded whole (before the window) is not read back for DiDeMo: the feature store keys the sampling."""
    didemo, _, _ = same_clip_twice
    model = build_model(tiny_config())
    checkpoint = Checkpoint(model, "tiny", "path", save_checkpoint(model, tmp_path / "tiny"))
    whole_clip = dataclasses.replace(didemo, end_s=None)
    encode_gallery(checkpoint, whole_clip, tmp_path / "cache", progress=False)
    assert GalleryEncoder(checkpoint, whole_clip, tmp_path / "cache", progress=False).missing == 0
    assert GalleryEncoder(checkpoint, didemo, tmp_path / "cache", progress=False).missing == 1

def test_lsmdc_layout(tmp_path):
    lines = [
        "1001_Movie_00.00.01.000-00.00.03.000\t1.0\t3.0\t1.0\t3.0\tSOMEONE opens a door.",
        "1001_Movie_00.00.05.000-00.00.07.000\t5.0\t7.0\t5.0\t7.0\tShe smiles.",
        "",
    ]
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text("\n".join(lines))
    _touch_videos(tmp_path / "avi" / "1001_Movie", ["1001_Movie_00.00.01.000-00.00.03.000.avi"])
    bench = load_benchmark(tmp_path)
    assert bench.name == "lsmdc"
    assert _pairs(bench) == [
        ("1001_Movie_00.00.01.000-00.00.03.000", "SOMEONE opens a door."),
        ("1001_Movie_00.00.05.000-00.00.07.000", "She smiles."),
    ]
    assert (
        bench.video_paths[0] == tmp_path / "avi" / "1001_Movie" / "1001_Movie_00.00.01.000-00.00.03.000.avi"
    )
    assert bench.end_s is None
    (tmp_path / "LSMDC16_annos_val.csv").write_text("clip\tonly three\tfields\n")
    with pytest.raises(DatasetError, match="LSMDC16_annos_val.csv line 1"):
        load_benchmark(tmp_path, "val")


def test_activitynet_layout(tmp_path):
    captions = {
        "v_aaa": {
            "duration": 10.2,
            "timestamps": [[0, 4], [4, 10]],
            "sentences": ["A man walks.", " He sits. "],
        },
        "v_bbb": {"duration": 5.0, "timestamps": [[0, 5]], "sentences": ["Rain falls."]},
    }
    (tmp_path / "val_1.json").write_text(json.dumps(captions))
    (tmp_path / "val_ids.json").write_text(json.dumps(["v_bbb", "v_aaa", "v_missing"]))
    _touch_videos(tmp_path / "videos", ["aaa.mp4", "v_bbb.mkv"])
    bench = load_benchmark(tmp_path)  # "test" reads val_1, the split everyone reports on
    assert bench.name == "activitynet" and bench.split == "test"
    assert _pairs(bench) == [("v_bbb", "Rain falls."), ("v_aaa", "A man walks. He sits.")]
    assert bench.video_paths == [tmp_path / "videos" / "v_bbb.mkv", tmp_path / "videos" / "aaa.mp4"]
    assert _pairs(load_benchmark(tmp_path, "val")) == _pairs(bench)
    assert bench.end_s is None  # whole videos (CLIP4Clip reads 0 to the annotated duration)


def test_kind_can_be_forced_and_unknown_layout_is_explained(tmp_path):
    _write_msrvtt(tmp_path)
    assert load_benchmark(tmp_path, kind="msrvtt").name == "msrvtt"
    with pytest.raises(DatasetError, match="test_list.txt"):
        load_benchmark(tmp_path, kind="msvd")
    with pytest.raises(DatasetError, match="unknown benchmark kind"):
        load_benchmark(tmp_path, kind="kinetics")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="MSRVTT_JSFUSION_test.csv"):
        load_benchmark(empty)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_benchmark(tmp_path / "nowhere")


def test_invalid_json_names_file(tmp_path):
    (tmp_path / "ref_captions.json").write_text("{not json")
    (tmp_path / "test_list.txt").write_text("a\n")
    with pytest.raises(DatasetError, match="ref_captions.json is not valid JSON"):
        load_benchmark(tmp_path)
