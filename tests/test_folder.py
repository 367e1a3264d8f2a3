"""A folder of clips as a gallery (tvr_demo/data/folder.py): which files it finds, the slices and ids it gives them,
and how it reads a captions.csv; every container it lists is written here and decoded back."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tvr_demo.data import detect_kind, load_benchmark
from tvr_demo.data.folder import TOP_LEVEL, VIDEO_EXTENSIONS, load_folder, missing_captions
from tvr_demo.data.video import FrameSampling, decode_videos
from tvr_demo.errors import DatasetError

# container per extension, and a codec it carries (PyAV writes the clip; decord must read it back)
CONTAINERS = {
    ".mp4": ("mp4", "libx264"), ".m4v": ("mp4", "libx264"), ".mov": ("mov", "libx264"), ".3gp": ("3gp", "libx264"),
    ".3g2": ("3g2", "libx264"), ".f4v": ("f4v", "libx264"), ".mkv": ("matroska", "libx264"),
    ".webm": ("webm", "libvpx"), ".avi": ("avi", "mpeg4"), ".divx": ("avi", "mpeg4"), ".flv": ("flv", "flv"),
    ".wmv": ("asf", "wmv2"), ".asf": ("asf", "wmv2"), ".mpg": ("mpeg", "mpeg1video"), ".mpeg": ("mpeg", "mpeg2video"),
    ".vob": ("vob", "mpeg2video"), ".ts": ("mpegts", "mpeg2video"), ".m2ts": ("mpegts", "mpeg2video"),
    ".mts": ("mpegts", "mpeg2video"), ".mxf": ("mxf", "mpeg2video"), ".y4m": ("yuv4mpegpipe", "rawvideo"),
}


def _write_clip(path, container: str, codec: str, frames: int = 30) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            image = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            out.mux(stream.encode(image))
        out.mux(stream.encode())


def test_every_listed_container_is_found_and_decodes(tmp_path):
    """A clip in each listed container lands in the gallery and decodes; the list names no container this test
    does not write."""
    assert set(CONTAINERS) == set(VIDEO_EXTENSIONS)
    for ext, (container, codec) in CONTAINERS.items():
        _write_clip(tmp_path / f"clip{ext}", container, codec)
    bench = load_benchmark(tmp_path)
    assert sorted(bench.video_ids) == sorted(f"clip{ext}" for ext in CONTAINERS)
    decoded = decode_videos(bench.video_paths, FrameSampling(max_frames=4), 32, num_workers=0, progress=False)
    assert decoded.failures == [] and decoded.ok.all()
    assert (decoded.masks.sum(1) >= 1).all()


def _touch(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"not decoded here")


def test_a_folder_is_found_recursively_with_subfolders_as_slices(tmp_path):
    """Every video file at any depth (any case of extension), hidden ones and other files left out; ids are the paths
    inside the folder, slices the subfolders."""
    _touch(tmp_path, "b.mp4", "cats/a.MP4", "cats/indoor/c.webm", "dogs/d.avi", ".hidden/e.mp4", "cats/.f.mp4",
           "notes.txt", "dogs/g.jpg")
    assert detect_kind(tmp_path) == "folder"
    bench = load_benchmark(tmp_path, "val")  # a folder has one split, whichever is asked for
    assert bench.video_ids == ["b.mp4", "cats/a.MP4", "cats/indoor/c.webm", "dogs/d.avi"]
    assert bench.folders == [TOP_LEVEL, "cats", "cats/indoor", "dogs"]
    assert [p.relative_to(tmp_path).as_posix() for p in bench.video_paths] == bench.video_ids
    assert (bench.name, bench.split, bench.num_captions) == ("folder", "all", 0)
    assert "captions.csv" in missing_captions(bench, "evaluation")


def test_a_symlinked_folder_loop_is_read_once(tmp_path):
    _touch(tmp_path, "cats/a.mp4")
    (tmp_path / "cats" / "again").symlink_to(tmp_path / "cats", target_is_directory=True)
    assert load_folder(tmp_path).video_ids == ["cats/a.mp4"]


def test_a_folder_without_videos_says_what_it_looked_for(tmp_path):
    _touch(tmp_path, "notes.txt")
    with pytest.raises(DatasetError, match="holds no video files and no known benchmark annotations"):
        load_benchmark(tmp_path)


def _captions(root, text: str) -> None:
    (root / "captions.csv").write_text(text, encoding="utf-8")


def test_captions_name_clips_by_path_stem_or_unique_file_name(tmp_path):
    """Several rows per clip; a row names its clip by its path (with or without extension) or by a file name no other
    clip shares; uncaptioned clips stay in the gallery."""
    _touch(tmp_path, "cats/a.mp4", "dogs/b.mp4", "dogs/c.mp4", "e.mp4")
    _captions(tmp_path, "video,caption\ncats/a.mp4,a cat sleeps\na,  a cat   yawns \ndogs/b,a dog runs\nc.mp4,a dog sits\n")
    bench = load_benchmark(tmp_path)
    assert bench.captions == ["a cat sleeps", "a cat yawns", "a dog runs", "a dog sits"]
    assert [bench.video_ids[v] for v in bench.caption_video] == ["cats/a.mp4", "cats/a.mp4", "dogs/b.mp4",
                                                                 "dogs/c.mp4"]
    assert bench.num_videos == 4 and bench.captions_of(3) == []


@pytest.mark.parametrize("text, message", [
    ("clip,text\na.mp4,x\n", "needs the columns video,caption in its first line; found clip,text"),
    ("video,caption\nz.mp4,a zebra\n", "line 2 names the video 'z.mp4', which is not in the folder"),
    ("video,caption\nb.mp4,a\n", "could be any of one/b.mp4, two/b.mp4: give its path inside the folder"),
    ("video,caption\na.mp4,\n", "line 2 has an empty caption"),
])
def test_a_bad_captions_file_is_one_sentence(tmp_path, text, message):
    _touch(tmp_path, "a.mp4", "one/b.mp4", "two/b.mp4")
    _captions(tmp_path, text)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_benchmark(tmp_path)
