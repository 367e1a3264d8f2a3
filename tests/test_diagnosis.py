"""Blind spots and which word decides (tvr_demo.diagnosis.blind_spots, tvr_demo.diagnosis.counterfactual, /blind_spots, /counterfactual),
checked against recounts written here: Winoground's scores on hand-made 2 x 2 score matrices, twin pairs and
confusions counted from the clips' JSON files, and counterfactual ranks from a search with each edited query."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from app_support import launched

from tvr_demo.data.words import CAPTION_BOILERPLATE, STOP_WORDS
from tvr_demo.diagnosis.blind_spots import (
    CHANCE,
    Difference,
    TwinPair,
    attribute_scores,
    blind_spots,
    winoground,
    word_differences,
)
from tvr_demo.diagnosis.counterfactual import counterfactual, one_word_edits
from tvr_demo.ui import failures_tab


@pytest.fixture(scope="module")
def session(diagnosis_session):
    """120 clips (conftest.py): about a fifth of them in twin pairs, several attributes."""
    return diagnosis_session


# ---------------------------------------------------------------------------------------------------- Winoground


def _embed(block: list[list[float]]) -> tuple[np.ndarray, TwinPair]:
    """A 2 x 2 block (rows: captions a, b; columns: clips a, b) placed at captions 3, 7 and videos 5, 2 of a 9 x 8
    matrix of distractors, so that indexing mistakes show."""
    sim = np.full((9, 8), -5.0)
    (aa, ab), (ba, bb) = block
    sim[3, 5], sim[3, 2], sim[7, 5], sim[7, 2] = aa, ab, ba, bb
    return sim, TwinPair(video_a=5, video_b=2, caption_a=3, caption_b=7, attribute="colour")


@pytest.mark.parametrize("block, text, video", [
    ([[0.9, 0.1], [0.2, 0.8]], True, True),  # the diagonal wins everywhere
    ([[0.5, 0.6], [0.1, 0.7]], True, False),  # each clip prefers its caption; caption a prefers clip b
    ([[0.5, 0.1], [0.6, 0.7]], False, True),  # each caption prefers its clip; clip a prefers caption b
    ([[0.9, 0.8], [0.7, 0.6]], False, False),  # caption b and clip b both choose a
    ([[0.5, 0.5], [0.1, 0.9]], True, False),  # a tie is not a preference
])
def test_winoground_scores_on_hand_made_matrices(block, text, video):
    sim, pair = _embed(block)
    outcome = winoground(sim, sim, pair)
    assert (outcome.text, outcome.video, outcome.group) == (text, video, text and video)


def test_text_score_reads_the_video_query_scores_and_video_score_the_text_query_scores():
    """UNIFY's fused scores differ by direction: comparing captions for a clip uses the v2t matrix."""
    good, _ = _embed([[0.9, 0.1], [0.2, 0.8]])
    bad, pair = _embed([[0.1, 0.9], [0.8, 0.2]])
    assert (winoground(good, bad, pair).text, winoground(good, bad, pair).video) == (False, True)
    assert (winoground(bad, good, pair).text, winoground(bad, good, pair).video) == (True, False)


def test_attribute_shares_and_chance():
    outcomes = []
    for attribute, block in [("colour", [[0.9, 0.1], [0.2, 0.8]]), ("colour", [[0.5, 0.6], [0.1, 0.7]]),
                             ("motion", [[0.9, 0.8], [0.7, 0.6]])]:
        sim, pair = _embed(block)
        outcomes.append(winoground(sim, sim, TwinPair(pair.video_a, pair.video_b, pair.caption_a, pair.caption_b,
                                                      attribute)))
    rows = {s.attribute: (s.n, s.text, s.video, s.group) for s in attribute_scores(outcomes)}
    assert rows == {"colour": (2, 1.0, 0.5, 0.5), "motion": (1, 0.0, 0.0, 0.0), "all": (3, 2 / 3, 1 / 3, 1 / 3)}
    assert list(rows) == ["colour", "motion", "all"]
    assert CHANCE == {"text": 0.25, "video": 0.25, "group": pytest.approx(1 / 6)}


# ---------------------------------------------------------------------------------------------------- recounts from JSON


def _records(engine) -> list[dict]:
    """Each split video's attribute record, read from its own JSON file beside the clip."""
    return [json.loads(p.with_suffix(".json").read_text()) for p in engine.bench.video_paths]


