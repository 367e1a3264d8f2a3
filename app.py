"""The Gradio app: search a benchmark gallery with DRL / UNIFY checkpoints and see why each result ranked where it did.

`python app.py` serves the bundled checkpoints on the bundled synthetic benchmark at 127.0.0.1:7860; see --help.
Every public listener has a stable api_name: `gradio_client.Client(url).predict(query, api_name="/search")`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time

import gradio as gr
import pandas as pd

from tvr_demo.errors import TVRError
from tvr_demo.ui import analysis, explain, search
from tvr_demo.ui.bridge import MAP_BRIDGE_JS, MAP_ELEM_ID
from tvr_demo.ui.gpu import gpu, on_zero_gpu
from tvr_demo.ui.session import Session, model_summary

BRANCHES = ["auto", "latent", "lexicon", "fused"]
PROGRESS = gr.Progress(track_tqdm=True)  # gradio reads each request's progress from context, so one default serves all
EXPORTABLE = ("explain A", "explain B", "lexicon A", "lexicon B", "words A vs B", "metrics", "slices", "comparison",
              "channel correlation", "embedding map")
INTRO = ("Text-video retrieval, explained. **Search** the gallery, click a result to see in **Explain** how the "
         "model matched each word to each frame (DRL) or which words it shared (UNIFY), browse **Failures**, compare "
         "**Channels** with and without CDCR, and find clusters on the **Map**. UNIFY here is our documented "
         "interpretation of the paper: no official code exists.")


def user_errors(fn):
    """Show the project's user-facing errors (empty query, unknown video, corrupt upload...) as a notice, never a
    stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TVRError as err:
            raise gr.Error(str(err), print_exception=False) from None

    return wrapper


def _branch(value: str | None) -> str | None:
    return None if value in (None, "", "auto") else value


