"""The app through its scripting API (gradio_client), as a user script would drive it: search, explain, failures."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def served(served_app):
    session, url = served_app
    return session, gradio_client.Client(url, verbose=False)


def _ctx(session, model="drl-wti"):
    return (model, session.dataset, "test")


def _plot(value) -> dict:
    assert value and value["type"] == "plotly", value
    return json.loads(value["plot"])


def _array(value) -> np.ndarray:
    """A plotly JSON array: a list, or plotly 6+'s typed-array form {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return out.reshape([int(n) for n in str(value.get("shape", len(out))).split(",")])
    return np.asarray(value)


def _rank_by_loop(scores: np.ndarray, gt: int) -> int:
    """1-based rank of the ground truth: one plus the videos that score strictly higher."""
    return 1 + sum(1 for v in range(len(scores)) if v != gt and scores[v] > scores[gt])


def test_every_listener_has_its_stable_api_name(served):
    _, client = served
    names = set(client.view_api(return_format="dict")["named_endpoints"])
    assert {"/load", "/search", "/search_video", "/explain", "/metrics", "/failures", "/slices", "/compare",
            "/correlation", "/embedding_map", "/export_html", "/paper_tables"} <= names


def test_header_names_device_model_and_gallery(served):
    session, client = served
    header = client.predict(*_ctx(session), api_name="/load")[0]
    assert "cpu" in header and "drl-wti" in header and "12 videos" in header
    assert "token-wise scorer `torch`" in header  # the served device is the CPU (tests/app_support.py)


def test_search_marks_the_ground_truth_with_its_rank_outside_the_top_k(served):
    """A caption whose video is not first: the summary and the table still give the ground truth and its rank."""
    session, client = served
    engine = session.engine("drl-wti")
    sim = engine.matrices["latent"]
    query = next(i for i in range(engine.num_captions)
                 if _rank_by_loop(sim[i], int(engine.bench.caption_video[i])) > 1)
    gt = int(engine.bench.caption_video[query])
    rank = _rank_by_loop(sim[query], gt)
    gallery, summary, table, *_ = client.predict(engine.bench.captions[query], 1, "auto", *_ctx(session),
                                                 api_name="/search")
    gt_id = engine.bench.video_ids[gt]
    assert f"rank {rank}" in summary and gt_id in summary and "outside the top 1" in summary
    rows = {row[table["headers"].index("video")]: row for row in table["data"]}
    assert rows[gt_id][table["headers"].index("ground truth")] == "✓"
    assert rows[gt_id][table["headers"].index("rank")] == rank
    assert len(gallery) == 2 and gallery[-1]["caption"].endswith("✓")  # the top 1, then the ground truth, marked


def test_free_text_query_has_no_ground_truth_and_an_overlong_one_says_so(served):
    session, client = served
    _, summary, table, *_ = client.predict("a red circle moves to the left " * 20, 3, "auto", *_ctx(session),
                                           api_name="/search")
    assert "no ground truth" in summary and "truncated" in summary
    assert len(table["data"]) == 3


def test_empty_query_is_a_clear_error(served):
    session, client = served
    with pytest.raises(AppError, match="query is empty"):
        client.predict("   ", 5, "auto", *_ctx(session), api_name="/search")


def test_explain_shows_the_heatmap_whose_contributions_add_up(served):
    """Explaining a failed caption's top result puts the ground truth beside it; the heatmap's bars add up."""
    session, client = served
    engine = session.engine("drl-wti")
    caption = engine.bench.captions[0]
    md_a, fig_a, _, md_b, fig_b, *_ , walkthrough = client.predict(caption, "", "", "", *_ctx(session),
                                                                   api_name="/explain")
    data = _plot(fig_a)["data"]
    heat = next(t for t in data if t["type"] == "heatmap")
    assert _array(heat["z"]).ndim == 2
    t2v = _array(next(t for t in data if t.get("name", "").startswith("token contribution"))["x"]).sum()
    v2t = _array(next(t for t in data if t.get("name", "").startswith("frame contribution"))["y"]).sum()
    score = float(md_a.split("Scores: WTI **")[1].split("**")[0])
    assert (t2v + v2t) / 2 == pytest.approx(score, abs=1e-4)
    gt_rank = _rank_by_loop(engine.matrices["latent"][0], int(engine.bench.caption_video[0]))
    if gt_rank > 1:
        assert "ground truth" in md_b and f"rank **{gt_rank}**" in md_b
    else:  # the top result is the ground truth: the runner-up stands beside it
        assert "ground truth" in md_a and "rank **2**" in md_b
    assert _plot(fig_b)["data"] and "S = (" in walkthrough


