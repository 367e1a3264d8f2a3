"""Decode a video with decord, pick the frames DRL would pick, and turn them into CLIP-sized uint8 tensors."""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import os
import re
import select
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tvr_demo.errors import TVRError, VideoDecodeError
from tvr_demo.memory import host_available_bytes

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Limits on a clip a stranger uploads to the app (video -> text search); each refusal says which one was hit.
UPLOAD_MAX_BYTES = 200 * 1024 * 1024  # 200 MB: about 10 min of 720p H.264; refused before any decoding
UPLOAD_MAX_SECONDS = 600.0  # 10 min: the model sees at most max_frames frames, so a longer clip adds decode time only
UPLOAD_MAX_PIXELS = 3840 * 2160  # 4K UHD frames; a larger frame size could take gigabytes to decode
DECODE_TIMEOUT_S = 60.0  # a decode still running after this (malformed or adversarial file) is killed
# Top-level mp4/mov boxes walked before giving up: a plain mp4 has about five, a fragmented one two per fragment (a
# 10-min stream in 1 s fragments: 1,200); a crafted file of millions of empty boxes takes seconds to walk.
MAX_ISO_BOXES = 10_000

# Containers in the ISO base media format (mp4/mov) carry their box sizes, which lets us spot a cut-off download
# before decord reads past the end of it.
_ISO_BMFF_TYPES = set(
    b"ftyp moov mdat free skip wide pnot uuid meta moof mfra styp sidx pdin prfl junk".split()
)


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a clip the model sees; the defaults are DRL's evaluation settings."""

    max_frames: int = 12  # DRL: 12 frames
    framerate: float = 1.0  # DRL: 1 frame per second
    start_s: float | None = None  # a segment of the clip (DiDeMo/ActivityNet style); None = from the start
    end_s: float | None = None  # None = to the end

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise TVRError(f"max_frames must be at least 1, got {self.max_frames}")
        if not self.framerate > 0:
            raise TVRError(f"framerate must be positive, got {self.framerate}")
        if self.start_s is not None and self.start_s < 0:
            raise TVRError(f"start must be 0 or more seconds, got {self.start_s}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise TVRError(f"end ({self.end_s} s) must come after start ({self.start_s} s)")


def sample_frame_indices(num_frames: int, fps: float, sampling: FrameSampling) -> np.ndarray:
    """DRL's `_get_rawvideo_dec` rule: every round(fps / framerate)-th frame, thinned by linspace to max_frames.

    DRL's loaders pass whole seconds for start/end; with whole seconds this is exactly their computation.
    """
    f_start = 0 if sampling.start_s is None else int(sampling.start_s * fps)
    f_end = int(min(1_000_000_000 if sampling.end_s is None else sampling.end_s * fps, num_frames - 1))
    if f_end < f_start:
        return np.zeros(0, dtype=np.int64)
    stride = max(1, int(round(fps / sampling.framerate)))  # DRL would crash on stride 0 (fps < framerate / 2)
    candidates = np.arange(f_start, f_end + 1, stride, dtype=np.int64)
    if len(candidates) > sampling.max_frames:
        candidates = candidates[np.linspace(0, len(candidates) - 1, num=sampling.max_frames, dtype=int)]
    return candidates


@dataclass
class SampledVideo:
    """The frames picked from one clip, where they sit in time, and (when decoded) their RGB pixels."""

    indices: np.ndarray  # (n,) int64 frame numbers
    timestamps: np.ndarray  # (n,) float64 seconds: index / fps
    fps: float
    num_frames: int
    frames: np.ndarray | None = None  # (n, H, W, 3) uint8 RGB, only with decode=True

    def as_json(self) -> dict:
        """The `frames` command's output; timestamps rounded to the millisecond for reading."""
        return {
            "indices": [int(i) for i in self.indices],
            "timestamps": [round(float(t), 3) for t in self.timestamps],
            "fps": float(self.fps),
            "num_frames": int(self.num_frames),
        }


def _check_file(path: Path) -> None:
    """Fail early and clearly on what decord would choke on (or, for some garbage, hang on)."""
    if not path.exists():
        raise VideoDecodeError(f"video file not found: {path}")
    if not path.is_file():
        raise VideoDecodeError(f"not a video file (it is a folder or a device): {path}")
    size = path.stat().st_size
    if size == 0:
        raise VideoDecodeError(f"video file is empty (0 bytes): {path}; re-download or re-encode it")
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) == 8 and head[4:8] == b"ftyp":
            _check_iso_boxes(f, path, size)


