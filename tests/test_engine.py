"""The engine's numbers as a user sees them (ranks, metrics, DSL, slices, failures), each against a loop written
in the test over the engine's own score matrix, plus the settings read from the environment."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from app_support import Listeners
from reference import loop_pessimistic_rank

from tvr_demo.retrieval.ranking import ScoreRow
from tvr_demo.ui import failures_tab
from tvr_demo.ui.session import Session


@pytest.fixture(scope="module")
def wti(tiny_app):
    return tiny_app.engine("drl-wti")


@pytest.fixture(scope="module")
def unify(tiny_app):
    return tiny_app.engine("unify")


def loop_metrics(ranks: list[int]) -> dict[str, float]:
    """R@k = percent of ranks < k, MdR / MnR = median / mean rank + 1 (DRL's table), from 0-based ranks."""
    return {"R@1": 100 * sum(r < 1 for r in ranks) / len(ranks), "R@5": 100 * sum(r < 5 for r in ranks) / len(ranks),
            "R@10": 100 * sum(r < 10 for r in ranks) / len(ranks), "MdR": statistics.median(ranks) + 1,
            "MnR": sum(ranks) / len(ranks) + 1}


def loop_t2v_ranks(sim: np.ndarray, caption_video) -> list[int]:
    return [loop_pessimistic_rank(sim[q], [int(caption_video[q])]) for q in range(sim.shape[0])]


def loop_v2t_ranks(sim: np.ndarray, caption_video) -> list[int]:
    """Each video queries the captions; found by its best caption; its other captions never count against it."""
    return [loop_pessimistic_rank(sim[:, v], [q for q, g in enumerate(caption_video) if g == v])
            for v in range(sim.shape[1])]


def loop_dual_softmax(sim: np.ndarray, axis: int, temperature: float = 100.0) -> np.ndarray:
    """sim * softmax(temperature * sim) over the query axis (CAMoE's DSL), one line at a time, in float32 as the
    evaluation computes it (at temperature 100 the exp of a score 0.9 below its line's best underflows to 0 there)."""
    out = np.zeros_like(sim, dtype=np.float32)
    for i in range(sim.shape[1 - axis]):
        line = (sim[:, i] if axis == 0 else sim[i]).astype(np.float32)
        e = np.exp(line * np.float32(temperature) - np.float32(temperature) * line.max())
        if axis == 0:
            out[:, i] = e / e.sum() * line
        else:
            out[i] = e / e.sum() * line
    return out


# ---------------------------------------------------------------- ranks: one pessimistic tie rule


def test_a_tie_counts_against_the_ground_truth():
    """By hand: scores 0.5, 0.9, 0.5, 0.5 with ground truth 0 -> rank 3 (0.9 and both ties above it); with
    ground truths 0 and 2 -> the best ground truth (0.5) has 0.9 and one tie (item 3) above it: rank 2."""
    scores = {"latent": np.array([0.5, 0.9, 0.5, 0.5])}
    assert ScoreRow(scores, "latent", (0,)).ground_truth_rank == 3
    assert ScoreRow(scores, "latent", (0, 2)).ground_truth_rank == 2
    assert ScoreRow(scores, "latent", (2, 0)).ground_truth_rank == 2
    # ground truths 0 (0.3) and 2 (0.5): only 0.9 is above the best one, the other ground truth never counts
    assert ScoreRow({"latent": np.array([0.3, 0.9, 0.5, 0.4])}, "latent", (0, 2)).ground_truth_rank == 1
    hits = ScoreRow(scores, "latent", (0,)).result(4).hits
    assert [h.index for h in hits] == [1, 0, 2, 3] and [h.rank for h in hits] == [0, 1, 2, 3]


@pytest.mark.parametrize("model", ["wti", "unify"])
def test_search_ranks_are_the_loop_ranks_of_the_matrix(request, model):
    engine = request.getfixturevalue(model)
    branch = engine.ranking_branch(None)
    for q in (0, 4, 7):
        row = engine.matrices[branch][q]
        result = engine.search_text(engine.bench.captions[q], k=5)
        gt = int(engine.bench.caption_video[q])
        assert result.ground_truth == [gt]
        assert result.ground_truth_rank == loop_pessimistic_rank(row, [gt])
        assert [h.score for h in result.hits] == pytest.approx(sorted(row, reverse=True)[:5])
    for v in (0, 3):
        column = engine.matrices.direction(branch, "v2t")[:, v]
        captions = engine.bench.captions_of(v)
        result = engine.search_video(v, k=5)
        assert result.ground_truth_rank == loop_pessimistic_rank(column, captions)


# ---------------------------------------------------------------- evaluation (the CLI's evaluate prints this)


@pytest.mark.parametrize("model", ["wti", "unify"])
def test_evaluate_with_and_without_dsl_equals_loops_over_the_matrix(request, model):
    engine = request.getfixturevalue(model)
    cv = [int(v) for v in engine.bench.caption_video]
    result = engine.evaluate(dsl=True)
    for branch in engine.branches:
        sim = engine.matrices[branch]
        v2t_sim = engine.matrices.direction(branch, "v2t")
        got = result[branch] if engine.is_unify else result
        assert got["t2v"] == pytest.approx(loop_metrics(loop_t2v_ranks(sim, cv)))
        assert got["v2t"] == pytest.approx(loop_metrics(loop_v2t_ranks(v2t_sim, cv)))
        dsl = got["dsl"]
        assert dsl["t2v"] == pytest.approx(loop_metrics(loop_t2v_ranks(loop_dual_softmax(sim, 0), cv)))
        assert dsl["v2t"] == pytest.approx(loop_metrics(loop_v2t_ranks(loop_dual_softmax(v2t_sim, 1), cv)))
    top = "fused" if engine.is_unify else "latent"
    assert result["t2v"] == pytest.approx(loop_metrics(loop_t2v_ranks(engine.matrices[top], cv)))
    assert "not in the official DRL code" in result["dsl"]["note"]
    assert (set(result) - {"t2v", "v2t", "dsl", "skipped_videos"}) == (set(engine.branches) if engine.is_unify else set())


@pytest.mark.parametrize("model", ["wti", "unify"])
def test_typed_evaluation_holds_every_branch_and_the_ranking_one(request, model):
    """The analysis' typed result: one BranchMetrics per branch (DRL too), the top one the branch search ranks by."""
    engine = request.getfixturevalue(model)
    cv = [int(v) for v in engine.bench.caption_video]
    result = engine.analysis.evaluate()
    assert list(result.branches) == list(engine.branches)
    assert result.ranking == ("fused" if engine.is_unify else "latent")
    for branch, m in result.branches.items():
        assert m.t2v == pytest.approx(loop_metrics(loop_t2v_ranks(engine.matrices[branch], cv)))
        assert m.v2t == pytest.approx(loop_metrics(loop_v2t_ranks(engine.matrices.direction(branch, "v2t"), cv)))
        assert m.dsl_t2v is None and m.dsl_v2t is None
    assert result.skipped_videos == []


def test_unify_v2t_fused_standardises_over_the_captions(unify):
    """For video queries the fused score standardises each video's column over the captions (not rows over videos)."""
    lam = unify.config.unify.fusion_lambda
    lat, lex = unify.matrices["latent"], unify.matrices["lexicon"]

    def z(x):
        return (x - x.mean()) / x.std() if x.std() > 0 else np.zeros_like(x)

    for v in range(unify.gallery_size):
        np.testing.assert_allclose(unify.matrices.direction("fused", "v2t")[:, v], z(lat[:, v].astype(np.float64)) +
                                   lam * z(lex[:, v].astype(np.float64)), atol=1e-4)


# ---------------------------------------------------------------- slices and failures


def test_slice_metrics_count_and_recall_per_slice(wti):
    labels = wti.analysis.caption_slices()
    ranks = loop_t2v_ranks(wti.matrices["latent"], wti.bench.caption_video)
    stats = wti.analysis.slice_metrics()
    for name, got in stats.items():
        members = [q for q, ls in enumerate(labels) if name in ls]
        assert got["n"] == len(members)
        assert got["R@1"] == pytest.approx(100 * sum(ranks[q] < 1 for q in members) / len(members))
    assert sorted(stats) == sorted({label for ls in labels for label in ls})


def test_v2t_slices_are_the_union_of_the_videos_captions():
    """By hand: video 0 has captions 0 and 1 (labelled a, b), video 1 caption 2 (a, c) -> [a, b] and [a, c]."""
    from tvr_demo.evaluation.analysis import query_slices

    labels, caption_video = [["a"], ["b"], ["a", "c"]], np.array([0, 0, 1])
    assert query_slices(labels, caption_video, 2, "v2t") == [["a", "b"], ["a", "c"]]
    assert query_slices(labels, caption_video, 2, "t2v") == [["a"], ["b"], ["a", "c"]]


@pytest.mark.parametrize("direction", ["t2v", "v2t"])
def test_failures_filtered_to_a_slice_are_its_missed_queries(wti, direction):
    labels = failures_tab.query_slices(wti, direction)
    sim = wti.matrices.direction("latent", direction)
    ranks = (loop_t2v_ranks if direction == "t2v" else loop_v2t_ranks)(sim, [int(v) for v in wti.bench.caption_video])
    label = max({x for ls in labels for x in ls}, key=lambda x: sum(x in ls for ls in labels))
    table, pairs, summary = failures_tab.failures_view(wti, direction, "latent", "rank", label, 1000)
    missed = [q for q in range(len(ranks)) if ranks[q] >= 1 and label in labels[q]]
    in_slice = sum(label in ls for ls in labels)
    assert f"**{len(missed)}** of {in_slice} {direction} queries" in summary
    assert sorted(table["rank"].tolist()) == sorted(ranks[q] + 1 for q in missed)


# ---------------------------------------------------------------- settings from the environment


def test_max_engines_is_read_from_the_environment(tiny_app, monkeypatch):
    specs = list(tiny_app.models.values())
    monkeypatch.setenv("TVR_DEMO_MAX_ENGINES", "3")
    assert Session(specs, tiny_app.dataset, device="cpu").max_engines == 3
    assert Session(specs, tiny_app.dataset, device="cpu", max_engines=5).max_engines == 5  # the argument wins
    monkeypatch.setenv("TVR_DEMO_MAX_ENGINES", "0")
    assert Session(specs, tiny_app.dataset, device="cpu").max_engines == 1  # at least the engine in use
    monkeypatch.delenv("TVR_DEMO_MAX_ENGINES")
    assert Session(specs, tiny_app.dataset, device="cpu").max_engines == 8


def test_on_zero_gpu_needs_spaces_and_the_flag(monkeypatch):
    from tvr_demo.ui import gpu

    monkeypatch.setattr(gpu, "spaces", object())
    for value, want in (("1", True), ("true", True), ("TRUE", True), ("0", False), ("", False)):
        monkeypatch.setenv("SPACES_ZERO_GPU", value)
        assert gpu.on_zero_gpu() is want
    monkeypatch.setattr(gpu, "spaces", None)
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    assert gpu.on_zero_gpu() is False


# ---------------------------------------------------------------- the slices view and the map's lasso, as callbacks


def test_slices_view_shows_each_models_recall_per_slice(tiny_app):

    fig = Listeners(tiny_app).run_slices("latent", "unify", "drl-wti", "", "test", progress=None)
    assert [t.name for t in fig.data] == ["drl-wti", "unify"]
    for trace in fig.data:
        engine = tiny_app.engine(trace.name)
        labels = engine.analysis.caption_slices()
        ranks = loop_t2v_ranks(engine.matrices["latent"], engine.bench.caption_video)
        for label, r1, n, text in zip(trace.y, trace.x, trace.customdata, trace.text, strict=True):
            members = [q for q, ls in enumerate(labels) if label in ls]
            recount = 100 * sum(ranks[q] < 1 for q in members) / len(members)
            assert r1 == pytest.approx(recount) and n == len(members)
            assert text == f"{recount:.1f}% (n={len(members)})"  # what the bar says: its R@1 and its size


def test_the_map_lasso_lists_the_selected_captions_and_videos(tiny_app):
    from types import SimpleNamespace


    bench = tiny_app.benchmark()
    event = SimpleNamespace(_data={"items": [["caption", 2], ["video", 5], ["caption", 0]]})
    table = Listeners(tiny_app).map_selection("drl-wti", "", "test", event)
    assert table.values.tolist() == [["caption", 2, bench.captions[2]], ["video", 5, bench.video_ids[5]],
                                     ["caption", 0, bench.captions[0]]]