def test_explain_unify_gives_words_and_all_three_scores(served):
    session, client = served
    caption = session.engine("unify").bench.captions[1]
    md_a, _, lex_a, *_ = client.predict(caption, "", "", "", *_ctx(session, "unify"), api_name="/explain")
    assert all(b in md_a for b in ("latent", "lexicon", "fused"))
    assert [t["type"] for t in _plot(lex_a)["data"]] == ["bar", "bar", "bar"]


def test_unknown_video_is_a_clear_error(served):
    session, client = served
    with pytest.raises(AppError, match="no video 'nope'"):
        client.predict("a red circle", "nope", "", "", *_ctx(session), api_name="/explain")


def test_corrupt_upload_is_a_clear_error(served, tmp_path):
    session, client = served
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 10)
    with pytest.raises(AppError, match="broken.mp4"):
        client.predict(None, gradio_client.handle_file(str(bad)), 5, "auto", *_ctx(session), api_name="/search_video")


def test_failures_and_metrics(served):
    session, client = served
    table, summary = client.predict("t2v", "auto", "rank", "(all)", 100, *_ctx(session), api_name="/failures")
    ranks = [row[table["headers"].index("rank")] for row in table["data"]]
    assert ranks and all(r > 1 for r in ranks) and ranks == sorted(ranks, reverse=True)
    assert f"**{len(ranks)}** of 12" in summary
    fig, metrics_table = client.predict(*_ctx(session), api_name="/metrics")
    assert {t["type"] for t in _plot(fig)["data"]} == {"bar"}
    assert {row[1] for row in metrics_table["data"]} == {"t2v", "v2t"}


def test_compare_and_correlation(served):
    session, client = served
    fig, table, summary = client.predict("unify", 1, *_ctx(session), api_name="/compare")
    assert _array(_plot(fig)["data"][0]["z"]).sum() == 12
    fig, stats = client.predict("drl-wti", "unify", session.dataset, "test", api_name="/correlation")
    assert [t["type"] for t in _plot(fig)["data"]].count("heatmap") == 2 and "mean c_ii" in stats


def test_a_figure_exports_as_standalone_html(served):
    session, client = served
    fig, _ = client.predict(*_ctx(session), api_name="/metrics")
    path = client.predict("metrics", *[None] * 5, fig, *[None] * 4, api_name="/export_html")
    html = open(path, encoding="utf-8").read()
    assert "<html>" in html and "plotly" in html.lower() and "R@10" in html


def test_a_failure_explains_the_ground_truth_beside_the_video_that_beat_it(served):
    """What a click on a failure row shows: the ground truth and the winner, each with its rank."""
    session, client = served
    engine = session.engine("drl-wti")
    table, _ = client.predict("t2v", "auto", "rank", "(all)", 10, *_ctx(session), api_name="/failures")
    row = dict(zip(table["headers"], table["data"][0], strict=True))
    md_a, _, _, md_b, *_ = client.predict(row["caption"], row["ground truth"], "", row["beaten by"], *_ctx(session),
                                          api_name="/explain")
    assert md_a.startswith(f"#### {row['ground truth']} — ground truth, rank {row['rank']}")
    assert md_b.startswith(f"#### {row['beaten by']} — rank 1: beat the ground truth")
    assert engine.bench.video_ids[engine.search_text(row["caption"], k=1).hits[0].index] == row["beaten by"]