def _check_iso_boxes(f, path: Path, size: int) -> None:
    """Walk the top-level mp4/mov boxes (at most MAX_ISO_BOXES): a box that runs past the end of the file means the
    file was cut off."""
    offset, seen, count = 0, set(), 0
    while offset + 8 <= size:
        count += 1
        if count > MAX_ISO_BOXES:
            raise VideoDecodeError(f"{path} has over {MAX_ISO_BOXES:,} top-level mp4 boxes, far more than a video "
                                   "has: it is not a video this app accepts; re-encode it (e.g. H.264 in .mp4)")
        f.seek(offset)
        box_size, box_type = struct.unpack(">I4s", f.read(8))
        if box_size == 1:
            box_size = struct.unpack(">Q", f.read(8))[0]
        elif box_size == 0:  # the last box runs to the end of the file
            box_size = size - offset
        if box_type not in _ISO_BMFF_TYPES and not box_type.isalnum():
            break  # not a box header: leave the verdict to decord
        if box_size < 8 or offset + box_size > size:
            raise VideoDecodeError(
                f"video file is truncated: {path} is {size} bytes but its "
                f"'{box_type.decode('latin-1')}' box needs {offset + box_size}; "
                "re-download or re-encode it"
            )
        seen.add(box_type)
        offset += box_size
    if b"moov" not in seen and b"moof" not in seen:
        raise VideoDecodeError(
            f"video file is truncated or unfinished: {path} has no 'moov' index box; "
            "re-download or re-encode it"
        )


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: decord's C++ logger prints its own copy of every error there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open(path: Path, num_threads: int = 0):
    """A decord VideoReader, with decord's errors turned into one clear VideoDecodeError."""
    import decord

    _check_file(path)
    decord.logging.set_level(decord.logging.QUIET)  # its ffmpeg chatter would bury our one-line message
    try:
        with _quiet_stderr():
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as err:  # decord raises RuntimeError or DECORDError with a C++ trace
        raise VideoDecodeError(
            f"cannot decode video {path}: not a video file, or a damaged one ({_short(err)})"
        ) from err
    return reader


_LOG_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s*\S+:\d+:\s*")  # decord's "[20:22:12] /src/x.cc:171: "
_ANY_PATH = re.compile(r"(?:/[^/\s'\"\]\[()]+){2,}")


def _short(err: Exception) -> str:
    """decord's messages carry C++ traces and its log prefix (time, source file): keep the first line's own words,
    with any path cut to its file name."""
    text = str(err).strip().splitlines()
    if not text:
        return type(err).__name__
    line = _ANY_PATH.sub(lambda m: m.group(0).rsplit("/", 1)[-1], _LOG_PREFIX.sub("", text[0]))
    return line.strip()[:200] or type(err).__name__