def _objects(record: dict) -> list[tuple]:
    out = []
    for o in record["objects"]:
        obj = (o["colour"], o["shape"], o["size"] if o["size"] is not None else "changing", o["motion"])
        if obj not in out:
            out.append(obj)
    return out


def _expected_differences(truth: dict, winner: dict) -> list[tuple[str, str, str]]:
    """The design rule, written out: objects matched so that most attribute values agree (first matching on ties),
    then per matched object colour, shape, size, motion; the count; a reversed sequence; the structure."""
    t, w = _objects(truth), _objects(winner)
    if len(t) == 2 and len(w) == 2:
        matchings = [[(0, 0), (1, 1)], [(1, 0), (0, 1)]]
    elif len(t) == 2:
        matchings = [[(0, 0)], [(1, 0)]]
    elif len(w) == 2:
        matchings = [[(0, 0)], [(0, 1)]]
    else:
        matchings = [[(0, 0)]]
    agree = [sum(t[i][k] == w[j][k] for i, j in m for k in range(4)) for m in matchings]
    best = matchings[agree.index(max(agree))]
    out = []
    for k, name in enumerate(("colour", "shape", "size", "motion")):
        for i, j in best:
            if t[i][k] != w[j][k] and (name, t[i][k], w[j][k]) not in out:
                out.append((name, t[i][k], w[j][k]))
    if truth["count"] != winner["count"]:
        out.append(("count", str(truth["count"]), str(winner["count"])))
    if truth["structure"] == winner["structure"] == "sequence" and best[0] == (1, 0):
        out.append(("order", "as captioned", "reversed"))
    if truth["structure"] != winner["structure"]:
        out.append(("structure", truth["structure"], winner["structure"]))
    return out


def _winner(row: np.ndarray, gt: int) -> tuple[int, int]:
    """(pessimistic rank of the ground truth, first best other video), by loops."""
    rank = sum(1 for v in range(len(row)) if v != gt and row[v] >= row[gt])
    best = max((v for v in range(len(row)) if v != gt), key=lambda v: (row[v], -v))
    return rank, best


@pytest.mark.parametrize("model, branch", [("drl-wti", None), ("unify", "fused"), ("unify", "lexicon")])
def test_twin_shares_and_confusions_equal_a_recount_from_the_clips_json(session, model, branch):
    engine = session.engine(model)
    records = _records(engine)
    ids = [r["video_id"] for r in records]
    b = branch or "latent"
    t2v, v2t = engine.matrices.direction(b, "t2v"), engine.matrices.direction(b, "v2t")
    caption_of = {}
    for c, v in enumerate(engine.bench.caption_video):
        caption_of.setdefault(int(v), c)
    tally: dict[str, list[list[bool]]] = {}
    for a, record in enumerate(records):
        if record["twin_of"] is None or ids.index(record["twin_of"]) < a:
            continue
        twin = ids.index(record["twin_of"])
        ca, cb = caption_of[a], caption_of[twin]
        text = v2t[ca, a] > v2t[cb, a] and v2t[cb, twin] > v2t[ca, twin]
        video = t2v[ca, a] > t2v[ca, twin] and t2v[cb, twin] > t2v[cb, a]
        for key in (record["differs_in"], "all"):
            tally.setdefault(key, []).append([text, video, text and video])
    assert len(tally.get("all", [])) >= 3, "the fixture should have several twin pairs"
    spots = blind_spots(engine, branch)
    got = {s.attribute: (s.n, s.text, s.video, s.group) for s in spots.scores}
    want = {a: (len(v), *np.mean(v, axis=0).tolist()) for a, v in tally.items()}
    assert got.keys() == want.keys()
    for a in want:
        assert got[a] == pytest.approx(want[a]), a

    confusions: dict[str, Counter] = {}
    failures, failures_by = 0, Counter()
    for q, gt in enumerate(engine.bench.caption_video):
        rank, top = _winner(t2v[q], int(gt))
        if rank == 0:
            continue
        failures += 1
        differences = _expected_differences(records[int(gt)], records[top])
        for name, truth, winner in differences:
            confusions.setdefault(name, Counter())[(truth, winner)] += 1
        failures_by.update({name for name, _, _ in differences})
    assert spots.n_failures == failures
    assert dict(spots.failures_by) == dict(failures_by)
    assert {a: dict(c) for a, c in spots.confusions.items()} == {a: dict(c) for a, c in confusions.items()}


