"""The Search tab: text -> ranked videos and video -> ranked captions, with the ground truth marked and ranked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from tvr_demo.errors import QueryError
from tvr_demo.safety import resolve_within
from tvr_demo.ui.explain_tab import ExplainFields, open_pair, pick
from tvr_demo.ui.inputs import BRANCHES, checked_number, ranking_branch, resolve_video
from tvr_demo.ui.labels import score_kind
from tvr_demo.ui.listeners import MODEL, PROGRESS, UPLOAD, listener, wire

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

    from tvr_demo import Clip, Engine, ScoreRow, SearchResult
    from tvr_demo.ui.page import Page
    from tvr_demo.ui.session import Session


def score_table(rows: list[dict], columns: dict[str, str]) -> Styler:
    """The ranking as a table whose scores all show four decimals (the values stay numbers for API clients)."""
    return pd.DataFrame(rows).style.format({name: "{:.4f}" for name in columns.values()})


def _score_columns(engine: Engine, result: SearchResult) -> dict[str, str]:
    """Each branch's column: the ranking score first, named by its kind ("score (WTI)"); UNIFY's others beside it."""
    columns = {result.branch: f"score ({score_kind(engine.config, result.branch)})"}
    columns.update({b: score_kind(engine.config, b) for b in engine.branches if b != result.branch})
    return columns


def ground_truth_line(result: SearchResult, names: list[str], k: int, total: int) -> str:
    """Where the ground truth landed, whether or not it made the top k (ranks shown 1-based)."""
    if not result.ground_truth:
        return "Free-text query: no caption of this gallery is this text, so it has no ground truth."
    rank = result.ground_truth_rank + 1
    gt = ", ".join(names[g] for g in result.ground_truth)
    where = f"in the top {k}" if rank <= k else f"**outside the top {k}**, shown last"
    mark = "✓" if rank == 1 else "✗"
    return f"{mark} Ground truth **{gt}** is at **rank {rank}** of {total} ({where})."


def fusion_line(engine: Engine, row: ScoreRow, item: int) -> str:
    """How the fused score that ranks a UNIFY query is made, with the numbers of one result."""
    f = engine.fusion(row, item)
    return (f"Ranked by **fused** = z(latent) + λ·z(lexicon), each standardised over this query's gallery, λ = "
            f"{f.fusion_lambda:g}. For {engine.bench.video_ids[item]}: z(latent {f.latent:.4f}) = {f.z_latent:.3f}, "
            f"z(lexicon {f.lexicon:.4f}) = {f.z_lexicon:.3f}, so fused = {f.z_latent:.3f} + {f.fusion_lambda:g} × "
            f"{f.z_lexicon:.3f} = **{f.fused:.3f}**.")


def text_results(engine: Engine, query: str, k: int, branch: str | None
                 ) -> tuple[list[tuple[str, str]], str, Styler, list[int], str | None]:
    """Top-k videos as (clip, caption) gallery items, a summary, a table, the video index of each gallery item
    (for click-to-explain) and the engine's notice (e.g. a truncated query)."""
    row = engine.score_text(query, branch)
    result = row.result(int(k))
    bench = engine.bench
    rows, items, order = [], [], []
    columns = _score_columns(engine, result)
    # the ground truth outside the top k comes last, at its own rank; clips that could not be decoded (-inf) never
    for h in [h for h in result.hits if math.isfinite(h.score)] + result.missed:
        gt = " ✓" if h.is_ground_truth else ""  # short: a tile's caption is one line
        items.append((str(bench.video_paths[h.index]), f"#{h.rank + 1} · {bench.video_ids[h.index]} · "
                                                       f"{h.score:.4f}{gt}"))
        rows.append({"rank": h.rank + 1, "video": bench.video_ids[h.index], "index": h.index,
                     **{name: round(h.scores[b], 4) for b, name in columns.items()},
                     "ground truth": "✓" if h.is_ground_truth else ""})
        order.append(h.index)
    summary = ground_truth_line(result, bench.video_ids, int(k), engine.gallery_size)
    if result.branch == "fused" and result.hits:
        summary += "\n\n" + fusion_line(engine, row, result.hits[0].index)
    if result.notice:
        summary += f"\n\n⚠ {result.notice}"
    return items, summary, score_table(rows, columns), order, result.notice