def _decode_with_av(path: Path, indices: np.ndarray) -> np.ndarray:
    """The sampled frames (n, H, W, 3) RGB by PyAV: decord cannot convert some valid frame sizes (widths that are not
    a multiple of its row alignment, e.g. 16x4096 or 2x2), which PyAV decodes."""
    import av

    wanted, frames = {int(i) for i in indices}, {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                break
    return np.stack([frames[int(i)] for i in indices])


def sample_video(
    path: Path, sampling: FrameSampling, decode: bool = False, num_threads: int = 0
) -> SampledVideo:
    """Open `path`, pick DRL's frames, and decode them when asked (RGB uint8)."""
    path = Path(path)
    reader = _open(path, num_threads=num_threads)
    num_frames, fps = len(reader), float(reader.get_avg_fps())
    if num_frames == 0:
        raise VideoDecodeError(f"video has no frames: {path}")
    if not (math.isfinite(fps) and fps > 0):
        raise VideoDecodeError(f"video reports no frame rate (fps={fps}): {path}; re-encode it")
    indices = sample_frame_indices(num_frames, fps, sampling)
    frames = None
    if decode and len(indices):
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()
        except Exception as err:
            try:
                frames = _decode_with_av(path, indices)
            except Exception:
                raise VideoDecodeError(
                    f"cannot decode frames {indices.tolist()} of {path}: damaged video ({_short(err)})"
                ) from err
    elif decode:
        frames = np.zeros((0, reader[0].shape[0], reader[0].shape[1], 3), dtype=np.uint8)
    return SampledVideo(
        indices=indices, timestamps=indices / fps, fps=fps, num_frames=num_frames, frames=frames
    )


def _resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize(size, BICUBIC) on a PIL image: short side to `size`, long side int(size * long / short)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.BICUBIC)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop(size) after a short-side resize (no padding case): round((H - size) / 2) offsets."""
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def preprocess_frames(frames: np.ndarray, resolution: int) -> torch.Tensor:
    """(n, H, W, 3) uint8 RGB -> (n, 3, R, R) uint8: CLIP's bicubic short-side resize and centre crop, unnormalised."""
    out = torch.empty((len(frames), 3, resolution, resolution), dtype=torch.uint8)
    for i, frame in enumerate(frames):
        image = _center_crop(
            _resize_short_side(Image.fromarray(frame).convert("RGB"), resolution), resolution
        )
        out[i] = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # np.array: PIL buffers are read-only
    return out


