"""What a first-time user reads, tab by tab, in headless Chromium at 1440x900 and 1024x768: no label clipped at a
figure's edge, no two value labels on top of each other, tables that show their rows, and the numbers on screen
equal to a recount from the engine's scores. Screenshots of every tab go to screenshots/. Run with `pytest -m
browser` (see tests/test_browser.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from app_support import launched
from test_browser import PLOT_TIMEOUT_MS, SCREENSHOTS, _shot

pytestmark = pytest.mark.browser
VIEWPORTS = [(1440, 900), (1024, 768)]

CLIPPED = """(id) => {  // text drawn outside what its figure shows: the figure's own box, its gradio container, or
  // the plot area plotly clips it to (a bar label cut at the axis' end)
  const host = document.getElementById(id), gd = host.querySelector('.js-plotly-plot');
  const a = host.getBoundingClientRect(), b = gd.getBoundingClientRect();
  const figure = {left: Math.max(a.left, b.left), right: Math.min(a.right, b.right),
                  top: Math.max(a.top, b.top), bottom: Math.min(a.bottom, b.bottom)};
  const clipOf = (el) => {  // the screen box of the nearest clip-path around an element, if any
    for (let e = el.parentElement; e && e !== gd; e = e.parentElement) {
      const ref = e.getAttribute && e.getAttribute('clip-path'), m = ref && ref.match(/#([^)"']+)/);
      const rect = m && document.getElementById(m[1]) && document.getElementById(m[1]).querySelector('rect');
      if (!rect) continue;
      const ctm = e.getScreenCTM(), x = +rect.getAttribute('x') || 0, y = +rect.getAttribute('y') || 0;
      const p = new DOMPoint(x, y).matrixTransform(ctm);
      const q = new DOMPoint(x + +rect.getAttribute('width'), y + +rect.getAttribute('height')).matrixTransform(ctm);
      return {left: Math.min(p.x, q.x), right: Math.max(p.x, q.x), top: Math.min(p.y, q.y), bottom: Math.max(p.y, q.y)};
    }
    return null;
  };
  const outside = (r, box) => r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1
    || r.bottom > box.bottom + 1;
  const out = [];
  for (const t of gd.querySelectorAll('svg text')) {
    const s = t.textContent.trim(), r = t.getBoundingClientRect();
    if (!s || r.width === 0 || r.height === 0) continue;
    const clip = clipOf(t);
    if (outside(r, figure) || (clip && outside(r, clip))) out.push(s);
  }
  return out;
}"""
OVERLAPS = r"""(id) => {  // labels (bar values, text points, panel titles and notes, the title) that touch another
  // ("100100", a title running into its neighbour), or that plotly shrank below a readable size to fit their bar
  const nodes = [...document.getElementById(id).querySelectorAll('.bartext, .textpoint text, .annotation-text, .gtitle')]
    .filter(t => t.textContent.trim());
  const texts = nodes.map(t => [t.textContent.trim(), t.getBoundingClientRect()]);
  const shrunk = (t) => { const m = (t.getAttribute('transform') || '').match(/scale\(([\d.]+)/);
                          return m && parseFloat(m[1]) < 0.7; };  // plotly's fit of a label to its bar
  const out = nodes.filter(shrunk).map(t => [t.textContent.trim(), 'too small']);
  for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
    const a = texts[i][1], b = texts[j][1];
    if (a.left < b.right + 2 && b.left < a.right + 2 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      out.push([texts[i][0], texts[j][0]]);
  }
  return out;
}"""
VISIBLE_ROWS = """(id) => {  // rows of a table that its own scroll box shows whole
  const grid = document.getElementById(id).querySelector('[role=grid]');
  let box = grid;
  while (box.parentElement && !['auto', 'scroll'].includes(getComputedStyle(box).overflowY)) box = box.parentElement;
  const c = box.getBoundingClientRect();
  const rows = [...grid.querySelectorAll('[role=row]')].filter(r => r.querySelector('[role=gridcell]'));
  return [rows.filter(r => { const x = r.getBoundingClientRect(); return x.height > 0 && x.top >= c.top - 1
    && x.bottom <= c.bottom + 1; }).length, rows.length];
}"""


@pytest.fixture(scope="module")
def app(diagnosis_session):
    with launched(diagnosis_session) as url:
        yield url, diagnosis_session


@pytest.fixture(params=VIEWPORTS, ids=lambda v: f"{v[0]}x{v[1]}")
def page(browser, app, request):
    url, _ = app
    width, height = request.param
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.get_by_text("Device").first.wait_for(timeout=60_000)
    page.width = width
    yield page
    page.close()


def _drawn(page, elem_id: str) -> dict:
    """The figure plotly drew in a component (waits for it), as {data, layout}."""
    selector = f"#{elem_id} .js-plotly-plot"
    page.wait_for_function(f"() => {{ const gd = document.querySelector('{selector}'); "
                           "return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); }",
                           timeout=PLOT_TIMEOUT_MS)
    page.wait_for_timeout(300)  # plotly settles its text after the first draw
    # plotly's computed traces (_fullData) hold numeric arrays decoded from the typed-array form the server sends
    return page.evaluate(f"""() => {{ const gd = document.querySelector('{selector}');
        const list = (a) => a == null ? null : Array.from(a, v => ArrayBuffer.isView(v) ? Array.from(v) : v);
        const data = gd._fullData.map(t => ({{name: t.name, type: t.type, mode: t.mode, xaxis: t.xaxis, x: list(t.x),
            y: list(t.y), text: list(t.text), zmin: t.zmin, zmax: t.zmax,
            marker: {{color: t.marker ? t.marker.color : null}}}}));
        return {{data: data, layout: JSON.parse(JSON.stringify(gd.layout))}}; }}""")


def _whole(page, elem_id: str) -> dict:
    """Assert that a drawn figure's labels are all inside it and its value labels apart; return the figure."""
    figure = _drawn(page, elem_id)
    cut, touching = page.evaluate(CLIPPED, elem_id), page.evaluate(OVERLAPS, elem_id)
    if cut or touching:  # the picture that shows what failed
        page.locator(f"#{elem_id}").screenshot(path=str(SCREENSHOTS / f"failed-{elem_id}-{page.width}.png"))
    assert cut == [], f"{elem_id}: labels cut at the figure's edge"
    assert touching == [], f"{elem_id}: labels run together or shrunk unreadable"
    return figure


def _pick_model(page, name: str) -> None:
    page.get_by_label("Model").first.click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function(f"() => document.body.innerText.includes('Model {name}:')", timeout=120_000)


def _failing_caption(engine) -> int:
    """A caption whose ground truth is not first (by a loop over its row), so every pair view has a contrast."""
    sim = engine.matrices[engine.ranking_branch(None)]
    return next(q for q in range(engine.num_captions)
                if sum(s >= sim[q, engine.bench.caption_video[q]] for s in sim[q]) > 1)


def test_search_tiles_and_scores_read_whole(page, app):
    """Each tile's caption fits its line, and every score in the table shows four decimals."""
    _, session = app
    _pick_model(page, "unify")
    box = page.get_by_label("Text query")
    box.fill(session.engine("unify").bench.captions[3])
    box.press("Enter")
    page.locator("#search-summary").get_by_text("is at rank").wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    captions = page.evaluate("""() => [...document.querySelectorAll('#search-results .caption-label')]
        .map(e => [e.textContent, e.scrollWidth, e.clientWidth])""")
    assert len(captions) >= 10
    assert all(scroll <= client for _, scroll, client in captions), captions
    table = page.locator("#search-table").inner_text()
    scores = re.findall(r"-?\d+\.\d+", table)
    assert scores and all(re.fullmatch(r"-?\d+\.\d{4}", s) for s in scores), scores
    _shot(page, f"display-search-{page.width}")


def test_unify_search_says_how_the_fused_score_is_made(page, app):
    """The summary's z-scores and fused score, recounted with numpy from the latent and lexicon matrices."""
    _, session = app
    engine = session.engine("unify")
    q = 3
    _pick_model(page, "unify")
    box = page.get_by_label("Text query")
    box.fill(engine.bench.captions[q])
    box.press("Enter")
    summary = page.locator("#search-summary")
    summary.get_by_text("Ranked by").wait_for(timeout=60_000)
    text = summary.inner_text()
    top = int(np.argmax(engine.matrices["fused"][q]))
    assert engine.bench.video_ids[top] in text
    latent, lexicon = (engine.matrices[b][q].astype(np.float64) for b in ("latent", "lexicon"))
    z = [(x[top] - x.mean()) / x.std() for x in (latent, lexicon)]
    lam = engine.config.unify.fusion_lambda
    number = r"(-?\d+\.\d+)"
    found = re.search(rf"z\(latent {number}\) = {number}, z\(lexicon {number}\) = {number}, so fused = {number} \+ "
                      rf"[\d.]+ × {number} = {number}", text)
    shown = [float(found.group(i)) for i in (2, 4, 7)]
    assert shown == pytest.approx([z[0], z[1], z[0] + lam * z[1]], abs=1e-3)


@pytest.mark.parametrize("model", ["drl-wti", "unify"])
def test_explain_and_which_word_decides_read_whole(page, app, model):
    """A failing caption's pair views, their lexicon panels and the one-word edits: no label cut, no label on
    another; the rank axis ends at the gallery's size and every rank sits right of its bar's end."""
    _, session = app
    engine = session.engine(model)
    _pick_model(page, model)
    caption = engine.bench.captions[_failing_caption(engine)]
    page.get_by_role("tab", name="Explain").click()
    page.get_by_label("Query", exact=True).fill(caption)
    page.get_by_role("button", name="Explain", exact=True).click()
    figure = _whole(page, "explain-a")
    _whole(page, "explain-b")
    if engine.is_unify:
        _whole(page, "lexicon-a")
        _whole(page, "lexicon-b")
    else:
        colours = {t["name"]: t["marker"]["color"] for t in figure["data"] if "contribution" in str(t.get("name"))}
        assert len(set(colours.values())) == 2, colours  # token and frame contributions apart
    page.get_by_role("button", name="Which word decides?").click()
    edits = _whole(page, "counterfactual-plot")
    axis = edits["layout"]["xaxis2"]
    assert engine.gallery_size <= 10 ** axis["range"][1] <= 1.6 * engine.gallery_size
    bars = [t for t in edits["data"] if t["type"] == "bar" and t.get("xaxis") == "x2"]
    labels = [t for t in edits["data"] if t.get("mode") == "text"]
    ends = {y: x for t in bars for x, y in zip(t["x"], t["y"], strict=True)}
    assert labels and all(x > ends[y] and t == str(round(ends[y])) for lab in labels
                          for x, y, t in zip(lab["x"], lab["y"], lab["text"], strict=True))
    _shot(page, f"display-explain-{model}-{page.width}")


@pytest.mark.parametrize("model", ["drl-wti", "unify"])
def test_failures_read_whole(page, app, model):
    """Metrics, slices and blind spots whole; the failure table shows at least ten rows; the agreement panel
    is a sentence until there is something to show."""
    _pick_model(page, model)
    page.get_by_role("tab", name="Failures").click()
    _whole(page, "metrics-plot")
    slices = _whole(page, "slices-plot")
    assert all(re.fullmatch(r"\d+\.\d% \(n=\d+\)", t) for trace in slices["data"] for t in trace["text"])
    assert not any("None" in str(y) for trace in slices["data"] for y in trace["y"])
    page.locator("#failures-table [role=gridcell]").first.wait_for(timeout=60_000)
    shown, rows = page.evaluate(VISIBLE_ROWS, "failures-table")
    assert shown >= min(10, rows), (shown, rows)
    assert page.locator("#compare-plot").count() == 0 or not page.locator("#compare-plot").is_visible()
    assert "how many queries each gets right" in page.locator("#compare-summary").inner_text()
    page.get_by_role("button", name="Find blind spots (beside the second model)").click()
    _whole(page, "blind-spots-plot")
    _whole(page, "confusion-plot")
    _shot(page, f"display-failures-{model}-{page.width}")


def test_channels_say_what_the_matrix_is(page, app):
    """The matrix is named as the training statistic it is, its axes are labelled, and its colour scale holds it."""
    page.get_by_role("tab", name="Channels").click()
    page.get_by_role("button", name="Compute").click()
    figure = _whole(page, "correlation-plot")
    heatmaps = [t for t in figure["data"] if t["type"] == "heatmap"]
    largest = page.evaluate("""() => Math.max(...document.querySelector('#correlation-plot .js-plotly-plot')._fullData
        .filter(t => t.type === 'heatmap').flatMap(t => Array.from(t.z, row => Math.max(...Array.from(row, Math.abs)))))""")
    assert largest > 0 and all(t["zmax"] >= largest and t["zmin"] == -t["zmax"] for t in heatmaps)
    assert "not a Pearson correlation" in figure["layout"]["title"]["text"]
    assert figure["layout"]["xaxis"]["title"]["text"] == "video channel j"
    assert figure["layout"]["yaxis"]["title"]["text"] == "text channel i"
    _shot(page, f"display-channels-{page.width}")


def test_map_marks_every_failure_it_draws(page, app):
    """With 20 failure lines asked for, 20 failed captions are marked, each with its two videos."""
    _, session = app
    page.get_by_role("tab", name="Map").click()
    page.get_by_role("button", name="Draw the map").click()
    figure = _drawn(page, "embedding-map")
    ends = {t["name"]: len(t["x"]) for t in figure["data"]
            if t["name"] in ("failed caption", "its ground truth", "the video that beat it")}
    failures = len(session.engine("drl-wti").analysis.failures("t2v"))
    assert ends == dict.fromkeys(ends, min(20, failures)) and len(ends) == 3
    assert page.evaluate(CLIPPED, "embedding-map") == []
    _shot(page, f"display-map-{page.width}")


def test_walkthrough_bars_and_export_button(page, app):
    """The papers' bars stand beside the checkpoints' own (WTI too), and the export button is a button's height."""
    page.get_by_role("tab", name="Walkthrough").click()
    page.get_by_role("button", name="Compute the papers' tables on this gallery").click()
    figure = _whole(page, "papers-plot")
    paper = {x: y for t in figure["data"] if t["name"] == "paper (MSR-VTT), text → video"
             for x, y in zip(t["x"], t["y"], strict=True)}
    assert paper["WTI<br>(drl-wti)"] == 46.6
    assert page.locator("#export-button").bounding_box()["height"] < 60
    _shot(page, f"display-walkthrough-{page.width}")
