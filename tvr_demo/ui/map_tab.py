"""The Map tab: captions and videos projected together with UMAP, coloured by modality, outcome or slice, with lines
from the worst failures to their ground truth and to what beat it; click a point to explain it, lasso to list."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tvr_demo import plots
from tvr_demo.diagnosis.embedding_map import umap_coordinates
from tvr_demo.errors import QueryError
from tvr_demo.ui.bridge import MAP_BRIDGE_JS, MAP_ELEM_ID
from tvr_demo.ui.explain_tab import ExplainFields, open_pair, pick
from tvr_demo.ui.inputs import checked_number
from tvr_demo.ui.listeners import MAP, PROGRESS, listener, wire
from tvr_demo.ui.session import gallery_key_of

if TYPE_CHECKING:
    from tvr_demo import Benchmark, Engine
    from tvr_demo.ui.page import Page
    from tvr_demo.ui.session import Session


MAP_COLOURS = ("modality", "outcome")


def map_colour_choices(engine: Engine) -> list[str]:
    """Modality, outcome (with captions), and each slice key: the attributes, a folder gallery's subfolders (folder),
    else caption keywords."""
    keys = sorted({label.split(":", 1)[0] for labels in engine.analysis.caption_slices() for label in labels if ":" in label}
                  | ({"folder"} if engine.bench.folders is not None else set()))
    colours = list(MAP_COLOURS) if engine.num_captions else ["modality"]
    return [*colours, *keys] if keys else [*colours, "keyword"]


def _groups(engine: Engine, colour_by: str) -> tuple[list[str], list[str]]:
    n_t, n_v = engine.num_captions, engine.gallery_size
    if colour_by == "outcome":
        t_ok, v_ranks = engine.analysis.ranks("t2v") == 0, engine.analysis.ranks("v2t")
        return (["caption found (rank 1)" if ok else "caption failed" for ok in t_ok],
                ["video found (rank 1)" if r == 0 else "video failed" if r > 0 else "video without caption"
                 for r in v_ranks])
    if colour_by == "modality":
        return ["caption"] * n_t, ["video"] * n_v
    if colour_by == "folder" and engine.bench.folders is not None:  # each clip's own subfolder, captioned or not
        folders = engine.bench.folders
        return [folders[int(v)] for v in engine.bench.caption_video], list(folders)
    labels = engine.analysis.caption_slices()
    prefix = "" if colour_by == "keyword" else f"{colour_by}:"
    text = [next((label[len(prefix):] for label in row if label.startswith(prefix)), "other") for row in labels]
    first_caption = {}
    for caption, video in enumerate(engine.bench.caption_video):
        first_caption.setdefault(int(video), caption)
    return text, [text[first_caption[v]] if v in first_caption else "other" for v in range(n_v)]


def map_embeddings(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    """The model's part of the map (runs on the GPU when there is one, with the score matrices the colours and
    failure lines need); the projection itself is CPU work."""
    engine.matrices.compute()
    pooled = engine.analysis.pooled_embeddings()
    return pooled.texts, pooled.videos


def map_view(engine: Engine, text: np.ndarray, video: np.ndarray, colour_by: str, n_lines: int, name: str
             ) -> go.Figure:
    """UMAP of captions and videos together (cached per model and gallery), coloured, with failure lines. Videos
    that could not be decoded have no features: they are left off the map (NaN coordinates, which plotly skips)."""
    ok = engine.gallery.decoded_ok
    text_xy, decoded_xy = umap_coordinates(text, video[ok], engine.cache_path)
    video_xy = np.full((len(video), 2), np.nan, dtype=np.float32)
    video_xy[ok] = decoded_xy
    bench = engine.bench
    ranks = engine.analysis.ranks("t2v") if bench.num_captions else []
    first_caption = {}
    for caption, v in enumerate(bench.caption_video):
        first_caption.setdefault(int(v), caption)
    text_hover = [f"caption {i}: {c}<br>ground truth {bench.video_ids[bench.caption_video[i]]} · rank {ranks[i] + 1}"
                  for i, c in enumerate(bench.captions)]
    video_hover = [f"{vid}<br>{bench.captions[first_caption[j]] if j in first_caption else ''}"
                   for j, vid in enumerate(bench.video_ids)]
    failed = engine.analysis.failures("t2v")[: int(n_lines)] if bench.num_captions else []
    text_groups, video_groups = _groups(engine, colour_by)
    return plots.embedding_map_figure(
        text_xy, video_xy, text_hover, video_hover, text_groups, video_groups,
        failures=[(o.query, o.gt, o.top) for o in failed], key=gallery_key_of(bench),
        title=f"{name}: captions (●) and videos (◆), UMAP<br><span style='font-size:12px'>the {len(failed)} worst "
              "failures: ✕ the caption, lines to its ground truth (green ○) and to the video that beat it (black ◇)</span>"
              if bench.num_captions else
              f"{name}: the {bench.num_videos} videos (◆), UMAP of their pooled features (no captions to place)")


def item_index(bench: Benchmark, kind, index) -> int:
    """A map point's (kind, index) as a browser sent it, checked against the gallery."""
    size = {"caption": bench.num_captions, "video": bench.num_videos}.get(kind)
    if size is None:
        raise QueryError(f"a map point is a caption or a video, not {str(kind)[:20]!r}")
    return pick(range(size), index if isinstance(index, int) else None, kind)


