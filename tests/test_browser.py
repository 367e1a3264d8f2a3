"""The app in headless Chromium (Debian's, driven by Playwright): what a user sees after each step, with screenshots
in screenshots/. Run with `pytest -m browser`; needs `bash scripts/install_browser.sh` once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from app_support import open_app_page

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
PLOT_TIMEOUT_MS = 120_000  # the map's first UMAP (import + JIT) can take a minute on a busy machine


@pytest.fixture(scope="module")
def app_url(served_app):
    session, url = served_app
    return url, session


@pytest.fixture
def page(browser, app_url):
    url, _ = app_url
    page = open_app_page(browser, url, width=1500)
    yield page
    page.close()


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _plot_traces(page, elem_id: str) -> list[str]:
    """Trace types of the plotly figure drawn inside a component (waits until it has traces)."""
    selector = f"#{elem_id} .js-plotly-plot"
    page.wait_for_function(f"() => {{ const gd = document.querySelector('{selector}'); "
                           "return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); }",
                           timeout=PLOT_TIMEOUT_MS)
    return page.evaluate(f"() => document.querySelector('{selector}').data.map(t => t.type)")


def _search(page, query: str) -> None:
    box = page.get_by_label("Text query")
    box.fill(query)
    box.press("Enter")
    page.locator("#search-summary").get_by_text("is at rank").wait_for(timeout=30_000)


def test_page_loads_with_its_header(page):
    """The header names the device, the model and the gallery."""
    header = page.get_by_text("Device").first.locator("xpath=..").inner_text()
    assert "cpu" in header and "drl-wti" in header and "12 videos" in header
    _shot(page, "01-start")


def test_text_query_shows_clips_with_the_ground_truth(page, app_url):
    """A benchmark caption returns playable clips and says where its ground truth ranked."""
    _, session = app_url
    bench = session.engine().bench
    _search(page, bench.captions[0])
    gt = bench.video_ids[int(bench.caption_video[0])]
    assert page.locator("#search-results video").count() >= 1
    assert page.locator("#search-table").get_by_text(gt, exact=True).filter(visible=True).count() >= 1
    assert gt in page.locator("#search-summary").inner_text()
    _shot(page, "02-search")


def test_a_result_opens_its_heatmap(page, app_url):
    """Clicking a result row opens the explain view with the token x frame heatmap and its markers."""
    _, session = app_url
    engine = session.engine()
    _search(page, engine.bench.captions[0])
    top = engine.bench.video_ids[engine.search_text(engine.bench.captions[0], k=1).hits[0].index]
    page.locator("#search-table").get_by_text(top, exact=True).filter(visible=True).first.click()
    traces = _plot_traces(page, "explain-a")
    assert "heatmap" in traces and traces.count("bar") == 4
    assert page.locator("#explain-a g.hm image").count() == 1  # the heatmap was painted
    assert _plot_traces(page, "explain-b").count("heatmap") == 1  # the contrast pair beside it
    _shot(page, "03-explain")


def test_failures_tab_draws_metrics_and_lists_failures(page):
    """Opening the failures tab evaluates the model and lists the failed queries worst first."""
    page.get_by_role("tab", name="Failures").click()
    assert set(_plot_traces(page, "metrics-plot")) == {"bar"}
    assert page.locator("#metrics-plot .bars path").count() > 0
    page.get_by_text("queries miss rank 1").wait_for(timeout=30_000)
    assert page.locator("#failures-table").get_by_text("video", exact=False).filter(visible=True).count() > 0
    _shot(page, "04-failures")


def test_embedding_map_draws_and_a_click_opens_the_explain_view(page, app_url):
    """The map shows captions and videos; hovering a video shows its frame; clicking a caption explains it."""
    page.get_by_role("tab", name="Map").click()
    page.get_by_role("button", name="Draw the map").click()
    traces = _plot_traces(page, "embedding-map")
    assert traces.count("scattergl") >= 2
    _shot(page, "05-map")
    video = page.evaluate("""() => {
        const gd = document.querySelector('#embedding-map .js-plotly-plot');
        const t = gd.data.find(t => t.customdata && t.customdata[0][0] === 'video');
        return t.customdata[0];
    }""")
    page.wait_for_timeout(1000)  # the bridge attaches its listeners on its next tick
    page.evaluate("""(video) => document.querySelector('#embedding-map .js-plotly-plot')
        .emit('plotly_hover', {points: [{customdata: video}], event: {clientX: 300, clientY: 300}})""", video)
    page.locator("#tvr-map-thumbnail img").wait_for(timeout=30_000)
    page.evaluate("""() => document.querySelector('#embedding-map .js-plotly-plot')
        .emit('plotly_click', {points: [{customdata: ['caption', 0, '']}]})""")
    assert "heatmap" in _plot_traces(page, "explain-a")
    assert page.get_by_label("Query", exact=True).input_value() == app_url[1].engine().bench.captions[0]
    _shot(page, "06-map-click-explain")


def _table_rows(page, elem_id: str) -> list[dict[str, str]]:
    """A dataframe's rows as the page shows them (gradio draws them as grid rows under a header table), by header."""
    page.locator(f"#{elem_id} [role=grid] div[role=row]").first.wait_for(timeout=30_000)
    return page.evaluate(f"""() => {{
        const root = document.querySelector('#{elem_id}');
        const heads = [...root.querySelectorAll('th[role=columnheader]')].map(th => th.getAttribute('title'));
        return [...root.querySelectorAll('[role=grid] div[role=row]')].map(row => Object.fromEntries(
            [...row.querySelectorAll('[role=gridcell]')].map((cell, i) => [heads[i], cell.innerText.trim()])));
    }}""")


