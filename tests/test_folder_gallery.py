"""A user's folder of real clips (the three MSR-VTT reference clips, one in a subfolder, and a corrupt file) through the
Python API, the command line and the app's listeners; with a captions.csv, `evaluate` against metrics worked out
here by hand from an independently computed score matrix."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from app_support import Listeners
from clip_folders import CLIPS, CORRUPT, reference_captions

import tvr_demo
from tvr_demo.cli import main
from tvr_demo.data.video import decode_videos
from tvr_demo.errors import DatasetError
from tvr_demo.retrieval.engine import Engine
from tvr_demo.retrieval.scoring import encode_video_frames, score_files
from tvr_demo.ui.session import Session

PROJECT_ROOT = Path(__file__).resolve().parent.parent
QUERY = "a soccer team walking out on the field"
DECODED = sorted(CLIPS)  # the gallery's ids of the clips that decode, in its (sorted) order


@pytest.fixture(scope="module")
def engine(clip_gallery) -> Engine:
    checkpoint = tvr_demo.load_checkpoint(clip_gallery.wti, "cpu")
    return Engine(checkpoint, tvr_demo.load_benchmark(clip_gallery.folder), clip_gallery.cache, progress=False)


@pytest.fixture(scope="module")
def reference_scores(clip_gallery):
    """(clips, score function): the WTI scores of texts against the decodable clips, by the `score` command's own
    decode-and-encode path (no gallery, no cache, no folder loader)."""
    paths = [clip_gallery.folder / name for name in DECODED]
    return lambda texts: score_files(clip_gallery.wti, list(texts), paths, device="cpu", num_workers=0)


def _ranked(scores: np.ndarray) -> list[int]:
    """Indices best first, by a loop: each item's place is the number of items scoring more (no ties here)."""
    places = {i: sum(1 for s in scores if s > scores[i]) for i in range(len(scores))}
    return sorted(places, key=places.get)


@pytest.fixture
def cli(clip_gallery, monkeypatch, capsys):
    """`python -m tvr_demo ARGS` run in this process on the shared cache: (exit code, stdout, stderr)."""
    monkeypatch.setenv("TVR_DEMO_CACHE", str(clip_gallery.cache))

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--device", "cpu"])
        out, err = capsys.readouterr()
        return code, out, err

    return run


# ---------------------------------------------------------------- Python API


def test_the_folder_loads_with_relative_ids_slices_and_the_corrupt_file_skipped(engine, clip_gallery):
    bench = engine.bench
    assert bench.video_ids == sorted([*CLIPS, CORRUPT])
    assert dict(zip(bench.video_ids, bench.folders, strict=True))["gym/video9771.mp4"] == "gym"
    assert [path for path, _ in engine.skipped] == [CORRUPT]
    reason = engine.skipped[0][1]
    assert "truncated" in reason and str(clip_gallery.folder) not in reason and CORRUPT in reason


def test_a_typed_query_ranks_the_clips_as_the_score_command_scores_them(engine, reference_scores):
    """The hits are the decodable clips in the order of their independently computed scores, the corrupt file never
    among them with a score."""
    want = reference_scores([QUERY])[0]
    hits = [h for h in engine.search_text(QUERY, k=10).hits if np.isfinite(h.score)]
    assert [engine.bench.video_ids[h.index] for h in hits] == [DECODED[i] for i in _ranked(want)]
    np.testing.assert_allclose([h.score for h in hits], sorted(want, reverse=True), atol=1e-5)
    assert [h.rank for h in hits] == [0, 1, 2]


def test_tvr_demo_load_takes_the_folder(clip_gallery, monkeypatch):
    monkeypatch.setenv("TVR_DEMO_CACHE", str(clip_gallery.cache))
    engine = tvr_demo.load(clip_gallery.wti, dataset=clip_gallery.folder, device="cpu", progress=False)
    assert engine.gallery_size == 4 and engine.num_captions == 0
    with pytest.raises(DatasetError, match="a captions.csv beside the clips"):
        engine.evaluate()


def test_similar_clips_rank_by_the_cosine_of_mean_frame_features(engine, clip_gallery):
    """Video -> video: a gallery clip's neighbours by the cosine of each clip's mean normalised frame feature,
    computed here from the frame features of a fresh decode; the clip itself and the corrupt file are left out; a
    file of the same clip from outside finds it first, at cosine 1."""
    checkpoint = tvr_demo.load_checkpoint(clip_gallery.wti, "cpu")
    config = checkpoint.config
    decoded = decode_videos([clip_gallery.folder / n for n in DECODED], config.sampling(), config.image_size,
                            num_workers=0, progress=False)
    bank = encode_video_frames(checkpoint.model, decoded.videos, decoded.masks)
    pooled = []
    for frames, mask in zip(bank.frames, bank.mask, strict=True):
        valid = [f / f.norm() for f, m in zip(frames, mask, strict=True) if m]
        mean = torch.stack(valid).sum(0) / len(valid)
        pooled.append((mean / mean.norm()).numpy())
    query = DECODED.index("gym/video9771.mp4")
    cosines = np.array([float(pooled[query] @ p) for p in pooled])
    cosines[query] = -np.inf
    result = engine.search_similar(engine.bench.video_index("gym/video9771.mp4"), k=10)
    assert [engine.bench.video_ids[h.index] for h in result.hits] == [DECODED[i] for i in _ranked(cosines)][:2]
    np.testing.assert_allclose([h.score for h in result.hits], sorted(cosines, reverse=True)[:2], atol=1e-5)
    same = engine.search_similar(Path(clip_gallery.folder / "video7500.mp4").resolve(), k=1).hits
    assert engine.bench.video_ids[same[0].index] == "video7500.mp4"  # a file, even inside the gallery, is any clip
    assert same[0].score == pytest.approx(1.0, abs=1e-5)