def caption_results(engine: Engine, video: str | None, upload: Clip | None, k: int, branch: str | None
                    ) -> tuple[str, pd.DataFrame, list[int], int | None]:
    """Top-k captions for a gallery video or an uploaded clip: a summary, a table, the caption index of each row and
    the gallery video index (None for an upload, which the explain view cannot use)."""
    index = None if upload else resolve_video(engine, video)
    if upload is None and index is None:
        raise QueryError("choose a gallery video or upload a clip")
    result = engine.search_video(upload if upload else index, k=int(k), branch=branch)
    bench = engine.bench
    hits = result.hits + result.missed
    columns = _score_columns(engine, result)
    rows = [{"rank": h.rank + 1, "caption": bench.captions[h.index], "caption #": h.index,
             **{name: round(h.scores[b], 4) for b, name in columns.items()}, "ground truth": "✓" if h.is_ground_truth else ""}
            for h in hits]
    if upload:
        summary = f"Uploaded clip `{upload.name}`: the {int(k)} best-matching benchmark captions."
    else:
        names = [f"caption {i}" for i in range(engine.num_captions)]
        summary = ground_truth_line(result, names, int(k), engine.num_captions).replace(
            "Ground truth", f"Best ground-truth caption of {bench.video_ids[index]}")
    return summary, score_table(rows, columns), [h.index for h in hits], index


def similar_results(engine: Engine, video: str | None, upload: Clip | None, k: int
                    ) -> tuple[str, list[tuple[str, str]], pd.DataFrame, int | None]:
    """The k gallery clips closest to a gallery video or an uploaded clip by the cosine of their pooled video
    features: a summary naming that score, gallery items, a table and the gallery video's index (None: an upload)."""
    index = None if upload else resolve_video(engine, video)
    if upload is None and index is None:
        raise QueryError("choose a gallery video or upload a clip")
    result = engine.search_similar(upload if upload else index, k=int(k))
    bench, kind = engine.bench, score_kind(engine.config, result.branch)
    items = [(str(bench.video_paths[h.index]), f"#{h.rank + 1} · {bench.video_ids[h.index]} · {kind} {h.score:.4f}")
             for h in result.hits]
    table = pd.DataFrame([{"rank": h.rank + 1, "video": bench.video_ids[h.index], "index": h.index,
                           kind: round(h.score, 4)} for h in result.hits])
    name = f"uploaded clip `{upload.name}`" if upload else f"**{bench.video_ids[index]}**"
    summary = (f"The {len(result.hits)} clips most like {name}, by the **{kind}**: the cosine of each clip's pooled "
               "vector (the mean of its frame features), the video tower alone, no text involved.")
    return summary, items, table, index


