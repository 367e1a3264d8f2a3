"""Blind spots and which word decides in headless Chromium: the numbers drawn on the page equal a recount from the
clips' JSON files and a search with the edited query. Run with `pytest -m browser` (see tests/test_browser.py)."""

from __future__ import annotations

import pytest
from app_support import launched, open_app_page
from test_browser import PLOT_TIMEOUT_MS, _shot
from test_diagnosis import _records

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app(diagnosis_session):
    with launched(diagnosis_session) as url:
        yield url, diagnosis_session


@pytest.fixture
def page(browser, app):
    url, _ = app
    page = open_app_page(browser, url, width=1440)
    yield page
    page.close()


def _figure(page, elem_id: str) -> list[dict]:
    """The traces plotly drew inside a component (waits until there are some)."""
    selector = f"#{elem_id} .js-plotly-plot"
    page.wait_for_function(f"() => {{ const gd = document.querySelector('{selector}'); "
                           "return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); }",
                           timeout=PLOT_TIMEOUT_MS)
    return page.evaluate(f"""() => document.querySelector('{selector}').data.map(t => ({{
        name: t.name, type: t.type, xaxis: t.xaxis, x: Array.from(t.x || []), y: Array.from(t.y || []),
        customdata: t.customdata ? Array.from(t.customdata, c => Array.from(c)) : null}}))""")


def _recount(engine, branch: str) -> dict[str, dict[str, float]]:
    """Winoground's three scores per twin attribute (percent), from the clips' JSON files and the branch's scores."""
    records = _records(engine)
    ids = [r["video_id"] for r in records]
    t2v, v2t = engine.matrices.direction(branch, "t2v"), engine.matrices.direction(branch, "v2t")
    caption_of = {}
    for c, v in enumerate(engine.bench.caption_video):
        caption_of.setdefault(int(v), c)
    passed: dict[str, list[tuple[bool, bool, bool]]] = {}
    for a, record in enumerate(records):
        if record["twin_of"] is None or ids.index(record["twin_of"]) < a:
            continue
        b = ids.index(record["twin_of"])
        ca, cb = caption_of[a], caption_of[b]
        text = v2t[ca, a] > v2t[cb, a] and v2t[cb, b] > v2t[ca, b]  # each clip prefers its caption
        video = t2v[ca, a] > t2v[ca, b] and t2v[cb, b] > t2v[cb, a]  # each caption prefers its clip
        for key in (record["differs_in"], "all"):
            passed.setdefault(key, []).append((text, video, text and video))
    return {score: {a: 100 * sum(p[i] for p in ps) / len(ps) for a, ps in passed.items()}
            for i, score in enumerate(("text", "video", "group"))}


def test_blind_spot_shares_on_the_page_equal_a_recount_from_the_clips_json(page, app):
    """Failures tab -> Find blind spots: every bar of both models (text, video, group panels) is a recounted share."""
    _, session = app
    page.get_by_role("tab", name="Failures").click()
    page.get_by_role("button", name="Find blind spots").click()
    traces = _figure(page, "blind-spots-plot")
    for model, branch, kind in (("drl-wti", "latent", "WTI"), ("unify", "fused", "fused")):  # unify: the default B
        want = _recount(session.engine(model), branch)
        for axis, score in (("x", "text"), ("x2", "video"), ("x3", "group")):
            bar = next(t for t in traces if t["name"] == f"{model} ({kind})" and t["xaxis"] == axis)
            shown = dict(zip(bar["x"], bar["y"], strict=True))
            assert shown.keys() == want[score].keys()
            for attribute, share in want[score].items():
                assert shown[attribute] == pytest.approx(share), (model, score, attribute)
    assert "group score" in page.locator("#blind-spots-summary").inner_text()
    _shot(page, "07-blind-spots")


def test_a_counterfactual_rank_on_the_page_equals_a_search_with_the_edited_query(page, app):
    """Explain tab -> Which word decides: each edit's rank drawn on the page is the rank a search with the edited
    query gives the clip (ties counted against it)."""
    _, session = app
    engine = session.engine("drl-wti")
    query = engine.bench.captions[0]
    video = engine.bench.video_ids[int(engine.bench.caption_video[0])]
    page.get_by_role("tab", name="Explain").click()
    page.get_by_label("Query", exact=True).fill(query)
    page.get_by_label("Video (id or index; blank = top result)").fill(video)
    page.get_by_role("button", name="Which word decides?").click()
    traces = _figure(page, "counterfactual-plot")
    shown = {text: rank for t in traces if t["xaxis"] == "x2" for text, rank, _ in t["customdata"]}
    assert len(shown) > len(query.split())  # every removal and some replacements
    index = engine.bench.video_index(video)
    for text, rank in shown.items():
        scores = {h.index: h.score for h in engine.search_text(text, k=engine.gallery_size).hits}
        assert rank == 1 + sum(1 for v, s in scores.items() if v != index and s >= scores[index]), text
    _shot(page, "08-which-word-decides")