def build_demo(session: Session) -> gr.Blocks:
    """The whole page; every callback is a few lines over the session's engines."""
    engine = session.engine

    def bench(model, dataset, split):
        """The gallery's benchmark alone (glue code needs names, not the model)."""
        return session.benchmark(dataset, split)

    # ------------------------------------------------------------------ callbacks (GPU work under @gpu)

    @user_errors
    @gpu(duration=180)
    def load(model, dataset, split, progress=PROGRESS):
        e = engine(model, dataset, split, progress)
        bench, meta = e.bench, e.checkpoint.meta
        description = meta.get("description", "")
        header = (f"**Device** `{session.device}` · **Model** `{model}`: {model_summary(e.config)} · **Gallery** "
                  f"{bench.name}/{bench.split}: {bench.num_videos} videos, {bench.num_captions} captions "
                  f"(`{bench.root}`)" + (f"\n\n{description}" if description else "")
                  + (f"\n\n⚠ {len(e.skipped)} videos could not be decoded and are never retrieved."
                     if e.skipped else ""))
        captions = list(dict.fromkeys(bench.captions))[:500]
        colours = analysis.map_colour_choices(e)
        return (header, gr.Dropdown(choices=captions), gr.Dropdown(choices=bench.video_ids),
                gr.Dropdown(choices=analysis.slice_choices(e), value=analysis.ALL_SLICES),
                gr.Dropdown(choices=colours, value=colours[0]), *[gr.Column(visible=e.is_unify)] * 3)

    @gpu
    def search_text(query, k, branch, model, dataset, split, progress):
        return search.search_text(engine(model, dataset, split, progress), query, k, _branch(branch))

    @user_errors
    def run_search(query, k, branch, model, dataset, split, progress=PROGRESS):
        items, summary, table, order, notice = search_text(query, k, branch, model, dataset, split, progress)
        if notice:
            gr.Warning(notice)
        return items, summary, table, order

    @user_errors
    @gpu
    def run_search_video(video, upload, k, branch, model, dataset, split, progress=PROGRESS):
        e = engine(model, dataset, split, progress)
        summary, table, captions, index = search.search_video(e, video, upload, k, _branch(branch))
        preview = upload if upload else str(e.bench.video_paths[index])
        return summary, preview, table, captions, index

    @user_errors
    @gpu
    def run_explain(query, video, compare_query, compare_video, model, dataset, split,
                    progress=PROGRESS):
        out = explain.explain(engine(model, dataset, split, progress), query, video, compare_query, compare_video)
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
    def run_correlation(model_a, model_b, dataset, split, progress=PROGRESS):
        names = list(dict.fromkeys([model_a, model_b]))
        return analysis.correlation_view({n: engine(n, dataset, split, progress) for n in names})

    @gpu
    def map_embeddings(model, dataset, split, progress):
        return analysis.map_embeddings(engine(model, dataset, split, progress))

    @user_errors
    def run_map(colour_by, n_lines, model, dataset, split, progress=PROGRESS):
        text, video = map_embeddings(model, dataset, split, progress)
        progress(0.5, desc="projecting with UMAP (once per model and gallery, then cached)")
        return analysis.map_view(engine(model, dataset, split), text, video, colour_by, n_lines, model)

    def thumbnail(point):
        """Server function for the map's hover; gradio hands it the JS call's arguments as one list."""
        while isinstance(point, list) and len(point) == 1:
            point = point[0]
        gallery_key, index = point
        return session.thumbnail(str(gallery_key), int(index))

    def export_html(which, *figures):
        plot = dict(zip(EXPORTABLE, figures, strict=True)).get(which)
        if plot is None or getattr(plot, "type", None) != "plotly":
            raise gr.Error(f"the {which!r} figure is empty: show it first, then export it", print_exception=False)
        import plotly.io as pio

        path = tempfile.NamedTemporaryFile(suffix=f"-{which.replace(' ', '_')}.html", delete=False).name
        pio.from_json(plot.plot).write_html(path, include_plotlyjs=True, full_html=True)
        return path

    # ------------------------------------------------------------------ glue: open a pair in the explain view

    def to_explain():
        return gr.Tabs(selected="explain")

    def open_result(order, model, dataset, split, evt: gr.SelectData):
        video = order[evt.index]
        return video, f"Selected **{bench(model, dataset, split).video_ids[video]}** (result {evt.index + 1})"

    def open_pair(context, query, video, compare_query="", compare_video=None):
        """Switch to the explain tab with its fields filled (videos by id); the explain listener runs next."""
        ids = bench(*context).video_ids
        return (gr.Tabs(selected="explain"), query, "" if video is None else ids[video], compare_query,
                "" if compare_video is None or compare_video < 0 else ids[compare_video])

    def explain_selected(query, selected, model, dataset, split):
        if selected is None:
            raise gr.Error("click a result first", print_exception=False)
        return open_pair((model, dataset, split), query, selected)

    def open_table_row(order, query, model, dataset, split, evt: gr.SelectData):
        return open_pair((model, dataset, split), query, order[evt.index[0]])

    def open_caption_row(captions, video_index, model, dataset, split, evt: gr.SelectData):
        if video_index is None:
            raise gr.Error("an uploaded clip is not in the gallery, so it cannot be explained", print_exception=False)
        caption = bench(model, dataset, split).captions[captions[evt.index[0]]]
        return open_pair((model, dataset, split), caption, video_index)

    def open_pair_row(pairs, model, dataset, split, evt: gr.SelectData):
        return open_pair((model, dataset, split), *pairs[evt.index[0]])

    def open_item(context, kind, index):
        """A map point or selection row: a caption opens with its top result, a video with its first caption."""
        b = bench(*context)
        if kind == "caption":
            return open_pair(context, b.captions[index], None)
        captions = b.captions_of(index)
        return open_pair(context, b.captions[captions[0]] if captions else "", index)

    def open_map_point(model, dataset, split, evt: gr.EventData):
        data = evt._data or {}
        return open_item((model, dataset, split), data.get("kind"), int(data.get("index", 0)))

    def open_selection_row(rows, model, dataset, split, evt: gr.SelectData):
        row = rows.iloc[evt.index[0]]
        return open_item((model, dataset, split), row["kind"], int(row["#"]))

    def map_selection(model, dataset, split, evt: gr.EventData):
        b = bench(model, dataset, split)
        rows = [(kind, int(i), b.captions[int(i)] if kind == "caption" else b.video_ids[int(i)])
                for kind, i in (evt._data or {}).get("items", [])]
        return pd.DataFrame(rows, columns=["kind", "#", "item"])

    # ------------------------------------------------------------------ layout

    with gr.Blocks(title="TVR demo: DRL and UNIFY") as demo:
        gr.Markdown(f"## Text-video retrieval: DRL and UNIFY\n{INTRO}")
        header = gr.Markdown("Loading…")
        with gr.Row(equal_height=True):
            model = gr.Dropdown(list(session.models), value=session.default_model, label="Model", scale=2)
            dataset = gr.Textbox(session.dataset, label="Gallery folder", scale=3,
                                 placeholder="blank = the bundled synthetic benchmark")
            split = gr.Dropdown(["test", "val", "train"], value=session.split, label="Split", scale=1)
            load_btn = gr.Button("Load", scale=0, min_width=100)
        ctx = [model, dataset, split]
        with gr.Tabs() as tabs:
            with gr.Tab("Search", id="search"):
                with gr.Row(equal_height=True):
                    query = gr.Textbox(label="Text query", placeholder="e.g. a small red circle moves to the left",
                                       scale=4, submit_btn=True)
                    k = gr.Slider(1, 50, value=10, step=1, label="top k", scale=1)
                    branch = gr.Dropdown(BRANCHES, value="auto", label="Ranking branch (UNIFY)", scale=1)
                examples = gr.Dropdown([], label="Benchmark captions: pick one to search with a known ground truth",
                                       allow_custom_value=False)
                summary = gr.Markdown(elem_id="search-summary")
                results = gr.Gallery(label="Top-k videos: click one, then Explain", columns=6, height="auto", object_fit="contain",
                                     elem_id="search-results")
                with gr.Row():
                    selected_md = gr.Markdown()
                    explain_btn_search = gr.Button("Explain the selected result", variant="primary")
                results_table = gr.Dataframe(label="Ranking (click a row to explain it)", interactive=False,
                                             headers=["rank", "video", "index", "score", "ground truth"],
                                             elem_id="search-table")
                order, selected = gr.State([]), gr.State(None)
                with gr.Accordion("Video → text: the captions that match a clip", open=False):
                    with gr.Row():
                        video_pick = gr.Dropdown([], label="Gallery video (id or index)", allow_custom_value=True)
                        upload = gr.File(label="…or upload a clip", file_types=["video"], type="filepath")
                    vsearch_btn = gr.Button("Find captions")
                    vsummary = gr.Markdown()
                    with gr.Row():
                        vpreview = gr.Video(label="Query clip", interactive=False, height=240)
                        vtable = gr.Dataframe(label="Top-k captions (click a row to explain it)", interactive=False,
                                              headers=["rank", "caption", "caption #", "score", "ground truth"])
                    vcaptions, vindex = gr.State([]), gr.State(None)
            with gr.Tab("Explain", id="explain"):
                with gr.Row(equal_height=True):
                    ex_query = gr.Textbox(label="Query", scale=3)
                    ex_video = gr.Textbox(label="Video (id or index; blank = top result)", scale=1)
                    cmp_query = gr.Textbox(label="Compare: query (blank = same)", scale=2)
                    cmp_video = gr.Textbox(label="Compare: video (blank = ground truth / what beat it)", scale=1)
                    explain_btn = gr.Button("Explain", variant="primary", scale=1)
                with gr.Row():
                    with gr.Column():
                        md_a = gr.Markdown()
                        fig_a = gr.Plot(label="Pair A", elem_id="explain-a")
                        with gr.Column(visible=False) as lex_col_a:
                            lex_a = gr.Plot(label="Lexicon words A (UNIFY)")
                    with gr.Column():
                        md_b = gr.Markdown()
                        fig_b = gr.Plot(label="Pair B", elem_id="explain-b")
                        with gr.Column(visible=False) as lex_col_b:
                            lex_b = gr.Plot(label="Lexicon words B (UNIFY)")
                with gr.Column(visible=False) as diff_col:
                    diff = gr.Plot(label="Words that separate A from B (UNIFY, same query)")
            with gr.Tab("Failures", id="failures") as failures_tab:
                metrics_btn = gr.Button("Evaluate")
                with gr.Row():
                    metrics_fig = gr.Plot(label="Benchmark metrics", elem_id="metrics-plot")
                    metrics_table = gr.Dataframe(label="All metrics", interactive=False,
                                                 headers=["series", "direction", "R@1", "R@5", "R@10", "MdR", "MnR"])
                with gr.Row(equal_height=True):
                    direction = gr.Radio(["t2v", "v2t"], value="t2v", label="Direction")
                    fail_branch = gr.Dropdown(BRANCHES, value="auto", label="Branch")
                    sort_by = gr.Radio(["rank", "margin"], value="rank", label="Worst by")
                    slice_label = gr.Dropdown([analysis.ALL_SLICES], value=analysis.ALL_SLICES, label="Slice")
                    limit = gr.Slider(10, 1000, value=100, step=10, label="Rows")
                failures_btn = gr.Button("List failures", variant="primary")
                failures_md = gr.Markdown()
                failures_table = gr.Dataframe(label="Failures (click a row: ground truth vs what beat it)",
                                              interactive=False, elem_id="failures-table",
                                              headers=["query #", "caption", "ground truth", "rank", "beaten by"])
                failure_pairs = gr.State([])
                with gr.Row(equal_height=True):
                    model_b = gr.Dropdown(list(session.models), value=list(session.models)[-1],
                                          label="Second model (comparison, slices)")
                    compare_k = gr.Slider(1, 10, value=1, step=1, label="right = ground truth in top k")
                    slices_btn = gr.Button("Slice bars")
                    compare_btn = gr.Button("Compare the two models")
                slices_fig = gr.Plot(label="R@1 per slice")
                compare_md = gr.Markdown()
                with gr.Row():
                    compare_fig = gr.Plot(label="Agreement")
                    compare_table = gr.Dataframe(label="Queries one model gets right and the other wrong",
                                                 interactive=False, headers=["which", "query #", "caption"])
                compare_pairs = gr.State([])
            with gr.Tab("Channels", id="channels"):
                names = list(session.models)
                with gr.Row(equal_height=True):
                    corr_a = gr.Dropdown(names, value="drl-wti-cdcr" if "drl-wti-cdcr" in names else names[0],
                                         label="Model (with CDCR)")
                    corr_b = gr.Dropdown(names, value="drl-wti" if "drl-wti" in names else names[-1],
                                         label="Model (without CDCR)")
                    corr_btn = gr.Button("Compute", variant="primary")
                corr_fig = gr.Plot(label="Channel cross-correlation", elem_id="correlation-plot")
                corr_md = gr.Markdown()
            with gr.Tab("Map", id="map"):
                with gr.Row(equal_height=True):
                    colour_by = gr.Dropdown(list(analysis.MAP_COLOURS), value="modality", label="Colour by")
                    n_lines = gr.Slider(0, 200, value=20, step=5, label="Failure lines (worst first)")
                    map_btn = gr.Button("Draw the map", variant="primary")
                gr.Markdown("Hover a video (◆) for its frame; click any point to open it in Explain; lasso to list.")
                map_fig = gr.Plot(label="Embedding map", elem_id=MAP_ELEM_ID)
                bridge = gr.HTML("", js_on_load=MAP_BRIDGE_JS, server_functions=[thumbnail])
                map_selected = gr.Dataframe(label="Lasso selection", interactive=False, headers=["kind", "#", "item"])
            with gr.Tab("Teach", id="teach"):
                walkthrough = gr.Markdown("Explain a pair first: this page then tells its story with its numbers.")
                gr.Markdown("#### Export a figure for slides\nPNG: the camera icon on any figure. HTML (interactive, "
                            "self-contained):")
                with gr.Row(equal_height=True):
                    which = gr.Dropdown(list(EXPORTABLE), value=EXPORTABLE[0], label="Figure")
                    export_btn = gr.Button("Export HTML")
                    export_file = gr.File(label="Download", interactive=False)

        # ------------------------------------------------------------------ wiring
        loaded = [header, examples, video_pick, slice_label, colour_by, lex_col_a, lex_col_b, diff_col]
        gr.on([demo.load, model.change, split.change, load_btn.click, dataset.submit], load, ctx, loaded,
              api_name="load")
        search_out = [results, summary, results_table, order]
        gr.on([query.submit], run_search, [query, k, branch, *ctx], search_out, api_name="search")
        examples.input(lambda c: c, examples, query, api_visibility="private").then(
            run_search, [query, k, branch, *ctx], search_out, api_visibility="private")
        results.select(open_result, [order, *ctx], [selected, selected_md], api_visibility="private")
        explain_out = [md_a, fig_a, lex_a, md_b, fig_b, lex_b, diff, walkthrough]
        explain_in = [ex_query, ex_video, cmp_query, cmp_video, *ctx]
        open_out = [tabs, ex_query, ex_video, cmp_query, cmp_video]

        def opens(event, fn, inputs):
            event(fn, inputs, open_out, api_visibility="private").success(
                run_explain, explain_in, explain_out, api_visibility="private")

        opens(explain_btn_search.click, explain_selected, [query, selected, *ctx])
        opens(results_table.select, open_table_row, [order, query, *ctx])
        vsearch_btn.click(run_search_video, [video_pick, upload, k, branch, *ctx],
                          [vsummary, vpreview, vtable, vcaptions, vindex], api_name="search_video")
        opens(vtable.select, open_caption_row, [vcaptions, vindex, *ctx])
        explain_btn.click(run_explain, explain_in, explain_out, api_name="explain")
        ex_query.submit(run_explain, explain_in, explain_out, api_visibility="private")

        metrics_btn.click(run_metrics, ctx, [metrics_fig, metrics_table], api_name="metrics")
        failures_in, failures_out = [direction, fail_branch, sort_by, slice_label, limit, *ctx], [
            failures_table, failures_md, failure_pairs]
        failures_btn.click(run_failures, failures_in, failures_out, api_name="failures")
        failures_tab.select(run_metrics, ctx, [metrics_fig, metrics_table], api_visibility="private").then(
            run_failures, failures_in, failures_out, api_visibility="private").then(
            run_slices, [fail_branch, model_b, *ctx], slices_fig, api_visibility="private")
        opens(failures_table.select, open_pair_row, [failure_pairs, *ctx])
        slices_btn.click(run_slices, [fail_branch, model_b, *ctx], slices_fig, api_name="slices")
        compare_btn.click(run_compare, [model_b, compare_k, *ctx], [compare_fig, compare_table, compare_pairs,
                                                                     compare_md], api_name="compare")
        opens(compare_table.select, open_pair_row, [compare_pairs, *ctx])
        corr_btn.click(run_correlation, [corr_a, corr_b, dataset, split], [corr_fig, corr_md], api_name="correlation")
        map_btn.click(run_map, [colour_by, n_lines, *ctx], map_fig, api_name="embedding_map")
        opens(bridge.click, open_map_point, ctx)
        opens(map_selected.select, open_selection_row, [map_selected, *ctx])
        bridge.input(map_selection, ctx, map_selected, api_visibility="private")
        figures = [fig_a, fig_b, lex_a, lex_b, diff, metrics_fig, slices_fig, compare_fig, corr_fig, map_fig]
        export_btn.click(export_html, [which, *figures], export_file, api_name="export_html")
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the TVR demo (DRL and UNIFY) as a Gradio app.")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="registry name, our checkpoint folder, or an official DRL file; repeat or comma-separate "
                        "(default: every bundled checkpoint)")
    p.add_argument("--dataset", default=None, help="benchmark folder (default: the bundled synthetic benchmark, "
                                                   "generated on first start)")
    p.add_argument("--split", default="test", help="gallery split (default: test)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to serve on (default 127.0.0.1, or $GRADIO_SERVER_NAME as set on Spaces)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                   help="port (default 7860, or $GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    args = p.parse_args(argv)
    if args.checkpoint:
        args.checkpoint = [c.strip() for spec in args.checkpoint for c in spec.split(",") if c.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if on_zero_gpu() and args.device is None:
        # ZeroGPU has no GPU at start-up, when the gallery is encoded and cached in memory; the tiny bundled models
        # then serve from the CPU (a GPU call's new CUDA tensors would not outlive the call).
        args.device = "cpu"
    try:
        session = Session(args.checkpoint, args.dataset, args.split, args.device)
        session.warm()
    except TVRError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    demo = build_demo(session)
    print(f"ready in {time.perf_counter() - start:.1f} s: {len(session.models)} models on {session.device}",
          file=sys.stderr)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