def test_each_failure_row_names_how_the_winner_differs(session):
    """The failure list's "differs in" column, for both directions, against the recount from the JSON files."""
    engine = session.engine("drl-wti")
    records, bench = _records(engine), engine.bench
    for direction in ("t2v", "v2t"):
        table, _, _ = failures_tab.failures_view(engine, direction, None, "rank", None, 1000)
        assert len(table) > 0
        for _, row in table.iterrows():
            if direction == "t2v":
                truth, winner = bench.video_index(row["ground truth"]), bench.video_index(row["beaten by"])
            else:
                truth = bench.video_index(row["video"])
                winner = int(bench.caption_video[bench.captions.index(row["beaten by"])])
            words = [f"{n} {t}→{w}" for n, t, w in _expected_differences(records[truth], records[winner])]
            assert row["differs in"] == ", ".join(words)


def test_word_differences_without_attribute_files():
    diffs = word_differences("A man is cooking pasta in a kitchen.",
                             ["a woman cooking in the kitchen", "someone makes food"])
    assert [str(d) for d in diffs] == ["−man", "−pasta", "+woman"]
    assert diffs[0] == Difference("word", "man", "")


# ---------------------------------------------------------------------------------------------------- which word decides


def test_synthetic_edits_remove_each_word_and_swap_each_attribute_word(session):
    engine = session.engine("drl-wti")
    texts = [e.text for e in one_word_edits(engine, "a small red circle moves to the left")]
    removals = ["small red circle moves to the left", "a red circle moves to the left",
                "a small circle moves to the left", "a small red moves to the left", "a small red circle to the left",
                "a small red circle moves the left", "a small red circle moves to left",
                "a small red circle moves to the"]
    swaps = (["a large red circle moves to the left"]
             + [f"a small {c} circle moves to the left" for c in ("orange", "yellow", "green", "blue", "purple",
                                                                   "white")]
             + [f"a small red {s} moves to the left" for s in ("square", "triangle", "star", "cross")]
             + [f"a small red circle moves to the {d}" for d in ("right", "up", "down")])
    assert texts == removals + swaps


