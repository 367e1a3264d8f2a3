"""An encode in the background (tvr_demo/retrieval/encoding.py): while it runs, typed searches answer over the clips
encoded so far and say how many those are, the views that need every clip say why they wait, and the progress
reads clips/s and the time left; once done, every answer is the one a finished engine gives."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from app_support import Listeners, tiny_session
from reference import np_wti

from tvr_demo.data import load_benchmark
from tvr_demo.data.video import decode_videos
from tvr_demo.errors import QueryError
from tvr_demo.models.checkpoints import load_checkpoint
from tvr_demo.retrieval import gallery
from tvr_demo.retrieval.encoding import EncodeProgress
from tvr_demo.retrieval.engine import Engine
from tvr_demo.retrieval.scoring import encode_texts, encode_video_frames

QUERY = "a red circle moves to the left"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return tiny_session(tmp_path_factory.mktemp("encoding"), n_test=6)


@pytest.fixture(scope="module")
def finished(small, tmp_path_factory) -> Engine:
    """The same gallery encoded in the foreground, in a cache of its own."""
    checkpoint = load_checkpoint(small.models["drl-wti"], "cpu")
    return Engine(checkpoint, load_benchmark(Path(small.dataset), "test"), tmp_path_factory.mktemp("finished"),
                  progress=False)


@pytest.fixture(scope="module")
def want(small) -> np.ndarray:
    """The query's WTI scores by the definition (a float64 loop) over features the model computes here (a gallery
    this small keeps its frames in float32): no cache or engine code involved."""
    checkpoint = load_checkpoint(small.models["drl-wti"], "cpu")
    bench, config = load_benchmark(Path(small.dataset), "test"), checkpoint.config
    decoded = decode_videos(bench.video_paths, config.sampling(), config.image_size, num_workers=0, progress=False)
    videos = encode_video_frames(checkpoint.model, decoded.videos, decoded.masks)
    text = encode_texts(checkpoint.model, [QUERY])
    return np_wti(text.tokens, text.mask, text.weights, videos.frames, videos.mask, videos.weights)[0]


class Gates:
    """Hold the gallery's decoder before each chunk until the test opens that chunk's gate."""

    def __init__(self, monkeypatch, chunks: int) -> None:
        self.open = [threading.Event() for _ in range(chunks)]
        self.started = [threading.Event() for _ in range(chunks)]
        decode, self.calls = gallery.decode_videos, 0

        def gated(paths, *args, **kwargs):
            chunk, self.calls = self.calls, self.calls + 1
            self.started[chunk].set()
            assert self.open[chunk].wait(60), "the test never opened this chunk's gate"
            return decode(paths, *args, **kwargs)

        monkeypatch.setattr(gallery, "decode_videos", gated)
        monkeypatch.setattr(gallery, "CHUNK", 2)


def test_searches_answer_over_the_encoded_clips_while_the_rest_encodes(small, finished, want, tmp_path,
                                                                      monkeypatch):
    gates = Gates(monkeypatch, 3)
    gates.open[0].set()
    engine = Engine(load_checkpoint(small.models["drl-wti"], "cpu"), load_benchmark(Path(small.dataset), "test"),
                    tmp_path, progress=False, encode_in_background=True)
    assert gates.started[1].wait(60)  # chunk 1 (clips 0 and 1) is committed, chunk 2 waits at its gate
    assert (engine.coverage.encoded, engine.coverage.total) == (2, 6)

    partial = engine.score_text(QUERY)
    assert partial.notice == "searched the 2 of 6 clips encoded so far (33%); encoding continues"
    np.testing.assert_allclose(partial.ranking[:2], want[:2], rtol=0, atol=1e-6)
    assert np.isneginf(partial.ranking[2:]).all()  # not encoded yet: never retrieved
    assert [h.index for h in engine.search_text(QUERY, k=2).hits] == sorted([0, 1], key=lambda v: -want[v])
    with pytest.raises(QueryError, match="2 of 6 clips are encoded so far"):
        engine.score_text(0)  # a benchmark caption's row needs the whole gallery
    with pytest.raises(QueryError, match="2 of 6 clips are encoded so far"):
        engine.evaluate()
    with pytest.raises(QueryError, match="video 4 is not encoded yet"):
        engine.explain(QUERY, 4)
    assert engine.explain(QUERY, 1).scores["latent"] == pytest.approx(float(want[1]), abs=1e-6)

    messages = []
    gates.open[1].set()
    gates.open[2].set()
    engine.encoding.wait(lambda message, fraction: messages.append((message, fraction)), every_s=0.01)
    assert engine.coverage.encoded == 6 and engine.gallery.complete
    assert all(0 <= f <= 1 for _, f in messages)
    assert any(re.fullmatch(r"encoded [246] of 6 clips, [\d.]+ clips/s, about \d+ s left", m) for m, _ in messages)

    done = engine.score_text(QUERY)
    assert done.notice is None
    np.testing.assert_allclose(done.ranking, want, rtol=0, atol=1e-6)
    assert engine.evaluate() == finished.evaluate()


def test_the_time_left_is_the_clips_left_at_the_rate_so_far():
    progress = EncodeProgress(done=30, total=130, elapsed_s=20.0)  # 1.5 clips/s, 100 clips to go
    assert progress.rate == 1.5
    assert progress.message() == "encoded 30 of 130 clips, 1.5 clips/s, about 1 min 07 s left"
    assert EncodeProgress(7200, 10_000, 600.0).message() == \
        "encoded 7,200 of 10,000 clips, 12.0 clips/s, about 3 min 53 s left"
    assert EncodeProgress(10, 500_000, 10.0).message().endswith("about 138 h 53 min left")


def test_the_app_serves_searches_while_the_load_waits_for_the_encode(tmp_path, monkeypatch):
    """The Load button's request waits for the encode with its progress shown; a search sent meanwhile answers over
    the clips encoded so far and says so in its notice."""
    session = tiny_session(tmp_path, n_test=6)
    gates = Gates(monkeypatch, 3)
    gates.open[0].set()
    shown, loaded = [], {}
    app = Listeners(session)

    def load() -> None:
        loaded["engine"] = session.engine("drl-wti", progress=lambda f, desc="": shown.append((f, desc)))

    loading = threading.Thread(target=load)
    loading.start()
    assert gates.started[1].wait(120)
    _, summary, _, order, notice = app.search_text(QUERY, 6, None, "drl-wti", "", "test", None)
    assert notice == "searched the 2 of 6 clips encoded so far (33%); encoding continues"
    assert notice in summary and sorted(order[:2]) == [0, 1]
    assert loading.is_alive()  # the Load request still waits for the rest, and shows how it goes
    deadline = time.monotonic() + 30
    while not any("clips/s" in desc for _, desc in shown):
        assert time.monotonic() < deadline, f"no progress with clips/s shown: {shown}"
        time.sleep(0.1)
    assert any(re.fullmatch(r"synthetic/test: encoded 2 of 6 clips, [\d.]+ clips/s, about \d+ s left", desc)
               and f == pytest.approx(2 / 6) for f, desc in shown)
    gates.open[1].set()
    gates.open[2].set()
    loading.join(120)
    assert not loading.is_alive() and loaded["engine"].gallery.complete
    _, _, _, _, notice = app.search_text(QUERY, 6, None, "drl-wti", "", "test", None)
    assert notice is None
