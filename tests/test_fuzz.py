"""Fuzzing the app's scripting API (hypothesis): whatever text or file a client sends, the app answers with results
or with its own message (gradio_client's AppError carrying the gr.Error text); never gradio's generic error, a
hang or a dead server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from app_support import launched, tiny_session
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402

GENERIC = "has not enabled verbose error reporting"  # gradio_client's text for an exception that is not a gr.Error
TIMEOUT_S = 60  # one request; the tiny app answers in well under a second
FUZZ = settings(max_examples=30, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Text a browser can send: anything but lone surrogates (which no UTF-8 request can carry).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
VIDEO = st.one_of(st.sampled_from(["", "video0", "3"]), TEXT)  # a gallery video (id, index, blank) or anything


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    session = tiny_session(root, n_test=6)
    shutil.copytree(session.dataset, root / "data" / "copy")  # the served data root, with one extra gallery in it
    (root / "data" / "escape").symlink_to(root)  # a way out, for the gallery field to try
    with pytest.MonkeyPatch.context() as mp, launched(session) as url:
        mp.setenv("TVR_DEMO_DATA", str(root / "data"))
        yield session, gradio_client.Client(url, verbose=False)


def call(client, *args, api_name: str):
    """The endpoint's outputs, or None when it refused with its own message; fails on anything else."""
    job = client.submit(*args, api_name=api_name)
    try:
        return job.result(timeout=TIMEOUT_S)
    except AppError as err:
        assert str(err).strip() and GENERIC not in str(err), f"{api_name}{args!r:.300}: a generic error"
        return None


def _ctx(session, model: str = "drl-wti") -> tuple[str, str, str]:
    return model, session.dataset, "test"


@FUZZ
@given(query=TEXT, model=st.sampled_from(["drl-wti", "unify"]))
@example(query="", model="drl-wti")
@example(query=" \t\n ", model="drl-wti")
@example(query="一只红色的圆圈向左移动", model="unify")
@example(query="🔴➡️⬅️🟦 " * 40, model="unify")
@example(query="دائرة حمراء تتحرك", model="drl-wti")
@example(query="\u200b\u200d\ufeff", model="drl-wti")
@example(query="\x00\x01\x7f", model="unify")
@example(query="<script>alert(1)</script>", model="drl-wti")
@example(query="a red circle moves to the left " * 400, model="drl-wti")
def test_any_query_gets_a_ranking_or_a_clear_message(served, query, model):
    session, client = served
    out = call(client, query, 5, "auto", *_ctx(session, model), api_name="/search")
    if out is None:
        assert not query.strip(), f"{query!r} was refused"
        return
    gallery, summary, table = out[:3]
    assert 1 <= len(table["data"]) <= 6 and summary
    if len(query) > 1000:
        assert "truncated" in summary or "cut to" in summary


@FUZZ
@given(query=TEXT, video=VIDEO, compare=VIDEO)
@example(query="a red circle", video="video0", compare="-1")
@example(query="a red circle", video="99999999999999999999", compare="")
@example(query="", video="", compare="video1")
def test_any_explain_fields_get_figures_or_a_clear_message(served, query, video, compare):
    session, client = served
    out = call(client, query, video, "", compare, *_ctx(session), api_name="/explain")
    assert out is None or out[0]


@settings(FUZZ, max_examples=25)
@given(dataset=TEXT)
@example(dataset="..")
@example(dataset="../..")
@example(dataset="copy/../..")
@example(dataset="/")
@example(dataset="/etc")
@example(dataset="~")
@example(dataset="%2e%2e%2f")
@example(dataset="x" * 5000)
@example(dataset="copy")
@example(dataset="escape")
@example(dataset="escape/checkpoints/unify")
@example(dataset="escape/data/copy")
def test_any_gallery_field_loads_a_served_gallery_or_is_refused(served, dataset):
    session, client = served
    out = call(client, "drl-wti", dataset, "test", api_name="/load")
    if out is not None:  # the gallery it loaded lies inside a served folder, shown relative to it
        shown = Path(out[0].split("(`")[1].split("`)")[0])
        assert not shown.is_absolute(), shown
        assert any((Path(r) / shown).is_dir() or (Path(r).parent / shown).is_dir() for r in session.data_roots), shown


@settings(FUZZ, max_examples=15)
@given(content=st.binary(max_size=4096), suffix=st.sampled_from([".mp4", ".avi", ".webm", ".mkv", ".mov"]))
@example(content=b"", suffix=".mp4")
@example(content=b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, suffix=".mp4")
@example(content=b"\x1aE\xdf\xa3" + b"\xff" * 200, suffix=".webm")
def test_any_uploaded_bytes_are_searched_or_refused(served, tmp_path_factory, content, suffix):
    session, client = served
    path = tmp_path_factory.mktemp("upload") / f"clip{suffix}"
    path.write_bytes(content)
    out = call(client, None, gradio_client.handle_file(str(path)), 5, "auto", *_ctx(session), api_name="/search_video")
    assert out is None  # none of these is a video


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_cut_off_or_damaged_real_clip_is_searched_or_refused(served, tmp_path, cut):
    session, client = served
    data = (Path(session.dataset) / "videos" / "video0.mp4").read_bytes()
    cut_off, damaged = tmp_path / "cut.mp4", tmp_path / "damaged.mp4"
    cut_off.write_bytes(data[:int(len(data) * cut)])
    middle = int(len(data) * cut)
    damaged.write_bytes(data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 512]) + data[middle + 512:])
    for path in (cut_off, damaged):
        out = call(client, None, gradio_client.handle_file(str(path)), 5, "auto", *_ctx(session),
                   api_name="/search_video")
        if out is not None:  # what could be decoded is searched: a ranking of the gallery's captions
            _, _, table, *_ = out
            assert 1 <= len(table["data"]) <= 5


def test_a_served_gallery_loads_and_a_way_out_is_refused(served):
    """The gallery field's fuzzing above passes whether a gallery loads or is refused; here both outcomes happen."""
    session, client = served
    header = call(client, "drl-wti", "copy", "test", api_name="/load")[0]
    assert "copy" in header and "6 videos" in header
    for outside in ("escape", "/etc", ".."):  # the served root itself, the system, its parent
        assert call(client, "drl-wti", outside, "test", api_name="/load") is None


def test_the_server_still_answers_after_the_fuzzing(served):
    session, client = served
    _, summary, table, *_ = call(client, "a red circle", 3, "auto", *_ctx(session), api_name="/search")
    assert len(table["data"]) == 3
