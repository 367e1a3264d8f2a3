"""The app's path policy (tvr_demo/safety.py, used by the session and the callbacks) and the upload limits of
tvr_demo/data/video.py: every refusal is a TVRError with a message that says what was refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import gradio as gr
import pytest
from app_support import Listeners, tiny_session

from tvr_demo.data import video
from tvr_demo.data.video import FrameSampling, load_untrusted_video
from tvr_demo.errors import VideoDecodeError
from tvr_demo.safety import UnsafePathError, resolve_within

SAMPLING = FrameSampling(max_frames=4)


@pytest.fixture()
def roots(tmp_path):
    """Two served roots with a folder each, and a secret outside both."""
    data, extra, outside = tmp_path / "data", tmp_path / "extra", tmp_path / "outside"
    for d in (data / "bench", extra / "own", outside):
        d.mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    return data, extra, outside


def test_paths_inside_the_roots_resolve(roots):
    data, extra, _ = roots
    assert resolve_within("bench", [data, extra]) == (data / "bench").resolve()
    assert resolve_within(str(extra / "own"), [data, extra]) == (extra / "own").resolve()
    assert resolve_within("own", [data, extra]) == (data / "own").resolve()  # relative: from the first root
    assert resolve_within(str(data / "bench"), [data, extra]) == (data / "bench").resolve()
    assert resolve_within("bench/../bench/", [data]) == (data / "bench").resolve()


@pytest.mark.parametrize("path", ["..", "../outside", "bench/../../outside/secret.txt", "/etc/passwd", "/", "~"])
def test_dot_dot_and_absolute_paths_outside_are_refused(roots, path):
    data, extra, _ = roots
    if path == "~":  # not expanded: a folder literally named "~" inside the root, which is allowed
        assert resolve_within(path, [data]) == (data / "~").resolve()
        return
    with pytest.raises(UnsafePathError, match="outside the folders this app serves"):
        resolve_within(path, [data, extra])


def test_an_absolute_path_to_a_sibling_outside_is_refused(roots):
    data, _, outside = roots
    with pytest.raises(UnsafePathError, match=r"outside the folders this app serves \(data/\)"):
        resolve_within(str(outside), [data])


def test_symlinks_are_followed_before_the_check(roots):
    data, _, outside = roots
    (data / "escape").symlink_to(outside)
    (data / "inner").symlink_to(data / "bench")
    (data / "loop").symlink_to(data / "loop")
    with pytest.raises(UnsafePathError, match="outside"):
        resolve_within("escape/secret.txt", [data])
    with pytest.raises(UnsafePathError, match="outside"):
        resolve_within("escape", [data])
    assert resolve_within("inner", [data]) == (data / "bench").resolve()
    with pytest.raises(UnsafePathError, match="not a usable path"):
        resolve_within("loop", [data])


@pytest.mark.parametrize("path", ["", "   ", "bench\x00/x"])
def test_empty_and_nul_paths_are_refused(roots, path):
    with pytest.raises(UnsafePathError, match="empty or not a valid path"):
        resolve_within(path, [roots[0]])


# ---------------------------------------------------------------- the session and callbacks: the /load fields


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    (root / "data").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TVR_DEMO_DATA", str(root / "data"))  # the served data root (read by tvr_demo.paths.data_dir)
        yield tiny_session(root, n_test=4)


def test_gallery_field_cannot_leave_the_served_folders(session, tmp_path):
    """The /load gallery field: `..`, an absolute path elsewhere and a symlink out are refused as notices."""
    cb = Listeners(session)
    data = Path(os.environ["TVR_DEMO_DATA"])
    (data / "out").symlink_to(tmp_path)
    for dataset in ("../..", "/etc", str(tmp_path), "out"):
        with pytest.raises(gr.Error, match="gallery folder .* is outside the folders this app serves"):
            cb.load("drl-wti", dataset, "test")
    assert session.dataset_dir(session.dataset) == Path(session.dataset).resolve()  # the start gallery is served


def test_a_gallery_whose_videos_link_outside_is_refused(session, tmp_path):
    """A benchmark under the data root whose video is a symlink to a file elsewhere is refused as a whole."""
    import shutil

    data = Path(os.environ["TVR_DEMO_DATA"])
    copy = data / "copy"
    shutil.copytree(session.dataset, copy)
    victim = next((copy / "videos").glob("*.mp4"))
    target = tmp_path / "elsewhere.mp4"
    shutil.copy(victim, target)
    victim.unlink()
    victim.symlink_to(target)
    with pytest.raises(UnsafePathError, match="1 video file.* outside the folders this app serves"):
        session.benchmark("copy", "test")


def test_a_gallery_whose_annotations_link_outside_is_refused_before_reading(session, tmp_path):
    """A caption file symlinked to a file elsewhere is refused before it is read: its lines never become captions."""
    import shutil

    data = Path(os.environ["TVR_DEMO_DATA"])
    copy = data / "copy-annotations"
    shutil.copytree(session.dataset, copy)
    secret = tmp_path / "secret.csv"
    shutil.copy(copy / "MSRVTT_JSFUSION_test.csv", secret)
    with open(secret, "a") as f:
        f.write("99,video0,video0,the secret line\n")
    (copy / "MSRVTT_JSFUSION_test.csv").unlink()
    (copy / "MSRVTT_JSFUSION_test.csv").symlink_to(secret)
    with pytest.raises(UnsafePathError, match=r"copy-annotations/ has 1 file\(s\) .* MSRVTT_JSFUSION_test.csv"):
        session.benchmark("copy-annotations", "test")
    (copy / "MSRVTT_JSFUSION_test.csv").unlink()
    shutil.copy(secret, copy / "MSRVTT_JSFUSION_test.csv")  # the same file inside the served folder is fine
    assert "the secret line" in session.benchmark("copy-annotations", "test").captions


def test_model_field_takes_only_served_names(session):
    """The /load model field is a name, never a path: a checkpoint path, even a real one, is refused."""
    cb = Listeners(session)
    for model in ("../checkpoints/unify", session.models["unify"], "/etc/passwd"):
        with pytest.raises(gr.Error, match="unknown model"):
            cb.load(model, "", "test")


def test_an_upload_outside_gradios_upload_folder_is_refused(session, tmp_path):
    cb = Listeners(session)
    clip = next((Path(session.dataset) / "videos").glob("*.mp4"))
    with pytest.raises(gr.Error, match="uploaded file .* is outside the folders this app serves"):
        cb.run_search_video(None, str(clip), 5, "auto", "drl-wti", "", "test")


# ---------------------------------------------------------------- uploads: limits and a decoder in its own process


@pytest.fixture(scope="module")
def clip(session) -> Path:
    return next((Path(session.dataset) / "videos").glob("*.mp4"))


def test_an_upload_decodes_in_a_worker_as_in_process(clip):
    import torch

    frames, mask = load_untrusted_video(clip, SAMPLING, 32)
    expected = video.load_video(clip, SAMPLING, 32)
    assert torch.equal(frames, expected[0]) and torch.equal(mask, expected[1])


def test_an_upload_over_the_size_limit_is_refused_before_decoding(clip, monkeypatch):
    monkeypatch.setattr(video, "UPLOAD_MAX_BYTES", clip.stat().st_size - 1)
    with pytest.raises(VideoDecodeError, match=rf"{clip.name} is \d+ MB; uploads are limited to 0 MB"):
        load_untrusted_video(clip, SAMPLING, 32)


def test_an_upload_over_the_duration_limit_is_refused(clip, monkeypatch):
    monkeypatch.setattr(video, "UPLOAD_MAX_SECONDS", 0.5)
    with pytest.raises(VideoDecodeError, match=rf"{clip.name} lasts \d+ s; clips are limited to 0.5 s"):
        load_untrusted_video(clip, SAMPLING, 32)


def test_an_upload_over_the_frame_size_limit_is_refused(clip, monkeypatch):
    monkeypatch.setattr(video, "UPLOAD_MAX_PIXELS", 100)
    with pytest.raises(VideoDecodeError, match=r"frames, over the limit of 100 pixels"):
        load_untrusted_video(clip, SAMPLING, 32)


def _hang(conn, *args) -> None:
    """Stands in for a decoder stuck on a malicious file (runs in the worker process)."""
    time.sleep(60)


def _crash(conn, *args) -> None:
    """Stands in for a decoder that dies on a malformed file, or that the kernel kills for its memory (runs in the
    worker process; SIGKILL leaves no core file behind)."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_decode_that_hangs_is_stopped_at_the_time_limit(clip, monkeypatch):
    monkeypatch.setattr(video, "_decode_untrusted", _hang)
    start = time.perf_counter()
    with pytest.raises(VideoDecodeError, match=rf"decoding {clip.name} took longer than 1 s and was stopped"):
        load_untrusted_video(clip, SAMPLING, 32, timeout_s=1)
    assert time.perf_counter() - start < 10