def normalize_frames(frames_u8: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(..., 3, R, R) uint8 -> float32 in CLIP's input space, in ToTensor + Normalize's exact order of operations.
    With the frame mask (...,), padded frames become zeros in normalised space, as DRL pads (a uint8 zero frame
    would normalise to -mean/std)."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=frames_u8.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=frames_u8.device).view(3, 1, 1)
    out = frames_u8.to(torch.float32).div(255).sub(mean).div(std)
    if mask is not None:
        out = out * mask.to(device=out.device, dtype=out.dtype)[..., None, None, None]
    return out


def load_video(
    path: Path, sampling: FrameSampling, resolution: int, num_threads: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip as the model takes it: (max_frames, 3, R, R) uint8 zero-padded and a (max_frames,) int64 mask."""
    sampled = sample_video(Path(path), sampling, decode=True, num_threads=num_threads)
    if len(sampled.indices) == 0:
        raise VideoDecodeError(
            f"no frame of {path} falls in the requested segment "
            f"[{sampling.start_s}, {sampling.end_s}] s (the clip has {sampled.num_frames} "
            f"frames at {sampled.fps:g} fps)"
        )
    video = torch.zeros((sampling.max_frames, 3, resolution, resolution), dtype=torch.uint8)
    mask = torch.zeros(sampling.max_frames, dtype=torch.int64)
    n = len(sampled.indices)
    video[:n] = preprocess_frames(sampled.frames, resolution)
    mask[:n] = 1
    return video, mask


def _decode_untrusted(conn, path: Path, sampling: FrameSampling, resolution: int, max_seconds: float,
                      max_pixels: int, caller: int) -> None:
    """Worker process body: check duration and frame size, decode, send back ("ok", frames, mask) as numpy arrays
    or ("error", message, None); a decode that hangs ends with the server (`caller`) if not before."""
    threading.Thread(target=_exit_with, args=(caller,), daemon=True, name="exit-with-caller").start()
    with contextlib.suppress(OSError):  # should memory run out, the kernel kills this worker, not the server
        Path("/proc/self/oom_score_adj").write_text("1000")
    with contextlib.suppress(OSError):  # the server's searches come first on a shared CPU
        os.nice(10)
    try:
        reader = _open(path, num_threads=1)
        num_frames, fps = len(reader), float(reader.get_avg_fps())
        if math.isfinite(fps) and fps > 0 and num_frames / fps > max_seconds:
            raise VideoDecodeError(f"{path.name} lasts {num_frames / fps:.0f} s; clips are limited to "
                                   f"{max_seconds:g} s: trim it")
        if num_frames:
            height, width = reader[0].shape[:2]
            if height * width > max_pixels:
                raise VideoDecodeError(f"{path.name} has {width}x{height} frames, over the limit of {max_pixels:,} "
                                       "pixels (4K UHD): downscale it")
        del reader
        video, mask = load_video(path, sampling, resolution, num_threads=1)
        conn.send(("ok", video.numpy(), mask.numpy()))
    except TVRError as err:
        conn.send(("error", str(err), None))
    except Exception as err:  # a decoder failure we did not foresee: still a refusal, not a crash
        conn.send(("error", f"cannot decode video {path.name}: {type(err).__name__}: {_short(err)}", None))


def _worker_context() -> multiprocessing.context.BaseContext:
    """forkserver where available: a worker forks from a single-threaded server process that has already imported
    the main module and this one, so it starts fast and inherits none of the web server's threads; else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "tvr_demo.data.video"])
    return context


def load_untrusted_video(
    path: Path, sampling: FrameSampling, resolution: int, timeout_s: float = DECODE_TIMEOUT_S
) -> tuple[torch.Tensor, torch.Tensor]:
    """load_video for a file from a stranger: the upload limits above, and decoding in a worker process that is
    killed after `timeout_s`, so a malformed file costs a VideoDecodeError (naming the file, not where the server
    keeps it), never the server."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:  # the rest of _check_file (the box walk) runs in the worker
        raise VideoDecodeError(f"{path.name} is empty or not a file: upload a video file")
    size = path.stat().st_size
    if size > UPLOAD_MAX_BYTES:
        raise VideoDecodeError(f"{path.name} is {size / 2**20:.0f} MB; uploads are limited to "
                               f"{UPLOAD_MAX_BYTES // 2**20} MB: trim or re-encode it")
    context = _worker_context()
    receive, send = context.Pipe(duplex=False)
    limits = (UPLOAD_MAX_SECONDS, UPLOAD_MAX_PIXELS)  # read here, in the server, so they are its settings
    worker = context.Process(target=_decode_untrusted, args=(send, path, sampling, resolution, *limits, os.getpid()),
                             daemon=True)
    worker.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise VideoDecodeError(f"decoding {path.name} took longer than {timeout_s:g} s and was stopped: the "
                                   "file is damaged or unusually heavy; re-encode it (e.g. H.264 in .mp4)")
        try:
            status, first, second = receive.recv()
        except EOFError:
            worker.join(5)
            raise VideoDecodeError(f"the video decoder crashed on {path.name} (exit code {worker.exitcode}): the "
                                   "file is damaged or not a video; re-encode it (e.g. H.264 in .mp4)") from None
    finally:
        if worker.is_alive():
            worker.kill()
        worker.join()
        receive.close()
    if status != "ok":
        raise VideoDecodeError(first.replace(str(path), path.name))
    return torch.from_numpy(first), torch.from_numpy(second)


def _below_caller(nice_step: int = 5) -> int:
    """The nice value decode workers take: 5 below the calling thread's (Linux keeps one per thread; a server's
    heavy threads run at 19), as a worker forked from that thread would have."""
    with contextlib.suppress(AttributeError, OSError):
        return min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + nice_step)
    return nice_step


def _exit_with(pid: int) -> None:
    """Exit this process when process `pid` has ended."""
    try:
        fd = os.pidfd_open(pid)  # readable once the process has exited (Linux 5.3+); immune to pid reuse
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd here: look every few seconds
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except OSError:
                pass
            time.sleep(5)
    select.select([fd], [], [])
    os._exit(0)


def _init_worker(_worker_id: int, nice: int, caller: int) -> None:
    """A decode worker yields the CPU to a server's searches (a gallery's first encode runs beside them) and exits
    with the process it decodes for: started from the forkserver, it is not that process's child, so torch's own
    check (is my parent alive?) watches the forkserver, which a killed server leaves running."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    threading.Thread(target=_exit_with, args=(caller,), daemon=True, name="exit-with-caller").start()