def test_the_readme_lines_run_on_the_folder(clip_gallery, monkeypatch):
    """The python block of the README's "Your own clips" section, with its folder and clip names replaced by the
    reference folder's, on the bundled drl-wti."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8").split("## Your own clips", 1)[1]
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert block.count("./my_clips") == 1 and block.count("cats/a.mp4") == 1
    block = block.replace("./my_clips", str(clip_gallery.folder)).replace("cats/a.mp4", "gym/video9771.mp4")
    monkeypatch.setenv("TVR_DEMO_CACHE", str(clip_gallery.cache))
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    engine = namespace["engine"]
    assert sorted(engine.bench.video_ids[h.index] for h in namespace["hits"] if np.isfinite(h.score)) == DECODED
    assert {engine.bench.video_ids[h.index] for h in namespace["alike"]} == {"video7500.mp4", "video9770.mp4"}


# ---------------------------------------------------------------- the command line


def test_the_search_command_prints_paths_scores_and_ranks(engine, clip_gallery, cli):
    code, out, err = cli("search", "--checkpoint", clip_gallery.wti, "--dataset", str(clip_gallery.folder), QUERY,
                         "--k", "2", "--json")
    assert code == 0, err
    printed = json.loads(out)
    row = engine.score_text(QUERY)
    want = [engine.bench.video_ids[i] for i in _ranked(np.where(np.isfinite(row.ranking), row.ranking, -9))][:2]
    assert [(h["rank"], h["path"]) for h in printed["hits"]] == [(1, want[0]), (2, want[1])]
    np.testing.assert_allclose([h["score"] for h in printed["hits"]],
                               [row.ranking[engine.bench.video_index(v)] for v in want], atol=1e-5)
    assert printed["ground_truth_rank"] is None and printed["score"] == "WTI"
    assert [s["path"] for s in printed["skipped"]] == [CORRUPT]
    assert str(clip_gallery.folder) not in out
    assert err.count(f"{CORRUPT}:") == 1  # the corrupt file is listed once, with its reason


def test_the_search_command_searches_by_a_clip(engine, clip_gallery, cli):
    code, out, err = cli("search", "--checkpoint", clip_gallery.wti, "--dataset", str(clip_gallery.folder), "--video",
                         "gym/video9771.mp4")
    assert code == 0, err
    lines = out.splitlines()
    assert "pooled video cosine" in lines[0]
    expected = engine.search_similar(engine.bench.video_index("gym/video9771.mp4")).hits
    assert [line.split()[2] for line in lines[1:]] == [engine.bench.video_ids[h.index] for h in expected]
    code, _, err = cli("search", "--checkpoint", clip_gallery.wti, "--dataset", str(clip_gallery.folder), "--video",
                       CORRUPT)
    assert code == 2 and err.strip().endswith(f"error: {CORRUPT} could not be decoded, so it has no features to "
                                              "search with")


@pytest.fixture(scope="module")
def hand_ranks(reference_scores, msrvtt_reference) -> tuple[list[str], list[int], list[int], list[int]]:
    """(captions in captions.csv order, each one's clip in DECODED order, t2v ranks, v2t ranks per DECODED clip):
    1-based ranks counted by loops over the score command's 3 x 3 matrix, ties against the ground truth."""
    captions = reference_captions(msrvtt_reference)
    gt_of = {Path(name).stem: DECODED.index(name) for name in DECODED}
    texts = list(captions.values())
    gt = [gt_of[video] for video in captions]
    sim = reference_scores(texts)
    t2v = [1 + sum(1 for j in range(3) if j != gt[i] and sim[i][j] >= sim[i][gt[i]]) for i in range(3)]
    caption_of = {g: i for i, g in enumerate(gt)}
    v2t = [1 + sum(1 for i in range(3) if i != caption_of[v] and sim[i][v] >= sim[caption_of[v]][v]) for v in range(3)]
    return texts, gt, t2v, v2t


def test_evaluate_matches_metrics_worked_out_by_hand(clip_gallery, hand_ranks, cli):
    """captions.csv from the 1k-A rows: evaluate's R@1/5/10, MdR and MnR in both directions equal the ones counted
    here from the score command's 3 x 3 matrix (the corrupt clip, which no caption names, never outranks one)."""
    texts, _, t2v, v2t = hand_ranks

    def by_hand(ranks: list[int]) -> dict[str, float]:
        return {"R@1": 100 * sum(r <= 1 for r in ranks) / 3, "R@5": 100 * sum(r <= 5 for r in ranks) / 3,
                "R@10": 100 * sum(r <= 10 for r in ranks) / 3, "MdR": float(statistics.median(ranks)),
                "MnR": sum(ranks) / 3}

    code, out, err = cli("evaluate", "--checkpoint", clip_gallery.wti, "--dataset", str(clip_gallery.captioned))
    assert code == 0, err
    printed = json.loads(out)
    for direction, ranks in (("t2v", t2v), ("v2t", v2t)):
        assert printed[direction] == pytest.approx(by_hand(ranks)), direction
    assert printed["skipped_videos"] == [CORRUPT]
    code, out, _ = cli("search", "--checkpoint", clip_gallery.wti, "--dataset", str(clip_gallery.captioned), texts[0],
                       "--json")
    assert code == 0 and json.loads(out)["ground_truth_rank"] == t2v[0]


# ---------------------------------------------------------------- the app's views without captions


@pytest.fixture(scope="module")
def listeners(clip_gallery) -> tuple[Listeners, Session]:
    session = Session([clip_gallery.wti], clip_gallery.folder, "test", device="cpu", cache_root=clip_gallery.cache)
    return Listeners(session), session


def test_the_views_that_need_captions_say_which_file_turns_them_on(listeners):
    cb, session = listeners
    model = next(iter(session.models))
    for call in (lambda: cb.run_metrics(model, "", "test", progress=None),
                 lambda: cb.run_failures("t2v", "auto", "rank", "(all)", 10, model, "", "test", progress=None),
                 lambda: cb.run_papers("", "test", progress=None),
                 lambda: cb.run_search_video("video7500.mp4", None, 5, "auto", model, "", "test", progress=None)):
        with pytest.raises(gr.Error, match="needs captions, and my_clips/ has none: a captions.csv beside the clips"):
            call()
    header = cb.load(model, "", "test", progress=None)[0]
    assert "gym (1)" in header and f"`{CORRUPT}`" in header and "No captions" in header
    assert str(session.dataset) not in header


def test_the_map_colours_the_clips_by_subfolder_and_channels_work(listeners):
    cb, session = listeners
    model = next(iter(session.models))
    figure = cb.run_map("folder", 20, model, "", "test", progress=lambda *a, **k: None)
    names = {trace.name for trace in figure.data}
    assert names == {"(top level) (video)", "gym (video)"}
    placed = [x for trace in figure.data for x in trace.x if np.isfinite(x)]
    assert len(placed) == 3  # the corrupt file has no features to place
    correlation, summary = cb.run_correlation(model, model, "", "test", progress=None)
    assert "no captions" in correlation.layout.title.text and "redundancy" in summary


def test_explain_and_which_word_decides_work_without_captions(listeners):
    """A typed query against a chosen clip: its pair beside the runner-up, and each one-word removal ranked."""
    cb, session = listeners
    model = next(iter(session.models))
    md_a, _, _, md_b, fig_b, *_ = cb.run_explain(QUERY, "gym/video9771.mp4", "", "", model, "", "test", progress=None)
    assert md_a.startswith("#### gym/video9771.mp4 — rank ") and fig_b is not None and CORRUPT not in md_b
    figure, summary = cb.run_counterfactual(QUERY, "gym/video9771.mp4", "auto", model, "", "test", progress=None)
    assert f"{len(QUERY.split())} one-word edits scored against all 4 videos" in summary


def test_a_captioned_folder_filters_failures_by_subfolder_and_maps_outcomes(clip_gallery, hand_ranks):
    """With captions.csv the subfolders are slices of the failure list, as a benchmark's attributes are; the map's
    outcome colours mark the clip no caption names."""
    texts, gt, t2v, _ = hand_ranks
    session = Session([clip_gallery.wti], clip_gallery.captioned, "test", device="cpu", cache_root=clip_gallery.cache)
    cb, model = Listeners(session), next(iter(session.models))
    failures_tab = next(tab for tab in cb.tabs if tab.id == "failures")
    picker = failures_tab.loaded(session.engine(model))[0]  # what the load listener puts in the Slice picker
    choices = [c[0] if isinstance(c, tuple) else c for c in picker.choices]
    assert {"folder:gym", "folder:(top level)"} <= set(choices)
    gym = gt.index(DECODED.index("gym/video9771.mp4"))  # the caption of the clip in gym/
    table, summary, _ = cb.run_failures("t2v", "auto", "rank", "folder:gym", 10, model, "", "test", progress=None)
    assert f"**{int(t2v[gym] > 1)}** of 1 t2v queries miss rank 1" in summary
    assert list(table.get("caption", [])) == ([texts[gym]] if t2v[gym] > 1 else [])
    figure = cb.run_map("outcome", 0, model, "", "test", progress=lambda *a, **k: None)
    assert "video without caption (video)" in {trace.name for trace in figure.data}

