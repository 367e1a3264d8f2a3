"""The app's callbacks: `Callbacks`, thin methods over the session's engines, one instance per app (app.py wires them).

GPU work runs under `@gpu` (ZeroGPU); user-facing errors become notices (`user_errors`); the `open_*` glue fills the
explain view's fields and switches to its tab.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from tvr_demo.errors import QueryError, TVRError
from tvr_demo.safety import public_message, resolve_within
from tvr_demo.ui import diagnosis_views as diagnosis
from tvr_demo.ui import explain_views as explain
from tvr_demo.ui import papers
from tvr_demo.ui import search_views as search
from tvr_demo.ui import split_views as analysis
from tvr_demo.ui.background import low_priority
from tvr_demo.ui.exports import write_html
from tvr_demo.ui.gpu import gpu
from tvr_demo.ui.search_views import Clip
from tvr_demo.ui.session import Session, model_summary

if TYPE_CHECKING:
    from tvr_demo.data import Benchmark
    from tvr_demo.retrieval.engine import Engine

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


def on_gpu(fn: Callable | None = None, *, duration: int = 60, guarded: bool = False) -> Any:
    """Mark a method as GPU work (`guarded`: behind `user_errors` too); Callbacks.__init__ wraps each instance's
    bound method in `gpu`, so ZeroGPU, which pickles a call's arguments, is handed the request's own ones, never the
    instance (whose session holds locks and engines)."""
    def mark(f: Callable) -> Callable:
        f.gpu_duration, f.guarded = duration, guarded
        return f

    return mark(fn) if fn is not None else mark


ExplainFields = tuple[gr.Tabs, str, str, str, str]  # the explain tab, its two queries and two videos (by id)
Context = tuple[str, str, str]  # (model, dataset, split) as the page's fields hold them


class Callbacks:
    """Every listener's function, bound to one session (the engines every user shares, read-only)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        for name, fn in vars(Callbacks).items():
            duration = getattr(fn, "gpu_duration", None)
            if duration is not None:  # see on_gpu; the instance attribute keeps the method's name (its api_name)
                work = gpu(getattr(self, name), duration=duration)
                setattr(self, name, user_errors(work) if fn.guarded else work)
        # gradio marks a server function with an attribute, which a bound method cannot carry: a plain function
        self.thumbnail = functools.wraps(self.thumbnail)(lambda point: Callbacks.thumbnail(self, point))

    def engine(self, model: str, dataset: str, split: str, progress: gr.Progress | None = None) -> Engine:
        """The model's engine on this gallery, built on first use."""
        return self.session.engine(model, dataset, split, progress)

    def searching(self, model: str, dataset: str, split: str, progress: gr.Progress | None = None) -> Engine:
        """The engine for a listener in the search pool (app.MODEL_POOL): it never queues behind another search's
        first encode."""
        return self.session.engine(model, dataset, split, progress, searching=True)

    def bench(self, model: str, dataset: str, split: str) -> Benchmark:
        """The gallery's benchmark alone (glue code needs names, not the model)."""
        return self.session.benchmark(dataset, split)

    # ------------------------------------------------------------------ callbacks (GPU work under @gpu)

    @on_gpu(duration=180, guarded=True)
    @low_priority
    def load(self, model: str, dataset: str, split: str, progress: gr.Progress = PROGRESS) -> tuple:
        """The header, the pickers' choices and UNIFY's panels for a model and gallery (built on first use)."""
        session = self.session
        e = self.engine(model, dataset, split, progress)
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

    @on_gpu
    def search_text(self, query: str, k: float, branch: str | None, model: str, dataset: str, split: str,
                    progress: gr.Progress | None) -> tuple:
        """Text to video on the GPU: gallery items, summary, table, order and a notice."""
        return search.search_text(self.searching(model, dataset, split, progress), query, k, _branch(branch))

    @user_errors
    def run_search(self, query: str, k: float, branch: str | None, model: str, dataset: str, split: str,
                   progress: gr.Progress = PROGRESS) -> tuple:
        """A typed query's top k videos; a new ranking clears the selection."""
        items, summary, table, order, notice = self.search_text(query, k, branch, model, dataset, split, progress)
        if notice:
            gr.Warning(notice)
        return items, summary, table, order, None, ""  # a new ranking: nothing selected yet

    @on_gpu
    def search_video(self, video: str | None, clip: Clip | None, k: float, branch: str | None, model: str,
                     dataset: str, split: str, progress: gr.Progress | None) -> tuple:
        """Video to text on the GPU, for a gallery video or a decoded upload."""
        return search.search_video(self.searching(model, dataset, split, progress), video, clip, k, _branch(branch))

    @user_errors
    def run_search_video(self, video: str | None, upload: str | None, k: float, branch: str | None, model: str,
                         dataset: str, split: str, progress: gr.Progress = PROGRESS) -> tuple:
        """A gallery video's or an uploaded clip's top k captions (the upload decoded on the CPU first)."""
        clip = None
        if upload:  # gradio hands over only files it received; the path policy holds whoever the caller is
            upload = str(resolve_within(upload, [Path(gr.utils.get_upload_folder())], "uploaded file"))
            clip = search.decode_upload(self.searching(model, dataset, split, progress), upload)
        summary, table, captions, index = self.search_video(video, clip, k, branch, model, dataset, split, progress)
        preview = upload if upload else str(self.bench(model, dataset, split).video_paths[index])
        return summary, preview, table, captions, index

    @on_gpu(guarded=True)
    def run_explain(self, query, video, compare_query, compare_video, model: str, dataset: str, split: str,
                    progress: gr.Progress = PROGRESS) -> tuple:
        """Why a video scored what it did for a query, and against a second pair."""
        out = explain.explain(self.searching(model, dataset, split, progress), query, video, compare_query,
                              compare_video)
        return (out.markdown_a, out.latent_a, out.lexicon_a, out.markdown_b, out.latent_b, out.lexicon_b,
                out.difference, out.walkthrough)

    @on_gpu(guarded=True)
    @low_priority
    def run_metrics(self, model: str, dataset: str, split: str, progress: gr.Progress = PROGRESS) -> tuple[go.Figure,
                    pd.DataFrame]:
        """Recall bars and the metrics table."""
        return analysis.metrics_view(self.engine(model, dataset, split, progress), model)

    @on_gpu(guarded=True)
    @low_priority
    def run_failures(self, direction, branch, sort_by, slice_label, limit, model: str, dataset: str, split: str,
                     progress: gr.Progress = PROGRESS) -> tuple:
        """The failure table, its summary and the pairs its rows open."""
        e = self.engine(model, dataset, split, progress)
        table, pairs, summary = analysis.failures_view(e, direction, _branch(branch), sort_by, slice_label, limit)
        return table, summary, pairs

    def failure_widths(self, table, direction) -> gr.Dataframe:
        """The failure table's column widths for the columns it now shows (t2v and v2t differ): an update of the
        widths alone, after /failures, whose output stays the plain table."""
        columns = list(table.columns) if isinstance(table, pd.DataFrame) else list((table or {}).get("headers", []))
        return gr.Dataframe(column_widths=analysis.failure_column_widths(columns, direction))

    def _names(self, model: str, model_b: str | None) -> list[str]:
        """The selected model, and the second one when it differs."""
        return [model] + ([model_b] if model_b and model_b != model else [])

    @on_gpu(guarded=True)
    @low_priority
    def run_slices(self, branch, model_b, model: str, dataset: str, split: str,
                   progress: gr.Progress = PROGRESS) -> go.Figure:
        """R@1 per slice, for one model or two."""
        return analysis.slices_view({n: self.engine(n, dataset, split, progress) for n in self._names(model, model_b)},
                                    _branch(branch))

    @on_gpu(guarded=True)
    @low_priority
    def run_compare(self, model_b, k, model: str, dataset: str, split: str,
                    progress: gr.Progress = PROGRESS) -> tuple:
        """Which queries one model gets into the top k and the other does not."""
        return analysis.compare_view(self.engine(model, dataset, split, progress), model,
                                     self.engine(model_b, dataset, split, progress), model_b, k)

    @on_gpu(guarded=True)
    @low_priority
    def run_blind_spots(self, branch, model_b, model: str, dataset: str, split: str,
                        progress: gr.Progress = PROGRESS) -> tuple:
        """What the failures have in common, for one model or two."""
        return diagnosis.blind_spots_view(
            {n: self.engine(n, dataset, split, progress) for n in self._names(model, model_b)}, _branch(branch))

    @on_gpu(guarded=True)
    def run_counterfactual(self, query, video, branch, model: str, dataset: str, split: str,
                           progress: gr.Progress = PROGRESS) -> tuple:
        """How one-word edits of the query move the video's rank."""
        return diagnosis.counterfactual_view(self.engine(model, dataset, split, progress), query, video,
                                             _branch(branch))

    @on_gpu(guarded=True)
    @low_priority
    def run_correlation(self, model_a, model_b, dataset, split, progress: gr.Progress = PROGRESS) -> tuple[go.Figure,
                        str]:
        """The channel cross-correlation of one or two models."""
        names = list(dict.fromkeys([model_a, model_b]))
        return analysis.correlation_view({n: self.engine(n, dataset, split, progress) for n in names})

    @on_gpu(duration=600, guarded=True)
    @low_priority
    def run_papers(self, dataset, split, progress: gr.Progress = PROGRESS) -> tuple:
        """The papers' ablations over every served checkpoint on this gallery (each encodes it once, then cached)."""
        return papers.papers_view({n: self.engine(n, dataset, split, progress) for n in self.session.models})

    @on_gpu
    def map_embeddings(self, model: str, dataset: str, split: str, progress: gr.Progress | None) -> tuple:
        """The map's pooled vectors, on the GPU."""
        return analysis.map_embeddings(self.engine(model, dataset, split, progress))

    @user_errors
    @low_priority
    def run_map(self, colour_by, n_lines, model: str, dataset: str, split: str,
                progress: gr.Progress = PROGRESS) -> go.Figure:
        """The embedding map (UMAP on the CPU, cached per model and gallery)."""
        text, video = self.map_embeddings(model, dataset, split, progress)
        progress(0.5, desc="projecting with UMAP (once per model and gallery, then cached)")
        return analysis.map_view(self.engine(model, dataset, split), text, video, colour_by, n_lines, model)

    def thumbnail(self, point) -> str:
        """Server function for the map's hover; gradio hands it the JS call's arguments as one list. Anything but
        [gallery key, video index] gets no thumbnail."""
        while isinstance(point, list) and len(point) == 1:
            point = point[0]
        if not (isinstance(point, list) and len(point) == 2 and isinstance(point[0], str)
                and isinstance(point[1], int) and not isinstance(point[1], bool)):
            return ""
        return self.session.thumbnail(point[0], point[1])

    @user_errors
    def export_html(self, which, *figures) -> str:
        """One shown figure as a standalone HTML file."""
        plot = dict(zip(EXPORTABLE, figures, strict=True)).get(which)
        if plot is None or getattr(plot, "type", None) != "plotly":
            raise QueryError(f"the {str(which)[:60]!r} figure is empty: show it first, then export it")
        return write_html(plot.plot, str(which))

    # ------------------------------------------------------------------ glue: open a pair in the explain view

    @staticmethod
    def pick(items, index, what: str):
        """items[index] for an index a browser event sent, which a client may forge."""
        if isinstance(index, (list, tuple)):
            index = index[0] if index else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
            raise QueryError(f"no {what} at position {str(index)[:20]}: there are {len(items)}; click one again")
        return items[index]

    @user_errors
    def open_result(self, order, model: str, dataset: str, split: str, evt: gr.SelectData) -> tuple[int, str]:
        """Select a clicked result (explained on demand)."""
        video = self.pick(order, evt.index, "result")
        return video, f"Selected **{self.bench(model, dataset, split).video_ids[video]}** (result {evt.index + 1})"

    def open_pair(self, context: Context, query, video, compare_query="", compare_video=None) -> ExplainFields:
        """Switch to the explain tab with its fields filled (videos by id); the explain listener runs next."""
        ids = self.bench(*context).video_ids
        return (gr.Tabs(selected="explain"), query, "" if video is None else ids[video], compare_query,
                "" if compare_video is None or compare_video < 0 else ids[compare_video])

    @user_errors
    def explain_selected(self, query, selected, order, model: str, dataset: str, split: str) -> ExplainFields:
        """The clicked result, or the top one when none was clicked."""
        if selected is None and not order:
            raise gr.Error("search first, then click a result to explain it", print_exception=False)
        return self.open_pair((model, dataset, split), query, order[0] if selected is None else selected)

    @user_errors
    def open_table_row(self, order, query, model: str, dataset: str, split: str, evt: gr.SelectData) -> ExplainFields:
        """A row of the ranking table, explained."""
        return self.open_pair((model, dataset, split), query, self.pick(order, evt.index, "row"))

    @user_errors
    def open_caption_row(self, captions, video_index, model: str, dataset: str, split: str,
                         evt: gr.SelectData) -> ExplainFields:
        """A caption of a video search's table, explained against its video."""
        if video_index is None:
            raise gr.Error("an uploaded clip is not in the gallery, so it cannot be explained", print_exception=False)
        caption = self.bench(model, dataset, split).captions[self.pick(captions, evt.index, "row")]
        return self.open_pair((model, dataset, split), caption, video_index)

    @user_errors
    def open_pair_row(self, pairs, model: str, dataset: str, split: str, evt: gr.SelectData) -> ExplainFields:
        """A failure or comparison row's pairs, explained."""
        return self.open_pair((model, dataset, split), *self.pick(pairs, evt.index, "row"))

    def item_index(self, b, kind, index) -> int:
        """A map point's (kind, index) as a browser sent it, checked against the gallery."""
        size = {"caption": b.num_captions, "video": b.num_videos}.get(kind)
        if size is None:
            raise QueryError(f"a map point is a caption or a video, not {str(kind)[:20]!r}")
        return self.pick(range(size), index if isinstance(index, int) else None, kind)

    def open_item(self, context: Context, kind, index) -> ExplainFields:
        """A map point or selection row: a caption opens with its top result, a video with its first caption."""
        b = self.bench(*context)
        index = self.item_index(b, kind, index)
        if kind == "caption":
            return self.open_pair(context, b.captions[index], None)
        captions = b.captions_of(index)
        return self.open_pair(context, b.captions[captions[0]] if captions else "", index)

    @user_errors
    def open_map_point(self, model: str, dataset: str, split: str, evt: gr.EventData) -> ExplainFields:
        """A clicked map point, explained."""
        data = evt._data if isinstance(evt._data, dict) else {}
        return self.open_item((model, dataset, split), data.get("kind"), data.get("index"))

    @user_errors
    def open_selection_row(self, rows, model: str, dataset: str, split: str, evt: gr.SelectData) -> ExplainFields:
        """A row of the lasso selection's table, explained."""
        row = rows.iloc[self.pick(range(len(rows)), evt.index, "row")]
        return self.open_item((model, dataset, split), row["kind"], int(row["#"]))

    @user_errors
    def map_selection(self, model: str, dataset: str, split: str, evt: gr.EventData) -> pd.DataFrame:
        """The lasso's points as a table of captions and videos."""
        b = self.bench(model, dataset, split)
        items = (evt._data if isinstance(evt._data, dict) else {}).get("items", [])
        if not isinstance(items, list) or not all(isinstance(it, list) and len(it) == 2 for it in items):
            raise QueryError("a lasso selection is a list of [kind, index] points")
        rows = []
        for kind, i in items:
            i = self.item_index(b, kind, i)
            rows.append((kind, i, b.captions[i] if kind == "caption" else b.video_ids[i]))
        return pd.DataFrame(rows, columns=["kind", "#", "item"])