def open_item(bench: Benchmark, kind, index) -> ExplainFields:
    """A map point or selection row: a caption opens with its top result, a video with its first caption."""
    index = item_index(bench, kind, index)
    if kind == "caption":
        return open_pair(bench, bench.captions[index], None)
    captions = bench.captions_of(index)
    return open_pair(bench, bench.captions[captions[0]] if captions else "", index)


class MapTab:
    """The embedding map: where captions and videos sit together, and where the failures fall."""

    title, id = "Map", "map"

    def __init__(self, session: Session) -> None:
        self.session = session

    def layout(self, page: Page) -> None:
        with gr.Row(equal_height=True):
            self.colour_by = gr.Dropdown(list(MAP_COLOURS), value="modality", label="Colour by")
            self.n_lines = checked_number(gr.Slider(0, 200, value=20, step=5, label="Failure lines (worst first)"),
                                          "Failure lines")
            self.button = gr.Button("Draw the map", variant="primary")
        gr.Markdown("Hover a video (◆) for its frame; click any point to open it in Explain; lasso to list.")
        self.figure = gr.Plot(label="Embedding map", elem_id=MAP_ELEM_ID)
        # gradio marks a server function with an attribute, which a bound method cannot carry: a plain function
        self.bridge = gr.HTML("", js_on_load=MAP_BRIDGE_JS, server_functions=[self.thumbnail_function()])
        self.selection = gr.Dataframe(label="Lasso selection", interactive=False, wrap=True,
                                      headers=["kind", "#", "item"])

    @property
    def load_outputs(self) -> list:
        return [self.colour_by]

    def loaded(self, engine: Engine) -> tuple:
        """The colourings this gallery offers (its attributes, or keywords)."""
        colours = map_colour_choices(engine)
        return (gr.Dropdown(choices=colours, value=colours[0]),)

    @property
    def figures(self) -> dict[str, gr.Plot]:
        return {"embedding map": self.figure}

    def wire(self, page: Page) -> None:
        ctx = page.context
        wire(self.button.click, self.run_map, [self.colour_by, self.n_lines, *ctx], self.figure,
             api_name="embedding_map")
        page.explain.opens(self.bridge.click, self.open_map_point, ctx)
        page.explain.opens(self.selection.select, self.open_selection_row, [self.selection, *ctx])
        wire(self.bridge.input, self.map_selection, ctx, self.selection, api_visibility="private")

    def thumbnail_function(self):
        """`thumbnail` as the plain function gradio's server functions need."""

        def thumbnail(point) -> str:
            return self.thumbnail(point)

        return thumbnail

    def thumbnail(self, point) -> str:
        """Server function for the map's hover; gradio hands it the JS call's arguments as one list. Anything but
        [gallery key, video index] gets no thumbnail."""
        while isinstance(point, list) and len(point) == 1:
            point = point[0]
        if not (isinstance(point, list) and len(point) == 2 and isinstance(point[0], str)
                and isinstance(point[1], int) and not isinstance(point[1], bool)):
            return ""
        return self.session.thumbnail(point[0], point[1])

    # ------------------------------------------------------------------ listeners

    @listener(gpu_seconds=60, guarded=False)
    def map_embeddings(self, model: str, dataset: str, split: str, progress: gr.Progress | None) -> tuple:
        """The map's pooled vectors, the GPU part."""
        return map_embeddings(self.session.engine(model, dataset, split, progress))

    @listener(MAP, background=True)
    def run_map(self, colour_by: str, n_lines: float, model: str, dataset: str, split: str,
                progress: gr.Progress = PROGRESS) -> go.Figure:
        """The embedding map (UMAP on the CPU, cached per model and gallery)."""
        text, video = self.map_embeddings(model, dataset, split, progress)
        progress(0.5, desc="projecting with UMAP (once per model and gallery, then cached)")
        return map_view(self.session.engine(model, dataset, split), text, video, colour_by, n_lines, model)

    @listener()
    def open_map_point(self, model: str, dataset: str, split: str, evt: gr.EventData) -> ExplainFields:
        """A clicked map point, explained."""
        data = evt._data if isinstance(evt._data, dict) else {}
        return open_item(self.session.benchmark(dataset, split), data.get("kind"), data.get("index"))

    @listener()
    def open_selection_row(self, rows: pd.DataFrame, model: str, dataset: str, split: str,
                           evt: gr.SelectData) -> ExplainFields:
        """A row of the lasso selection's table, explained."""
        row = rows.iloc[pick(range(len(rows)), evt.index, "row")]
        return open_item(self.session.benchmark(dataset, split), row["kind"], int(row["#"]))

    @listener()
    def map_selection(self, model: str, dataset: str, split: str, evt: gr.EventData) -> pd.DataFrame:
        """The lasso's points as a table of captions and videos."""
        bench = self.session.benchmark(dataset, split)
        items = (evt._data if isinstance(evt._data, dict) else {}).get("items", [])
        if not isinstance(items, list) or not all(isinstance(it, list) and len(it) == 2 for it in items):
            raise QueryError("a lasso selection is a list of [kind, index] points")
        rows = []
        for kind, i in items:
            i = item_index(bench, kind, i)
            rows.append((kind, i, bench.captions[i] if kind == "caption" else bench.video_ids[i]))
        return pd.DataFrame(rows, columns=["kind", "#", "item"])