# What one decode worker may hold: a clip's sampled frames at the upload limits (12 frames of 4K RGB, 0.3 GB), the
# decoder's buffers and the process's own pages (a forked worker shares the rest with its parent).
DECODE_WORKER_BYTES = 2**30


def decode_workers(cpus: int, available_bytes: int, per_worker_bytes: int = DECODE_WORKER_BYTES) -> int:
    """Decode processes for a host: one per core (decoding, not the encoder, is the slow stage: 22 clips/s on 2
    workers against 476 encoded on an H200), as many as three quarters of the free memory holds, at least one."""
    return max(1, min(cpus, available_bytes * 3 // 4 // per_worker_bytes))


def host_cpus() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@dataclass
class DecodedVideos:
    """A batch of clips decoded for the encoder; failed files hold zeros with mask 0 and are listed in `failures`."""

    videos: torch.Tensor  # (N, max_frames, 3, R, R) uint8
    masks: torch.Tensor  # (N, max_frames) int64
    failures: list[tuple[Path, str]]  # (file, reason) of each skipped clip
    ok: np.ndarray  # (N,) bool


class _VideoFiles(torch.utils.data.Dataset):
    """Each item: (index, video, mask, error message or None); errors travel as text so workers never die on them."""

    def __init__(
        self, paths: Sequence[Path], sampling: FrameSampling, resolution: int, num_threads: int
    ) -> None:
        self.paths = list(paths)
        self.sampling, self.resolution, self.num_threads = sampling, resolution, num_threads

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            video, mask = load_video(
                self.paths[i], self.sampling, self.resolution, num_threads=self.num_threads
            )
            return i, video, mask, None
        except VideoDecodeError as err:
            return i, None, None, str(err)


def decode_videos(
    paths: Sequence[Path],
    sampling: FrameSampling,
    resolution: int,
    num_workers: int | None = None,
    progress: bool = True,
    skip_errors: bool = True,
) -> DecodedVideos:
    """Decode many clips in worker processes with a progress bar; a bad file is skipped and reported, not fatal.
    num_workers: None = one per core, bounded by memory (`decode_workers`); 0 decodes in this process."""
    from tqdm import tqdm

    if num_workers is None:
        num_workers = decode_workers(host_cpus(), host_available_bytes())
    paths = [Path(p) for p in paths]
    n = len(paths)
    videos = torch.zeros((n, sampling.max_frames, 3, resolution, resolution), dtype=torch.uint8)
    masks = torch.zeros((n, sampling.max_frames), dtype=torch.int64)
    ok = np.zeros(n, dtype=bool)
    failures: list[tuple[Path, str]] = []
    # one decode thread per worker process: the processes already use the cores. The workers start from the
    # forkserver, not by forking this process: a fork copies the caller's page tables holding the GIL, and a
    # server's (GBs resident, its heavy threads at the lowest priority) then stalled every search for seconds
    dataset = _VideoFiles(paths, sampling, resolution, num_threads=1 if num_workers > 0 else 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                         worker_init_fn=functools.partial(_init_worker, nice=_below_caller(),
                                                                          caller=os.getpid())
                                         if num_workers > 0 else None,
                                         multiprocessing_context=_worker_context() if num_workers > 0 else None)
    with tqdm(total=n, desc="decoding videos", unit="video", file=sys.stderr, disable=not progress) as bar:
        for i, video, mask, error in loader:
            if error is None:
                videos[i], masks[i], ok[i] = video, mask, True
            elif skip_errors:
                failures.append((paths[i], error))
            else:
                raise VideoDecodeError(error)
            bar.update(1)
    return DecodedVideos(videos=videos, masks=masks, failures=failures, ok=ok)
