"""Frame sampling (DRL's rule), CLIP preprocessing, and clear errors on damaged video files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from tvr_demo.data.video import (
    CLIP_MEAN,
    CLIP_STD,
    FrameSampling,
    decode_videos,
    decode_workers,
    load_video,
    normalize_frames,
    preprocess_frames,
    sample_frame_indices,
    sample_video,
)
from tvr_demo.errors import TVRError, VideoDecodeError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VIDEO7500_INDICES = [0, 3, 6, 12, 15, 21, 24, 30, 33, 39, 42, 48]  # DRL's sampling of the real clip, worked out by hand


def _write_clip(path: Path, num_frames: int = 20, fps: int = 5, size: tuple[int, int] = (96, 64)) -> Path:
    """A small real H.264 mp4 whose frame k has a bright bar at row k (so frames are told apart)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    for k in range(num_frames):
        frame = np.full((size[1], size[0], 3), 30, dtype=np.uint8)
        frame[k % size[1]] = 250
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
    container.close()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


# (num_frames, fps, sampling, expected): worked out by hand from DRL's sampling rule
SAMPLING_CASES = [
    (50, 3.0, FrameSampling(), VIDEO7500_INDICES),  # 17 candidates every 3rd frame -> linspace picks 12
    (5, 0.4, FrameSampling(), [0, 1, 2, 3, 4]),  # stride round(0.4) = 0, clamped to 1
    (20, 5.0, FrameSampling(), [0, 5, 10, 15]),  # short clip: 4 frames, padded later
    (10, 2.5, FrameSampling(), [0, 2, 4, 6, 8]),  # Python's round(2.5) = 2 (half to even), as in DRL
    (10, 3.5, FrameSampling(), [0, 4, 8]),  # round(3.5) = 4
    (300, 29.97, FrameSampling(), [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]),
    (900, 30.0, FrameSampling(), [0, 60, 150, 210, 300, 390, 450, 540, 630, 690, 780, 870]),
    (50, 3.0, FrameSampling(max_frames=4), [0, 15, 30, 48]),
    (90, 30.0, FrameSampling(framerate=2.0), [0, 15, 30, 45, 60, 75]),
    (200, 10.0, FrameSampling(start_s=2, end_s=5), [20, 30, 40, 50]),  # end frame is inclusive
    (100, 10.0, FrameSampling(start_s=5, end_s=100), [50, 60, 70, 80, 90]),  # end clamped to the last frame
    (50, 10.0, FrameSampling(start_s=10), []),  # segment after the end of the clip
]


@pytest.mark.parametrize(("num_frames", "fps", "sampling", "expected"), SAMPLING_CASES)
def test_sample_frame_indices_table(num_frames, fps, sampling, expected):
    indices = sample_frame_indices(num_frames, fps, sampling)
    assert indices.dtype == np.int64
    assert indices.tolist() == expected


def test_sampling_rejects_nonsense():
    for kwargs in ({"max_frames": 0}, {"framerate": 0}, {"start_s": -1}, {"start_s": 5, "end_s": 5}):
        with pytest.raises(TVRError):
            FrameSampling(**kwargs)


def test_real_clip_indices(msrvtt_reference):
    sampled = sample_video(msrvtt_reference / "video7500.mp4", FrameSampling(), decode=True)
    assert sampled.indices.tolist() == VIDEO7500_INDICES
    assert (sampled.fps, sampled.num_frames) == (3.0, 50)
    assert np.allclose(sampled.timestamps, np.array(VIDEO7500_INDICES) / 3.0)
    assert sampled.frames.shape == (12, 224, 298, 3) and sampled.frames.dtype == np.uint8


def test_frames_cli_prints_the_real_clip_json(msrvtt_reference):
    out = subprocess.run(
        [sys.executable, "-m", "tvr_demo", "frames", str(msrvtt_reference / "video7500.mp4")],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["indices"] == VIDEO7500_INDICES
    assert result["fps"] == 3.0 and result["num_frames"] == 50
    assert result["timestamps"] == [round(i / 3.0, 3) for i in VIDEO7500_INDICES]


def test_frames_cli_bad_file_one_line(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is a text file, not a video\n")
    out = subprocess.run(
        [sys.executable, "-m", "tvr_demo", "frames", str(bad)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().startswith("error:") and str(bad) in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # decord's own C++ log line is silenced


@pytest.mark.parametrize(
    ("width", "height", "resolution"),
    [
        (298, 224, 224),
        (224, 298, 224),
        (301, 225, 224),
        (64, 64, 224),
        (128, 128, 64),
        (97, 131, 32),
        (160, 120, 120),
    ],
)
def test_preprocess_matches_torchvision(width, height, resolution):
    rng = np.random.default_rng(width * height)
    frames = rng.integers(0, 256, size=(3, height, width, 3), dtype=np.uint8)
    reference = Compose([Resize(resolution, interpolation=InterpolationMode.BICUBIC), CenterCrop(resolution)])
    expected = torch.stack(
        [torch.from_numpy(np.array(reference(Image.fromarray(f)))).permute(2, 0, 1) for f in frames]
    )
    out = preprocess_frames(frames, resolution)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, resolution, resolution)
    assert torch.equal(out, expected)


def test_normalize_matches_to_tensor_and_normalize():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    reference = Compose([ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])
    expected = torch.stack([reference(im) for im in images])
    u8 = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images])
    out = normalize_frames(u8)
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)
    assert normalize_frames(u8[None]).shape == (1, 2, 3, 32, 32)


