"""The app's callbacks: thin functions over the session's engines, built once per app by `make_callbacks`.

GPU work runs under `@gpu` (ZeroGPU); user-facing errors become notices (`user_errors`); the `open_*` glue fills the
explain view's fields and switches to its tab.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from tvr_demo.errors import QueryError, TVRError
from tvr_demo.safety import public_message, resolve_within
from tvr_demo.ui import analysis, diagnosis, explain, papers, search
from tvr_demo.ui.exports import write_html
from tvr_demo.ui.gpu import gpu
from tvr_demo.ui.session import Session, model_summary

PROGRESS = gr.Progress(track_tqdm=True)  # gradio reads each request's progress from context, so one default serves all
EXPORTABLE = ("explain A", "explain B", "lexicon A", "lexicon B", "words A vs B", "metrics", "slices", "comparison",
              "channel correlation", "embedding map")  # the figures the Walkthrough tab exports, in build_demo's order


LOG = logging.getLogger("tvr_demo.app")


def user_errors(fn):
    """Every listener's guard: the project's user-facing errors (empty query, unknown video, corrupt upload...)
    become a notice with their one sentence (server paths cut to file names), and anything unforeseen becomes one
    sentence too, its traceback kept in the server's log; never gradio's generic error or a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            raise gr.Error(public_message(str(err.message)), print_exception=False) from None
        except TVRError as err:
            raise gr.Error(public_message(str(err)), print_exception=False) from None
        except Exception as err:
            LOG.exception("%s failed", fn.__name__)
            raise gr.Error(f"the server could not handle this request ({type(err).__name__}): check the inputs, or "
                           "try again; the error was logged", print_exception=False) from None

    return wrapper


def _branch(value: str | None) -> str | None:
    return None if value in (None, "", "auto") else value


