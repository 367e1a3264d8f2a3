"""The Gradio app: search a benchmark gallery with DRL / UNIFY checkpoints and see why each result ranked where it did.

`python app.py` serves the bundled checkpoints on the bundled synthetic benchmark at 127.0.0.1:7860; see --help.
Every public listener has a stable api_name: `gradio_client.Client(url).predict(query, api_name="/search")`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import gradio as gr

from tvr_demo.data.video import UPLOAD_MAX_BYTES
from tvr_demo.errors import TVRError
from tvr_demo.memory import freeze_startup_objects, return_large_blocks_to_the_system
from tvr_demo.ui import split_views as analysis
from tvr_demo.ui.background import low_priority
from tvr_demo.ui.bridge import MAP_BRIDGE_JS, MAP_ELEM_ID
from tvr_demo.ui.callbacks import EXPORTABLE, Callbacks
from tvr_demo.ui.exports import remove_abandoned_folders
from tvr_demo.ui.gpu import on_zero_gpu
from tvr_demo.ui.inputs import checked_number
from tvr_demo.ui.session import PREPARATION_WAITERS, Session

BRANCHES = ["auto", "latent", "lexicon", "fused"]
# One FIFO pool for the listeners that answer one query with a loaded model (search, explain, video search), two at a
# time (the CPU Space has 2 cores): on a 2-core CPU, 20 concurrent users got p95 1.5 s (bench/load_test.py) against
# 2.1 s with two per listener and 1.9 s with a pool of 8. Whatever may take minutes runs in pools of its own, so a
# search never queues behind it: HEAVY_POOL for whole-split work (metrics, failures, slices, comparison, channels:
# a first build or a training split's score matrices), UPLOAD_POOL for checking and decoding uploaded clips (in
# killable worker processes), MAP_POOL for UMAP fits; /load keeps its own queue. A search whose engine is being
# prepared waits for it in MODEL_POOL: the pool has a slot for each request Session.engine(searching=True) lets
# wait (PREPARATION_WAITERS) beside the two above, so searches on ready engines keep two while they wait (and run
# up to four at once while none does).
# A new listener: MODEL_POOL if it scores one query against a loaded engine, HEAVY_POOL if it may build an engine
# or touch every caption x video score; its function wrapped in callbacks.user_errors either way.
MODEL_POOL = dict(concurrency_id="model", concurrency_limit=2 + PREPARATION_WAITERS)
HEAVY_POOL = dict(concurrency_id="heavy", concurrency_limit=2)
UPLOAD_POOL = dict(concurrency_id="upload", concurrency_limit=2)
MAP_POOL = dict(concurrency_id="map", concurrency_limit=1)
# gradio's copies of uploads and exported files are deleted an hour after they were made (checked every 10 min)
DELETE_CACHE = (600, 3600)
INTRO = ("Text-video retrieval, explained. **Search** the gallery, click a result to see in **Explain** how the "
         "model matched each word to each frame (DRL) or which words it shared (UNIFY), browse **Failures**, compare "
         "**Channels** with and without CDCR, and find clusters on the **Map**. UNIFY here is our documented "
         "interpretation of the paper: no official code exists.")


def build_demo(session: Session) -> gr.Blocks:
    """The whole page, laid out as it looks; the listeners are the callbacks of tvr_demo.ui.callbacks."""
    cb = Callbacks(session)
    with gr.Blocks(title="TVR demo: DRL and UNIFY", delete_cache=DELETE_CACHE) as demo:
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
                    k = checked_number(gr.Slider(1, 50, value=10, step=1, label="top k", scale=1), "top k")
                    branch = gr.Dropdown(BRANCHES, value="auto", label="Ranking branch (UNIFY)", scale=1)
                examples = gr.Dropdown([], label="Benchmark captions: pick one to search with a known ground truth",
                                       allow_custom_value=False)
                summary = gr.Markdown(elem_id="search-summary")
                results = gr.Gallery(label="Top-k videos: click one, then Explain", columns=6, height="auto", object_fit="contain",
                                     elem_id="search-results")
                with gr.Row():
                    selected_md = gr.Markdown()
                    explain_btn_search = gr.Button("Explain the selected (or top) result", variant="primary")
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
                        vtable = gr.Dataframe(label="Top-k captions (click a row to explain it)", interactive=False, wrap=True,
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
                with gr.Accordion("Which word decides: the query with each word removed or replaced", open=True):
                    with gr.Row(equal_height=True):
                        cf_branch = gr.Dropdown(BRANCHES, value="auto", label="Branch", scale=1)
                        cf_btn = gr.Button("Which word decides? (the query and video above)", scale=2)
                    cf_md = gr.Markdown(elem_id="counterfactual-summary")
                    cf_fig = gr.Plot(label="Score and rank of the video after each one-word edit",
                                     elem_id="counterfactual-plot")
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
                    limit = checked_number(gr.Slider(10, 1000, value=100, step=10, label="Rows"), "Rows")
                failures_btn = gr.Button("List failures", variant="primary")
                failures_md = gr.Markdown()
                failures_table = gr.Dataframe(label="Failures (click a row: ground truth vs what beat it)", wrap=True,
                                              interactive=False, elem_id="failures-table",
                                              headers=["query #", "caption", "ground truth", "rank", "beaten by"])
                failure_pairs = gr.State([])
                with gr.Row(equal_height=True):
                    model_b = gr.Dropdown(list(session.models), value=list(session.models)[-1],
                                          label="Second model (comparison, slices)")
                    compare_k = checked_number(gr.Slider(1, 10, value=1, step=1,
                                                         label="right = ground truth in top k"), "top k")
                    slices_btn = gr.Button("Slice bars")
                    compare_btn = gr.Button("Compare the two models")
                slices_fig = gr.Plot(label="R@1 per slice")
                compare_md = gr.Markdown()
                with gr.Row():
                    compare_fig = gr.Plot(label="Agreement")
                    compare_table = gr.Dataframe(label="Queries one model gets right and the other wrong", wrap=True,
                                                 interactive=False, headers=["which", "query #", "caption"])
                compare_pairs = gr.State([])
                with gr.Accordion("Blind spots: what the model cannot tell apart (twin pairs, confusions)", open=True):
                    blind_btn = gr.Button("Find blind spots (beside the second model)")
                    blind_md = gr.Markdown(elem_id="blind-spots-summary")
                    blind_fig = gr.Plot(label="Twin pairs per attribute", elem_id="blind-spots-plot")
                    confusion_fig = gr.Plot(label="What beat the ground truth, per attribute", elem_id="confusion-plot")
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
                    n_lines = checked_number(gr.Slider(0, 200, value=20, step=5, label="Failure lines (worst first)"),
                                             "Failure lines")
                    map_btn = gr.Button("Draw the map", variant="primary")
                gr.Markdown("Hover a video (◆) for its frame; click any point to open it in Explain; lasso to list.")
                map_fig = gr.Plot(label="Embedding map", elem_id=MAP_ELEM_ID)
                bridge = gr.HTML("", js_on_load=MAP_BRIDGE_JS, server_functions=[cb.thumbnail])
                map_selected = gr.Dataframe(label="Lasso selection", interactive=False, wrap=True, headers=["kind", "#", "item"])
            with gr.Tab("Walkthrough", id="walkthrough"):
                walkthrough = gr.Markdown("Explain a pair first: this page then tells its story with its numbers.")
                gr.Markdown("#### The papers' tables, live\nDRL's interaction ablation and UNIFY's branch ablation, "
                            "recomputed on this gallery with every served checkpoint, beside the papers' MSR-VTT numbers.")
                papers_btn = gr.Button("Compute the papers' tables on this gallery")
                papers_fig = gr.Plot(label="Ablations: this gallery vs the papers", elem_id="papers-plot")
                papers_md = gr.Markdown(elem_id="papers-text")
                gr.Markdown("#### Export a figure for slides\nPNG: the camera icon on any figure. HTML (interactive, "
                            "self-contained):")
                with gr.Row(equal_height=True):
                    which = gr.Dropdown(list(EXPORTABLE), value=EXPORTABLE[0], label="Figure")
                    export_btn = gr.Button("Export HTML")
                    export_file = gr.File(label="Download", interactive=False)

        # ------------------------------------------------------------------ wiring
        loaded = [header, examples, video_pick, slice_label, colour_by, lex_col_a, lex_col_b, diff_col]
        gr.on([demo.load, model.change, split.change, load_btn.click, dataset.submit], cb.load, ctx, loaded,
              api_name="load")
        search_out = [results, summary, results_table, order, selected, selected_md]
        gr.on([query.submit], cb.run_search, [query, k, branch, *ctx], search_out, api_name="search", **MODEL_POOL)
        examples.input(lambda c: c, examples, query, api_visibility="private").then(
            cb.run_search, [query, k, branch, *ctx], search_out, api_visibility="private", **MODEL_POOL)
        results.select(cb.open_result, [order, *ctx], [selected, selected_md], api_visibility="private")
        explain_out = [md_a, fig_a, lex_a, md_b, fig_b, lex_b, diff, walkthrough]
        explain_in = [ex_query, ex_video, cmp_query, cmp_video, *ctx]
        open_out = [tabs, ex_query, ex_video, cmp_query, cmp_video]

        def opens(event, fn, inputs):
            event(fn, inputs, open_out, api_visibility="private").success(
                cb.run_explain, explain_in, explain_out, api_visibility="private", **MODEL_POOL)

        opens(explain_btn_search.click, cb.explain_selected, [query, selected, order, *ctx])
        opens(results_table.select, cb.open_table_row, [order, query, *ctx])
        vsearch_btn.click(cb.run_search_video, [video_pick, upload, k, branch, *ctx],
                          [vsummary, vpreview, vtable, vcaptions, vindex], api_name="search_video", **UPLOAD_POOL)
        opens(vtable.select, cb.open_caption_row, [vcaptions, vindex, *ctx])
        explain_btn.click(cb.run_explain, explain_in, explain_out, api_name="explain", **MODEL_POOL)
        ex_query.submit(cb.run_explain, explain_in, explain_out, api_visibility="private", **MODEL_POOL)

        metrics_btn.click(cb.run_metrics, ctx, [metrics_fig, metrics_table], api_name="metrics", **HEAVY_POOL)
        failures_in, failures_out = [direction, fail_branch, sort_by, slice_label, limit, *ctx], [
            failures_table, failures_md, failure_pairs]
        widths = dict(fn=cb.failure_widths, inputs=[failures_table, direction], outputs=failures_table,
                      api_visibility="private")
        failures_btn.click(cb.run_failures, failures_in, failures_out, api_name="failures", **HEAVY_POOL).then(**widths)
        failures_tab.select(cb.run_metrics, ctx, [metrics_fig, metrics_table], api_visibility="private",
                            **HEAVY_POOL).then(
            cb.run_failures, failures_in, failures_out, api_visibility="private", **HEAVY_POOL).then(**widths).then(
            cb.run_slices, [fail_branch, model_b, *ctx], slices_fig, api_visibility="private", **HEAVY_POOL)
        opens(failures_table.select, cb.open_pair_row, [failure_pairs, *ctx])
        slices_btn.click(cb.run_slices, [fail_branch, model_b, *ctx], slices_fig, api_name="slices", **HEAVY_POOL)
        compare_btn.click(cb.run_compare, [model_b, compare_k, *ctx], [compare_fig, compare_table, compare_pairs,
                                                                     compare_md], api_name="compare", **HEAVY_POOL)
        opens(compare_table.select, cb.open_pair_row, [compare_pairs, *ctx])
        blind_btn.click(cb.run_blind_spots, [fail_branch, model_b, *ctx], [blind_fig, confusion_fig, blind_md],
                        api_name="blind_spots", **HEAVY_POOL)
        cf_btn.click(cb.run_counterfactual, [ex_query, ex_video, cf_branch, *ctx], [cf_fig, cf_md],
                     api_name="counterfactual", **MODEL_POOL)
        corr_btn.click(cb.run_correlation, [corr_a, corr_b, dataset, split], [corr_fig, corr_md], api_name="correlation",
                       **HEAVY_POOL)
        papers_btn.click(cb.run_papers, [dataset, split], [papers_fig, papers_md], api_name="paper_tables",
                         **HEAVY_POOL)
        map_btn.click(cb.run_map, [colour_by, n_lines, *ctx], map_fig, api_name="embedding_map", **MAP_POOL)
        opens(bridge.click, cb.open_map_point, ctx)
        opens(map_selected.select, cb.open_selection_row, [map_selected, *ctx])
        bridge.input(cb.map_selection, ctx, map_selected, api_visibility="private")
        figures = [fig_a, fig_b, lex_a, lex_b, diff, metrics_fig, slices_fig, compare_fig, corr_fig, map_fig]
        export_btn.click(cb.export_html, [which, *figures], export_file, api_name="export_html")
    demo.queue(default_concurrency_limit=2, max_size=64)  # beyond 64 waiting events, a request is turned away
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
        if args.dataset:
            session.benchmark()  # a given gallery is checked before serving: bad input exits 2 with its reason
    except TVRError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return_large_blocks_to_the_system()  # a request's tensors leave no fragmented heap behind (tvr_demo/memory.py)
    remove_abandoned_folders()  # exports of servers that were killed before they could remove them
    demo = build_demo(session)
    freeze_startup_objects()  # before any engine: collections at eviction then take milliseconds, not a second
    # gradio refuses larger uploads before they reach a listener; tvr_demo.data.video checks the rest of each upload
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=UPLOAD_MAX_BYTES,
                prevent_thread_lock=True)
    print(f"serving after {time.perf_counter() - start:.1f} s; preparing the gallery (the page shows it loading)",
          file=sys.stderr)
    try:  # after serving: the page opens at once and its first load waits for this build (on a first start the
        # bundled benchmark's test split is generated here, and only that split), not the other way round. Like all
        # whole-split work it runs in a low-priority thread, never the main one: torch arms a SIGCHLD handler when a
        # DataLoader runs in the main thread, and the handler would then stop the server (raising in the main
        # thread) when any later decode worker dies
        low_priority(session.warm)()
    except TVRError as err:
        print(f"error: {err}", file=sys.stderr)
        demo.close()
        return 2
    print(f"ready in {time.perf_counter() - start:.1f} s: {len(session.models)} models on {session.device}",
          file=sys.stderr)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
