"""A folder of real clips (no captions) served as `python app.py --dataset my_clips` serves it, in headless Chromium:
a typed query's ranks on the page are the engine's, similar clips are ranked by the pooled cosine the page names, and
the Failures tab says which file would turn it on. Run with `pytest -m browser` (see tests/test_browser.py)."""

from __future__ import annotations

import numpy as np
import pytest
from app_support import launched, open_app_page
from clip_folders import CORRUPT
from test_browser import _shot, _table_rows

from tvr_demo.ui.session import Session

pytestmark = pytest.mark.browser

QUERY = "a little girl does gymnastics"


@pytest.fixture(scope="module")
def app(clip_gallery):
    session = Session([clip_gallery.wti], clip_gallery.folder, "test", device="cpu", cache_root=clip_gallery.cache)
    with launched(session) as url:
        yield url, session


@pytest.fixture
def page(browser, app):
    url, _ = app
    page = open_app_page(browser, url, width=1440)
    page.get_by_text("Slices").first.wait_for(timeout=60_000)  # the header of the loaded folder gallery
    yield page
    page.close()


def _place(scores: np.ndarray, item: int) -> int:
    """1-based place of an item, counted here: one plus the items that score more, ties in index order."""
    return 1 + sum(1 for j, s in enumerate(scores) if s > scores[item] or (s == scores[item] and j < item))


def test_a_typed_query_shows_the_engines_ranks_with_paths_inside_the_folder(page, app, clip_gallery):
    _, session = app
    engine = session.engine()
    text = page.locator("body").inner_text()
    assert "Slices (subfolders): (top level) (3), gym (1)" in text
    assert f"{CORRUPT}: video file is truncated" in text and "No captions" in text
    box = page.get_by_label("Text query")
    box.fill(QUERY)
    box.press("Enter")
    page.locator("#search-summary").get_by_text("no ground truth").wait_for(timeout=60_000)
    scores = engine.score_text(QUERY).ranking
    shown = {r["video"]: int(r["rank"]) for r in _table_rows(page, "search-table")}
    assert shown == {vid: _place(scores, i) for i, vid in enumerate(engine.bench.video_ids) if vid != CORRUPT}
    assert "gym/video9771.mp4" in shown and page.locator("#search-results video").count() == 3  # no corrupt clip
    assert str(clip_gallery.folder) not in page.content()
    _shot(page, "20-folder-search")


def test_similar_clips_are_ranked_by_the_named_pooled_cosine(page, app):
    _, session = app
    engine = session.engine()
    page.get_by_text("Search by a clip").click()
    picker = page.get_by_label("Gallery video (id or index)")
    picker.fill("gym/video9771.mp4")
    picker.press("Enter")
    page.get_by_role("button", name="Find similar clips (video → video)").click()
    page.locator("#similar-summary").get_by_text("pooled video cosine").wait_for(timeout=60_000)
    rows = _table_rows(page, "similar-table")
    expected = engine.search_similar(engine.bench.video_index("gym/video9771.mp4")).hits
    assert [(int(r["rank"]), r["video"]) for r in rows] == [(h.rank + 1, engine.bench.video_ids[h.index])
                                                            for h in expected]
    assert [float(r["pooled video cosine"]) for r in rows] == pytest.approx([h.score for h in expected], abs=1e-4)
    _shot(page, "21-folder-similar")


def test_the_failures_tab_says_which_file_turns_it_on(page):
    page.get_by_role("tab", name="Failures").click()
    notice = page.locator("#failures-notice")
    notice.get_by_text("captions.csv").wait_for(timeout=30_000)
    assert "This tab needs captions, and my_clips/ has none" in notice.inner_text()
    assert not page.locator("#metrics-plot").is_visible()
    page.wait_for_timeout(2000)
    assert page.locator(".toast-body").count() == 0  # opening the tab raised no notice