def test_an_uploaded_gallery_clip_ranks_captions_as_the_gallery_video_does(served):
    """Video-to-text from an upload scores as from the gallery, UNIFY's fused branch included (its scores are
    standardised over the captions for any video query)."""
    session, client = served
    video = session.benchmark().video_paths[3]
    for model in ("drl-wti", "unify"):
        ctx = _ctx(session, model)
        gallery = client.predict("3", None, 12, "auto", *ctx, api_name="/search_video")
        upload = client.predict(None, gradio_client.handle_file(str(video)), 12, "auto", *ctx,
                                api_name="/search_video")
        table_g, table_u = gallery[2], upload[2]
        assert [r[2] for r in table_u["data"]] == [r[2] for r in table_g["data"]], model  # "caption #" column
        scores_u = np.array([r[3] for r in table_u["data"]], dtype=float)
        np.testing.assert_allclose(scores_u, [r[3] for r in table_g["data"]], atol=1e-3)


def _r1_by_loop(scores: np.ndarray, gt: np.ndarray, axis: int) -> float:
    """Percent of queries whose ground truth outscores every other item (axis 1: caption rows rank videos; axis 0:
    video columns rank captions, any of a video's captions counting)."""
    if axis == 1:
        hits = [all(scores[q, v] < scores[q, gt[q]] for v in range(scores.shape[1]) if v != gt[q])
                for q in range(scores.shape[0])]
    else:
        hits = [max(scores[c, v] for c in range(len(gt)) if gt[c] == v)
                > max(scores[c, v] for c in range(len(gt)) if gt[c] != v) for v in range(scores.shape[1])]
    return 100.0 * sum(hits) / len(hits)


def test_papers_tables_bar_what_the_gallery_measures_beside_the_published_numbers(served):
    """The Walkthrough's live ablations: each served checkpoint's R@1 on the gallery (recounted by loop from its
    scores), the papers' MSR-VTT numbers beside them, and sentences carrying the same numbers."""
    session, client = served
    fig, text = client.predict(session.dataset, "test", api_name="/paper_tables")
    bars = {t["name"] + " @ " + str(t["xaxis"]): dict(zip(t["x"], _array(t["y"]).tolist(), strict=True))
            for t in _plot(fig)["data"]}
    engine, unify = session.engine("drl-wti"), session.engine("unify")
    gt = engine.bench.caption_video
    drl = bars["here, text → video @ x"]
    assert drl["WTI<br>(drl-wti)"] == pytest.approx(_r1_by_loop(engine.matrices["latent"], gt, 1))
    assert bars["here, video → text @ x"]["WTI<br>(drl-wti)"] == pytest.approx(
        _r1_by_loop(engine.matrices["latent"], gt, 0))
    paper = bars["paper (MSR-VTT), text → video @ x"]
    # the DRL repository's ablation table (MSR-VTT 1k-A, ViT-B/32), typed by hand; WTI's bar stands beside drl-wti's
    assert (paper["DP, zero-shot"], paper["DP, meanP"], paper["WTI + CDCR"]) == (31.1, 42.9, 47.6)
    assert paper["WTI<br>(drl-wti)"] == 46.6 and paper["TI"] == 44.8
    assert bars["paper (MSR-VTT), video → text @ x"]["WTI + CDCR"] == 45.1
    here = bars["here, text → video @ x2"]
    for branch in ("latent", "lexicon", "fused"):
        assert here[f"{branch}<br>(unify)"] == pytest.approx(_r1_by_loop(unify.matrices[branch], gt, 1))
    gain = round(here["fused<br>(unify)"] - here["latent<br>(unify)"], 1)
    assert f"{gain:+.1f} here" in text and "+4.8 in the paper" in text
    assert ("reversed" in text) == (gain < 0)


def test_the_page_opens_on_drl_wti_whatever_the_registry_order():
    from tvr_demo.ui.session import Session

    assert Session(["drl-ti", "unify", "drl-wti"]).default_model == "drl-wti"  # the registry is alphabetical
    assert Session(["unify", "meanp"]).default_model == "unify"