def _rank_by_loop(scores, gt: int) -> int:
    """1-based rank of the ground truth, ties counted against it (as the official metric): one plus every other
    video that scores at least as much."""
    return 1 + sum(1 for v in range(len(scores)) if v != gt and scores[v] >= scores[gt])


def test_the_ground_truth_rank_on_the_page_is_the_engines(page, app_url):
    """For every caption whose ground truth misses rank 1 (or the first caption), the summary and the ✓ row give the
    rank a loop over the model's scores gives."""
    _, session = app_url
    engine = session.engine()
    scores, gt = engine.matrices["latent"], engine.bench.caption_video
    caption = next((c for c in range(len(gt)) if _rank_by_loop(scores[c], int(gt[c])) > 1), 0)
    expected = _rank_by_loop(scores[caption], int(gt[caption]))
    _search(page, engine.bench.captions[caption])
    assert f"is at rank {expected} of {engine.gallery_size}" in page.locator("#search-summary").inner_text()
    marked = [r for r in _table_rows(page, "search-table") if r["ground truth"] == "✓"]
    assert [int(r["rank"]) for r in marked] == [expected]
    assert marked[0]["video"] == engine.bench.video_ids[int(gt[caption])]


def test_failures_are_listed_worst_first(page, app_url):
    """The failures table lists every caption that misses rank 1, its rank from a loop over the scores, worst first."""
    _, session = app_url
    engine = session.engine()
    scores, gt = engine.matrices["latent"], engine.bench.caption_video
    page.get_by_role("tab", name="Failures").click()
    page.get_by_text("queries miss rank 1").wait_for(timeout=60_000)
    rows = _table_rows(page, "failures-table")
    ranks = [int(r["rank"]) for r in rows]
    assert ranks == sorted(ranks, reverse=True)
    expected = {c: _rank_by_loop(scores[c], int(gt[c])) for c in range(len(gt))}
    assert {int(r["query #"]): int(r["rank"]) for r in rows} == {c: r for c, r in expected.items() if r > 1}
    for r in rows:  # what beat each ground truth is the caption's top-scoring video
        assert r["beaten by"] == engine.bench.video_ids[int(scores[int(r["query #"])].argmax())]
    page.wait_for_timeout(1000)  # the column widths arrive just after the rows
    right = page.evaluate("() => Math.max(...[...document.querySelectorAll('#failures-table th[role=columnheader]')]"
                          ".map(th => th.getBoundingClientRect().right))")
    assert right <= page.viewport_size["width"]  # every column on screen (auto widths pushed them off the edge)


def test_the_explained_video_is_the_one_clicked(page, app_url):
    """Clicking the third result row explains that video (not the top one), for that query."""
    _, session = app_url
    engine = session.engine()
    query = engine.bench.captions[1]
    _search(page, query)
    third = _table_rows(page, "search-table")[2]
    page.locator("#search-table [role=grid] div[role=row]").nth(2).locator("[role=gridcell]").nth(1).click()
    page.get_by_label("Video (id or index; blank = top result)").filter(visible=True).wait_for(timeout=30_000)
    _plot_traces(page, "explain-a")
    page.wait_for_function(f"() => document.querySelector('#explain-a .js-plotly-plot').layout.title.text"
                           f".startsWith('{third['video']} ')", timeout=PLOT_TIMEOUT_MS)
    assert page.get_by_label("Video (id or index; blank = top result)").input_value() == third["video"]
    assert page.get_by_label("Query", exact=True).input_value() == query
    header = page.locator("h4").filter(has_text=third["video"]).first.inner_text()
    assert header.startswith(f"{third['video']} — ") and f"rank {third['rank']}" in header