def test_a_decoder_crash_is_a_refusal_not_a_dead_server(clip, monkeypatch):
    monkeypatch.setattr(video, "_decode_untrusted", _crash)
    with pytest.raises(VideoDecodeError, match=rf"the video decoder crashed on {clip.name} \(exit code -9\)"):
        load_untrusted_video(clip, SAMPLING, 32)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + b"x" * 50, os.urandom(4096),
                                     b"<html>not a video</html>"])
def test_files_that_are_not_videos_are_refused_with_their_name(tmp_path, content):
    path = tmp_path / "upload.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match="upload.mp4"):
        load_untrusted_video(path, SAMPLING, 32)


# ---------------------------------------------------------------- names as clients see them: no invisible format characters

RLO, ZWSP = "\u202e", "\u200b"  # right-to-left override (bidi control) and zero-width space: both category Cf


def _format_characters(value, found: list[str]) -> list[str]:
    """Where a response (plot JSON decoded) holds an invisible format character: a few characters around each; the
    clips it served, which gradio_client saved under their files' own names, aside."""
    import json
    import unicodedata

    if isinstance(value, str) and os.path.isfile(value):
        return found
    if isinstance(value, str):
        if value.startswith("{") and '"data"' in value:
            try:
                return _format_characters(json.loads(value), found)
            except ValueError:
                pass
        found += [f"{value[max(0, i - 30):i]}<U+{ord(c):04X}>{value[i + 1:i + 10]}" for i, c in enumerate(value)
                  if unicodedata.category(c) == "Cf"]
    elif isinstance(value, dict):
        for k, v in value.items():
            _format_characters(k, found)
            _format_characters(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _format_characters(v, found)
    return found


@pytest.fixture(scope="module")
def bidi_served(tmp_path_factory):
    """A live app whose gallery folder, video ids, captions and checkpoint folder all carry bidi and zero-width
    characters, as a client-supplied gallery and an operator's checkpoint folder may."""
    import csv
    import shutil

    import torch
    from app_support import MODELS, launched

    from tvr_demo.data.synthetic import SyntheticConfig, generate
    from tvr_demo.models import ModelConfig, TVRModel
    from tvr_demo.models.backbone import clip_config
    from tvr_demo.models.checkpoints import save_checkpoint
    from tvr_demo.ui.session import Session

    root = tmp_path_factory.mktemp("bidi")
    source = generate(root / "source", SyntheticConfig(n_train=0, n_val=0, n_test=4), progress=False, num_workers=0)
    gallery = root / f"my{RLO}gallery"
    (gallery / "videos").mkdir(parents=True)
    rows = []
    with open(Path(source) / "MSRVTT_JSFUSION_test.csv") as f:
        for i, row in enumerate(csv.DictReader(f)):
            vid = f"clip{i}{RLO}4pm.exe"
            shutil.copy(Path(source) / "videos" / f"{row['video_id']}.mp4", gallery / "videos" / f"{vid}.mp4")
            words = row["sentence"].split()
            rows.append({**row, "video_id": vid, "sentence": f"{words[0]}{ZWSP} {RLO}{' '.join(words[1:])}"})
    with open(gallery / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    torch.manual_seed(0)
    model = TVRModel(ModelConfig(clip=clip_config("tvr-tiny"), **MODELS["drl-wti"])).eval()
    checkpoint = save_checkpoint(model, root / "checkpoints" / f"wti{RLO}lru", {"description": "random weights"})
    session = Session([str(checkpoint)], gallery, "test", device="cpu", cache_root=root / "cache")
    with launched(session) as url:
        yield url, gallery, rows


def test_no_name_a_client_receives_holds_an_invisible_format_character(bidi_served, tmp_path):
    """Through the API: the page's menus (the model names), the header and menus of /load, search results, a video
    search, an explanation, the failure table, an upload's summary and a refusal that names the upload. Each shows
    the names, their bidi and zero-width characters stripped (with U+202E, "clip0<RLO>4pm.exe" displays as "clip0exe.mp4")."""
    import shutil

    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    url, gallery, rows = bidi_served
    client = Client(url, verbose=False)
    ctx = ("wtilru", "", "test")
    shown_id = rows[0]["video_id"].replace(RLO, "")
    shown_caption = rows[0]["sentence"].replace(RLO, "").replace(ZWSP, "")
    clip = tmp_path / f"holiday{RLO}4pm.mp4"
    shutil.copy(next((gallery / "videos").glob("*.mp4")), clip)
    picture = tmp_path / f"photo{RLO}gnp.mp4"
    Image.new("RGB", (32, 32), "red").save(picture, format="PNG")
    with pytest.raises(AppError) as refusal:
        client.predict(None, handle_file(str(picture)), 4, "auto", *ctx, api_name="/search_video")
    config = httpx.get(url.rstrip("/") + "/config", timeout=30).json()
    responses = {"menus": [c["props"].get("choices") for c in config["components"] if "choices" in c["props"]],
                 "load": client.predict(*ctx, api_name="/load"),
                 "search": client.predict(rows[0]["sentence"], 4, "auto", *ctx, api_name="/search"),
                 "search_video": client.predict(shown_id, None, 4, "auto", *ctx, api_name="/search_video"),
                 "upload": client.predict(None, handle_file(str(clip)), 4, "auto", *ctx, api_name="/search_video")[0],
                 "explain": client.predict(shown_caption, shown_id, "", "", *ctx, api_name="/explain"),
                 "failures": client.predict("t2v", "auto", "rank", "(all)", 10, *ctx, api_name="/failures"),
                 "refusal": str(refusal.value)}
    for name, response in responses.items():
        assert not _format_characters(response, []), (name, _format_characters(response, [])[:3])
    text = str(responses)
    for shown in ("wtilru", "mygallery", shown_id, shown_caption, "holiday4pm.mp4", "photognp.mp4"):
        assert shown in text, f"{shown!r} is not shown at all"