class SearchTab:
    """Type a query (or pick a benchmark caption) and see the top k videos; or find the captions of a clip."""

    title, id = "Search", "search"

    def __init__(self, session: Session) -> None:
        self.session = session

    def layout(self, page: Page) -> None:
        with gr.Row(equal_height=True):
            self.query = gr.Textbox(label="Text query", placeholder="e.g. a small red circle moves to the left",
                                    scale=4, submit_btn=True)
            self.k = checked_number(gr.Slider(1, 50, value=10, step=1, label="top k", scale=1), "top k")
            self.branch = gr.Dropdown(BRANCHES, value="auto", label="Ranking branch (UNIFY)", scale=1)
        self.examples = gr.Dropdown([], label="Benchmark captions: pick one to search with a known ground truth",
                                    allow_custom_value=False)
        self.summary = gr.Markdown(elem_id="search-summary")
        self.results = gr.Gallery(label="Top-k videos: click one, then Explain", columns=5, height="auto",
                                  object_fit="contain", elem_id="search-results")
        with gr.Row():
            self.selected_md = gr.Markdown()
            self.explain_btn = gr.Button("Explain the selected (or top) result", variant="primary")
        self.table = gr.Dataframe(label="Ranking (click a row to explain it)", interactive=False,
                                  headers=["rank", "video", "index", "score", "ground truth"], elem_id="search-table")
        self.order, self.selected = gr.State([]), gr.State(None)
        with gr.Accordion("Search by a clip: the captions that match it, or the clips most like it", open=False):
            with gr.Row():
                self.video_pick = gr.Dropdown([], label="Gallery video (id or index)", allow_custom_value=True)
                self.upload = gr.File(label="…or upload a clip", file_types=["video"], type="filepath")
            with gr.Row():
                self.vsearch_btn = gr.Button("Find captions (video → text)")
                self.similar_btn = gr.Button("Find similar clips (video → video)")
            self.similar_md = gr.Markdown(elem_id="similar-summary")
            self.similar = gr.Gallery(label="Most similar clips", columns=6, height="auto", object_fit="contain",
                                      elem_id="similar-results")
            self.similar_table = gr.Dataframe(label="Similar clips", interactive=False, elem_id="similar-table",
                                              headers=["rank", "video", "index", "pooled video cosine"])
            self.vsummary = gr.Markdown()
            with gr.Row():
                self.vpreview = gr.Video(label="Query clip", interactive=False, height=240)
                self.vtable = gr.Dataframe(label="Top-k captions (click a row to explain it)", interactive=False,
                                           wrap=True, headers=["rank", "caption", "caption #", "score", "ground truth"])
            self.vcaptions, self.vindex = gr.State([]), gr.State(None)

    @property
    def load_outputs(self) -> list:
        return [self.examples, self.video_pick]

    def loaded(self, engine: Engine) -> tuple:
        """The benchmark captions and video ids to pick from."""
        bench = engine.bench
        return (gr.Dropdown(choices=list(dict.fromkeys(bench.captions))[:500], visible=bench.num_captions > 0),
                gr.Dropdown(choices=bench.video_ids))

    def wire(self, page: Page) -> None:
        ctx = page.context
        search_in = [self.query, self.k, self.branch, *ctx]
        search_out = [self.results, self.summary, self.table, self.order, self.selected, self.selected_md]
        wire([self.query.submit], self.run_search, search_in, search_out, api_name="search")
        picked = self.examples.input(lambda caption: caption, self.examples, self.query, api_visibility="private")
        wire(picked.then, self.run_search, search_in, search_out, api_visibility="private")
        self.results.select(self.open_result, [self.order, *ctx], [self.selected, self.selected_md],
                            api_visibility="private")
        explain = page.explain
        explain.opens(self.explain_btn.click, self.explain_selected, [self.query, self.selected, self.order, *ctx])
        explain.opens(self.table.select, self.open_table_row, [self.order, self.query, *ctx])
        wire(self.vsearch_btn.click, self.run_search_video, [self.video_pick, self.upload, self.k, self.branch, *ctx],
             [self.vsummary, self.vpreview, self.vtable, self.vcaptions, self.vindex], api_name="search_video")
        explain.opens(self.vtable.select, self.open_caption_row, [self.vcaptions, self.vindex, *ctx])
        wire(self.similar_btn.click, self.run_similar, [self.video_pick, self.upload, self.k, *ctx],
             [self.similar_md, self.vpreview, self.similar, self.similar_table], api_name="search_similar")

    # ------------------------------------------------------------------ listeners

    @listener(gpu_seconds=60, guarded=False)
    def search_text(self, query: str, k: float, branch: str | None, model: str, dataset: str, split: str,
                    progress: gr.Progress | None) -> tuple:
        """Text to video, the GPU part: gallery items, summary, table, order and a notice."""
        engine = self.session.engine(model, dataset, split, progress, searching=True)
        return text_results(engine, query, k, ranking_branch(branch))

    @listener(MODEL)
    def run_search(self, query: str, k: float, branch: str | None, model: str, dataset: str, split: str,
                   progress: gr.Progress = PROGRESS) -> tuple:
        """A typed query's top k videos; a new ranking clears the selection."""
        items, summary, table, order, notice = self.search_text(query, k, branch, model, dataset, split, progress)
        if notice:
            gr.Warning(notice)
        return items, summary, table, order, None, ""  # a new ranking: nothing selected yet

    @listener(gpu_seconds=60, guarded=False)
    def search_video(self, video: str | None, clip: Clip | None, k: float, branch: str | None, model: str,
                     dataset: str, split: str, progress: gr.Progress | None) -> tuple:
        """Video to text, the GPU part, for a gallery video or a decoded upload."""
        engine = self.session.engine(model, dataset, split, progress, searching=True)
        return caption_results(engine, video, clip, k, ranking_branch(branch))

    @listener(UPLOAD)
    def run_search_video(self, video: str | None, upload: str | None, k: float, branch: str | None, model: str,
                         dataset: str, split: str, progress: gr.Progress = PROGRESS) -> tuple:
        """A gallery video's or an uploaded clip's top k captions (the upload decoded on the CPU first, in a worker
        process that a malformed file can crash or hang without taking the server along)."""
        clip = None
        if upload:  # gradio hands over only files it received; the path policy holds whoever the caller is
            upload = str(resolve_within(upload, [Path(gr.utils.get_upload_folder())], "uploaded file"))
            engine = self.session.engine(model, dataset, split, progress, searching=True)
            clip = engine.read_clip(Path(upload), untrusted=True)
        summary, table, captions, index = self.search_video(video, clip, k, branch, model, dataset, split, progress)
        preview = upload if upload else str(self.session.benchmark(dataset, split).video_paths[index])
        return summary, preview, table, captions, index

    @listener(gpu_seconds=60, guarded=False)
    def similar_videos(self, video: str | None, clip: Clip | None, k: float, model: str, dataset: str, split: str,
                       progress: gr.Progress | None) -> tuple:
        """Video to video, the GPU part, for a gallery video or a decoded upload."""
        engine = self.session.engine(model, dataset, split, progress, searching=True)
        return similar_results(engine, video, clip, k)

    @listener(UPLOAD)
    def run_similar(self, video: str | None, upload: str | None, k: float, model: str, dataset: str, split: str,
                    progress: gr.Progress = PROGRESS) -> tuple:
        """The gallery clips most like a gallery video or an uploaded clip (the upload decoded as for video search),
        and the query clip to play."""
        clip = None
        if upload:
            upload = str(resolve_within(upload, [Path(gr.utils.get_upload_folder())], "uploaded file"))
            engine = self.session.engine(model, dataset, split, progress, searching=True)
            clip = engine.read_clip(Path(upload), untrusted=True)
        summary, items, table, index = self.similar_videos(video, clip, k, model, dataset, split, progress)
        preview = upload if upload else str(self.session.benchmark(dataset, split).video_paths[index])
        return summary, preview, items, table

    @listener()
    def open_result(self, order: list[int], model: str, dataset: str, split: str, evt: gr.SelectData
                    ) -> tuple[int, str]:
        """Select a clicked result (explained on demand)."""
        video = pick(order, evt.index, "result")
        ids = self.session.benchmark(dataset, split).video_ids
        return video, f"Selected **{ids[video]}** (result {evt.index + 1})"

    @listener()
    def explain_selected(self, query: str, selected: int | None, order: list[int], model: str, dataset: str,
                         split: str) -> ExplainFields:
        """The clicked result, or the top one when none was clicked."""
        if selected is None and not order:
            raise gr.Error("search first, then click a result to explain it", print_exception=False)
        return open_pair(self.session.benchmark(dataset, split), query, order[0] if selected is None else selected)

    @listener()
    def open_table_row(self, order: list[int], query: str, model: str, dataset: str, split: str,
                       evt: gr.SelectData) -> ExplainFields:
        """A row of the ranking table, explained."""
        return open_pair(self.session.benchmark(dataset, split), query, pick(order, evt.index, "row"))

    @listener()
    def open_caption_row(self, captions: list[int], video_index: int | None, model: str, dataset: str, split: str,
                         evt: gr.SelectData) -> ExplainFields:
        """A caption of a video search's table, explained against its video."""
        if video_index is None:
            raise gr.Error("an uploaded clip is not in the gallery, so it cannot be explained", print_exception=False)
        bench = self.session.benchmark(dataset, split)
        return open_pair(bench, bench.captions[pick(captions, evt.index, "row")], video_index)