def make_callbacks(session: Session) -> SimpleNamespace:
    """Every listener's function, bound to one session (the engines every user shares, read-only)."""
    engine = session.engine
    # listeners in the search pool (app.MODEL_POOL): they never queue behind another search's first encode
    searching = functools.partial(session.engine, searching=True)

    def bench(model, dataset, split):
        """The gallery's benchmark alone (glue code needs names, not the model)."""
        return session.benchmark(dataset, split)

    # ------------------------------------------------------------------ callbacks (GPU work under @gpu)

    @user_errors
    @gpu(duration=180)
    def load(model, dataset, split, progress=PROGRESS):
        e = engine(model, dataset, split, progress)
        b, description = e.bench, e.checkpoint.meta.get("description", "")
        scorer = session.scorer
        header = (f"**Device** `{session.device}`, token-wise scorer `{scorer.name}` ({scorer.reason}) · "
                  f"**Model** `{model}`: {model_summary(e.config)} · **Gallery** "
                  f"{b.name}/{b.split}: {b.num_videos} videos, {b.num_captions} captions "
                  f"(`{session.display_path(b.root)}`)" + (f"\n\n{description}" if description else "")
                  + (f"\n\n⚠ {len(e.skipped)} videos could not be decoded and are never retrieved."
                     if e.skipped else ""))
        captions = list(dict.fromkeys(b.captions))[:500]
        colours = analysis.map_colour_choices(e)
        return (header, gr.Dropdown(choices=captions), gr.Dropdown(choices=b.video_ids),
                gr.Dropdown(choices=analysis.slice_choices(e), value=analysis.ALL_SLICES),
                gr.Dropdown(choices=colours, value=colours[0]), *[gr.Column(visible=e.is_unify)] * 3)

    @gpu
    def search_text(query, k, branch, model, dataset, split, progress):
        return search.search_text(searching(model, dataset, split, progress), query, k, _branch(branch))

    @user_errors
    def run_search(query, k, branch, model, dataset, split, progress=PROGRESS):
        items, summary, table, order, notice = search_text(query, k, branch, model, dataset, split, progress)
        if notice:
            gr.Warning(notice)
        return items, summary, table, order, None, ""  # a new ranking: nothing selected yet

    @gpu
    def search_video(video, clip, k, branch, model, dataset, split, progress):
        return search.search_video(searching(model, dataset, split, progress), video, clip, k, _branch(branch))

    @user_errors
    def run_search_video(video, upload, k, branch, model, dataset, split, progress=PROGRESS):
        clip = None
        if upload:  # gradio hands over only files it received; the path policy holds whoever the caller is
            upload = str(resolve_within(upload, [Path(gr.utils.get_upload_folder())], "uploaded file"))
            clip = search.decode_upload(searching(model, dataset, split, progress), upload)
        summary, table, captions, index = search_video(video, clip, k, branch, model, dataset, split, progress)
        preview = upload if upload else str(bench(model, dataset, split).video_paths[index])
        return summary, preview, table, captions, index

    @user_errors
    @gpu
    def run_explain(query, video, compare_query, compare_video, model, dataset, split,
                    progress=PROGRESS):
        out = explain.explain(searching(model, dataset, split, progress), query, video, compare_query,
                              compare_video)
        return (out.markdown_a, out.latent_a, out.lexicon_a, out.markdown_b, out.latent_b, out.lexicon_b,
                out.difference, out.walkthrough)

    @user_errors
    @gpu
    def run_metrics(model, dataset, split, progress=PROGRESS):
        return analysis.metrics_view(engine(model, dataset, split, progress), model)

    @user_errors
    @gpu
    def run_failures(direction, branch, sort_by, slice_label, limit, model, dataset, split,
                     progress=PROGRESS):
        e = engine(model, dataset, split, progress)
        table, pairs, summary = analysis.failures_view(e, direction, _branch(branch), sort_by, slice_label, limit)
        return table, summary, pairs

    def failure_widths(table, direction):
        """The failure table's column widths for the columns it now shows (t2v and v2t differ): an update of the
        widths alone, after /failures, whose output stays the plain table."""
        columns = list(table.columns) if isinstance(table, pd.DataFrame) else list((table or {}).get("headers", []))
        return gr.Dataframe(column_widths=analysis.failure_column_widths(columns, direction))

    @user_errors
    @gpu
    def run_slices(branch, model_b, model, dataset, split, progress=PROGRESS):
        names = [model] + ([model_b] if model_b and model_b != model else [])
        return analysis.slices_view({n: engine(n, dataset, split, progress) for n in names}, _branch(branch))

    @user_errors
    @gpu
    def run_compare(model_b, k, model, dataset, split, progress=PROGRESS):
        return analysis.compare_view(engine(model, dataset, split, progress), model,
                                     engine(model_b, dataset, split, progress), model_b, k)

    @user_errors
    @gpu
    def run_blind_spots(branch, model_b, model, dataset, split, progress=PROGRESS):
        names = [model] + ([model_b] if model_b and model_b != model else [])
        return diagnosis.blind_spots_view({n: engine(n, dataset, split, progress) for n in names}, _branch(branch))

    @user_errors
    @gpu
    def run_counterfactual(query, video, branch, model, dataset, split, progress=PROGRESS):
        return diagnosis.counterfactual_view(engine(model, dataset, split, progress), query, video, _branch(branch))

    @user_errors
    @gpu
    def run_correlation(model_a, model_b, dataset, split, progress=PROGRESS):
        names = list(dict.fromkeys([model_a, model_b]))
        return analysis.correlation_view({n: engine(n, dataset, split, progress) for n in names})

    @user_errors
    @gpu(duration=600)
    def run_papers(dataset, split, progress=PROGRESS):
        """The papers' ablations over every served checkpoint on this gallery (each encodes it once, then cached)."""
        return papers.papers_view({n: engine(n, dataset, split, progress) for n in session.models})

    @gpu
    def map_embeddings(model, dataset, split, progress):
        return analysis.map_embeddings(engine(model, dataset, split, progress))

    @user_errors
    def run_map(colour_by, n_lines, model, dataset, split, progress=PROGRESS):
        text, video = map_embeddings(model, dataset, split, progress)
        progress(0.5, desc="projecting with UMAP (once per model and gallery, then cached)")
        return analysis.map_view(engine(model, dataset, split), text, video, colour_by, n_lines, model)

    def thumbnail(point):
        """Server function for the map's hover; gradio hands it the JS call's arguments as one list. Anything but
        [gallery key, video index] gets no thumbnail."""
        while isinstance(point, list) and len(point) == 1:
            point = point[0]
        if not (isinstance(point, list) and len(point) == 2 and isinstance(point[0], str)
                and isinstance(point[1], int) and not isinstance(point[1], bool)):
            return ""
        return session.thumbnail(point[0], point[1])

    @user_errors
    def export_html(which, *figures):
        plot = dict(zip(EXPORTABLE, figures, strict=True)).get(which)
        if plot is None or getattr(plot, "type", None) != "plotly":
            raise QueryError(f"the {str(which)[:60]!r} figure is empty: show it first, then export it")
        return write_html(plot.plot, str(which))

    # ------------------------------------------------------------------ glue: open a pair in the explain view

    def pick(items, index, what: str):
        """items[index] for an index a browser event sent, which a client may forge."""
        if isinstance(index, (list, tuple)):
            index = index[0] if index else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
            raise QueryError(f"no {what} at position {str(index)[:20]}: there are {len(items)}; click one again")
        return items[index]

    def open_result(order, model, dataset, split, evt: gr.SelectData):
        video = pick(order, evt.index, "result")
        return video, f"Selected **{bench(model, dataset, split).video_ids[video]}** (result {evt.index + 1})"

    def open_pair(context, query, video, compare_query="", compare_video=None):
        """Switch to the explain tab with its fields filled (videos by id); the explain listener runs next."""
        ids = bench(*context).video_ids
        return (gr.Tabs(selected="explain"), query, "" if video is None else ids[video], compare_query,
                "" if compare_video is None or compare_video < 0 else ids[compare_video])

    def explain_selected(query, selected, order, model, dataset, split):
        """The clicked result, or the top one when none was clicked."""
        if selected is None and not order:
            raise gr.Error("search first, then click a result to explain it", print_exception=False)
        return open_pair((model, dataset, split), query, order[0] if selected is None else selected)

    def open_table_row(order, query, model, dataset, split, evt: gr.SelectData):
        return open_pair((model, dataset, split), query, pick(order, evt.index, "row"))

    def open_caption_row(captions, video_index, model, dataset, split, evt: gr.SelectData):
        if video_index is None:
            raise gr.Error("an uploaded clip is not in the gallery, so it cannot be explained", print_exception=False)
        caption = bench(model, dataset, split).captions[pick(captions, evt.index, "row")]
        return open_pair((model, dataset, split), caption, video_index)

    def open_pair_row(pairs, model, dataset, split, evt: gr.SelectData):
        return open_pair((model, dataset, split), *pick(pairs, evt.index, "row"))

    def item_index(b, kind, index) -> int:
        """A map point's (kind, index) as a browser sent it, checked against the gallery."""
        size = {"caption": b.num_captions, "video": b.num_videos}.get(kind)
        if size is None:
            raise QueryError(f"a map point is a caption or a video, not {str(kind)[:20]!r}")
        return pick(range(size), index if isinstance(index, int) else None, kind)

    def open_item(context, kind, index):
        """A map point or selection row: a caption opens with its top result, a video with its first caption."""
        b = bench(*context)
        index = item_index(b, kind, index)
        if kind == "caption":
            return open_pair(context, b.captions[index], None)
        captions = b.captions_of(index)
        return open_pair(context, b.captions[captions[0]] if captions else "", index)

    def open_map_point(model, dataset, split, evt: gr.EventData):
        data = evt._data if isinstance(evt._data, dict) else {}
        return open_item((model, dataset, split), data.get("kind"), data.get("index"))

    def open_selection_row(rows, model, dataset, split, evt: gr.SelectData):
        row = rows.iloc[pick(range(len(rows)), evt.index, "row")]
        return open_item((model, dataset, split), row["kind"], int(row["#"]))

    def map_selection(model, dataset, split, evt: gr.EventData):
        b = bench(model, dataset, split)
        items = (evt._data if isinstance(evt._data, dict) else {}).get("items", [])
        if not isinstance(items, list) or not all(isinstance(it, list) and len(it) == 2 for it in items):
            raise QueryError("a lasso selection is a list of [kind, index] points")
        rows = []
        for kind, i in items:
            i = item_index(b, kind, i)
            rows.append((kind, i, b.captions[i] if kind == "caption" else b.video_ids[i]))
        return pd.DataFrame(rows, columns=["kind", "#", "item"])

    glue = {fn.__name__: user_errors(fn) for fn in (open_result, explain_selected, open_table_row, open_caption_row,
                                                     open_pair_row, open_map_point, open_selection_row, map_selection)}
    return SimpleNamespace(
        load=load, run_search=run_search, run_search_video=run_search_video, run_explain=run_explain,
        run_metrics=run_metrics, run_failures=run_failures, run_slices=run_slices, run_compare=run_compare,
        failure_widths=failure_widths, run_blind_spots=run_blind_spots, run_counterfactual=run_counterfactual,
        run_correlation=run_correlation, run_papers=run_papers, run_map=run_map, thumbnail=thumbnail,
        export_html=export_html, **glue)