def test_load_video_pads_and_masks(clip):
    video, mask = load_video(clip, FrameSampling(), resolution=32)
    assert video.shape == (12, 3, 32, 32) and video.dtype == torch.uint8
    assert mask.dtype == torch.int64 and mask.tolist() == [1] * 4 + [0] * 8  # 20 frames at 5 fps -> 4 samples
    assert video[4:].eq(0).all() and video[:4].float().mean() > 10


def _damaged_files(tmp_path: Path, clip: Path) -> dict[str, Path]:
    """A 0-byte file, a text file named .mp4, and real mp4s cut in half (index box at the end, and at the front)."""
    files = {
        "empty": tmp_path / "empty.mp4",
        "text": tmp_path / "text.mp4",
        "half": tmp_path / "half.mp4",
        "half_faststart": tmp_path / "half_faststart.mp4",
        "missing": tmp_path / "missing.mp4",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("hello, I am not a video\n" * 10)
    data = clip.read_bytes()
    files["half"].write_bytes(data[: len(data) // 2])
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(clip)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = faststart.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index really is at the front
    files["half_faststart"].write_bytes(data[: len(data) // 2])
    return files


def test_damaged_files_raise_one_clear_error(tmp_path, clip):
    for kind, path in _damaged_files(tmp_path, clip).items():
        with pytest.raises(VideoDecodeError) as err:
            load_video(path, FrameSampling(), resolution=32)
        message = str(err.value)
        assert str(path) in message, kind
        assert "\n" not in message, kind


def test_decode_videos_skips_and_reports(tmp_path, clip):
    damaged = _damaged_files(tmp_path, clip)
    paths = [clip, damaged["empty"], damaged["missing"], clip, damaged["half"]]
    out = decode_videos(paths, FrameSampling(max_frames=6), resolution=32, num_workers=2, progress=False)
    assert out.videos.shape == (5, 6, 3, 32, 32) and out.videos.dtype == torch.uint8
    assert out.masks.shape == (5, 6) and out.masks.dtype == torch.int64
    assert out.ok.tolist() == [True, False, False, True, False]
    assert [p for p, _ in out.failures] == [damaged["empty"], damaged["missing"], damaged["half"]]
    assert all(str(p) in reason for p, reason in out.failures)
    assert out.masks[~torch.from_numpy(out.ok)].eq(0).all() and out.videos[1].eq(0).all()
    single, single_mask = load_video(clip, FrameSampling(max_frames=6), resolution=32)
    assert torch.equal(out.videos[0], single) and torch.equal(out.masks[3], single_mask)


def test_decode_videos_can_fail_fast(tmp_path, clip):
    with pytest.raises(VideoDecodeError, match="not found"):
        decode_videos(
            [clip, tmp_path / "nope.mp4"],
            FrameSampling(),
            resolution=32,
            num_workers=0,
            progress=False,
            skip_errors=False,
        )


GB = 2**30


@pytest.mark.parametrize("cpus,available,workers", [
    (16, 128 * GB, 16),  # the H200 host: one per core
    (2, 20 * GB, 2),  # this project's 2-core machines: as before
    (64, 8 * GB, 6),  # many cores, little memory: 3/4 of 8 GB holds six workers of 1 GB
    (16, GB // 2, 1),  # almost no memory: still one
])
def test_decode_workers_follow_cores_bounded_by_memory(cpus: int, available: int, workers: int) -> None:
    assert decode_workers(cpus, available) == workers


def test_decode_videos_picks_its_workers_and_decodes_the_same(clip):
    """The default (num_workers=None) decodes what one in-process decode gives."""
    auto = decode_videos([clip, clip, clip], FrameSampling(max_frames=4), resolution=32, progress=False)
    inline = decode_videos([clip], FrameSampling(max_frames=4), resolution=32, num_workers=0, progress=False)
    assert auto.ok.all() and all(torch.equal(v, inline.videos[0]) for v in auto.videos)