@pytest.mark.parametrize("model, branch", [("drl-wti", None), ("unify", None), ("unify", "lexicon")])
def test_counterfactual_ranks_equal_a_search_with_the_edited_query(session, model, branch):
    """Every edit's score and rank (and the ground truth's rank) as engine.search_text reports them, with the
    search's pessimistic tie rule (the lexicon branch has many tied zeros)."""
    engine = session.engine(model)
    caption = next(q for q in range(engine.num_captions) if engine.analysis.ranks("t2v", branch)[q] > 0)
    query, gt = engine.bench.captions[caption], int(engine.bench.caption_video[caption])
    video = engine.search_text(query, k=1, branch=branch).hits[0].index
    cf = counterfactual(engine, query, video, branch)
    assert cf.results and cf.ground_truth == gt
    for r in cf.results[:: max(1, len(cf.results) // 12)]:  # a dozen, removals and replacements: each is a search
        hits = {h.index: h.score for h in engine.search_text(r.edit.text, k=engine.gallery_size, branch=branch).hits}
        assert r.score == pytest.approx(hits[video], abs=1e-5)
        assert r.rank == sum(1 for v, s in hits.items() if v != video and s >= hits[video])
        assert r.truth_rank == sum(1 for v, s in hits.items() if v != gt and s >= hits[gt])
    assert cf.truth_rank == engine.search_text(query, k=1, branch=branch).ground_truth_rank


def test_smallest_fix_is_smallest_and_puts_the_ground_truth_first(session):
    """Over failing captions: a fix of one word exists exactly when some one-word edit brings the ground truth to
    rank 1; every fix does so in a search with the fixed query."""
    found = 0
    for model in ("unify", "drl-wti"):
        found += _check_fixes(session.engine(model))
        if found:
            break
    assert found, "no failing caption of the fixture has a fix: the check never ran"


def _check_fixes(engine, n: int = 3) -> int:
    """The n failures closest to rank 1; returns how many have a fix."""
    ranks = engine.analysis.ranks("t2v")
    failing = sorted((q for q in range(engine.num_captions) if ranks[q] > 0), key=lambda q: (ranks[q], q))[:n]
    found = 0
    for q in failing:
        query, gt = engine.bench.captions[q], int(engine.bench.caption_video[q])
        cf = counterfactual(engine, query, gt)
        one_word = any(r.truth_rank == 0 for r in cf.results)
        if cf.fix is None:
            assert not one_word and cf.fix_note
            continue
        found += 1
        assert (cf.fix.edit.size == 1) == one_word
        hits = {h.index: h.score for h in engine.search_text(cf.fix.edit.text, k=engine.gallery_size).hits}
        assert all(s < hits[gt] for v, s in hits.items() if v != gt)
    return found


# ---------------------------------------------------------------------------------------------------- endpoints


@pytest.fixture(scope="module")
def client(session):
    gradio_client = pytest.importorskip("gradio_client")
    with launched(session) as url:
        yield gradio_client.Client(url, verbose=False)


def _plot(value) -> dict:
    assert value and value["type"] == "plotly", value
    return json.loads(value["plot"])


def test_blind_spots_endpoint(session, client):
    """/blind_spots(branch, second model, model, gallery, split) -> (twin figure, confusion figure, summary)."""
    twins, confusion, summary = client.predict("auto", "unify", "drl-wti", session.dataset, "test",
                                               api_name="/blind_spots")
    spots = blind_spots(session.engine("drl-wti"))
    bars = [t for t in _plot(twins)["data"] if t["type"] == "bar"]
    drl_group = next(t for t in bars if t["name"] == "drl-wti (WTI)" and t["xaxis"] == "x3")
    assert drl_group["x"] == [s.attribute for s in spots.scores]
    assert np.allclose(drl_group["y"], [100 * s.group for s in spots.scores])
    assert {t["name"] for t in bars} == {"drl-wti (WTI)", "unify (fused)"}
    heat = [t for t in _plot(confusion)["data"] if t["type"] == "heatmap"]
    assert len(heat) == len(spots.confusions)
    assert "**drl-wti** (WTI)" in summary and "**unify** (fused)" in summary


def test_counterfactual_endpoint(session, client):
    """/counterfactual(query, video, branch, model, gallery, split) -> (figure, summary)."""
    engine = session.engine("unify")
    query = engine.bench.captions[2]
    video_id = engine.bench.video_ids[int(engine.bench.caption_video[2])]
    figure, summary = client.predict(query, video_id, "lexicon", "unify", session.dataset, "test",
                                     api_name="/counterfactual")
    cf = counterfactual(engine, query, engine.bench.video_index(video_id), "lexicon")
    ranks = {}
    for trace in _plot(figure)["data"]:
        if trace.get("xaxis") == "x2":
            ranks.update({text: rank for text, rank, _ in trace["customdata"]})
    assert ranks == {r.edit.text: r.rank + 1 for r in cf.results}
    assert f"**{video_id}** is at rank **{cf.rank + 1}**" in summary and "lexicon" in summary


def test_counterfactual_endpoint_refuses_an_empty_query(session, client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="query is empty"):
        client.predict("  ", "", "auto", "drl-wti", session.dataset, "test", api_name="/counterfactual")


def test_without_attribute_files_the_views_use_the_words_that_differ(session):
    """The same gallery with its attribute files ignored: failures lose query words (recounted from the captions),
    rows name them, and the counterfactual swaps content words for the benchmark's frequent words."""
    import copy
    import dataclasses

    engine = copy.copy(session.engine("drl-wti"))  # shares the scores; only the benchmark's attributes go
    engine.bench = dataclasses.replace(engine.bench, attributes=None)
    bench, sim = engine.bench, engine.matrices["latent"]
    def words(text: str) -> set[str]:  # the keyword slices' rule: letters only, no stop or boilerplate word, 2+ letters
        return {w for w in re.findall(r"[a-z]+", text.lower())
                if w not in STOP_WORDS and w not in CAPTION_BOILERPLATE and len(w) > 1}

    misses = Counter()
    for q, gt in enumerate(bench.caption_video):
        rank, top = _winner(sim[q], int(gt))
        if rank > 0:
            misses.update(words(bench.captions[q]) - {w for c in bench.captions_of(top) for w in words(bench.captions[c])})
    spots = blind_spots(engine)
    assert spots.kind == "words" and not spots.scores
    assert dict(spots.word_misses) == dict(misses)
    table, _, _ = failures_tab.failures_view(engine, "t2v", None, "rank", None, 3)
    assert all(row.startswith("−") or row.startswith("+") for row in table["differs in"] if row)
    edits = one_word_edits(engine, "a small red circle moves to the left")
    swapped = {e.changes[0][1] for e in edits if e.attribute == "word"}
    assert swapped == {"small", "red", "circle", "moves", "left"}
