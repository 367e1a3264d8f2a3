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

from tvr_demo import UPLOAD_MAX_BYTES
from tvr_demo.errors import TVRError
from tvr_demo.memory import freeze_startup_objects, return_large_blocks_to_the_system
from tvr_demo.ui.background import low_priority
from tvr_demo.ui.channels_tab import ChannelsTab
from tvr_demo.ui.explain_tab import ExplainTab
from tvr_demo.ui.exports import remove_abandoned_folders
from tvr_demo.ui.failures_tab import FailuresTab
from tvr_demo.ui.gpu import on_zero_gpu
from tvr_demo.ui.map_tab import MapTab
from tvr_demo.ui.page import Page
from tvr_demo.ui.search_tab import SearchTab
from tvr_demo.ui.session import Session
from tvr_demo.ui.walkthrough_tab import WalkthroughTab

TABS = (SearchTab, ExplainTab, FailuresTab, ChannelsTab, MapTab, WalkthroughTab)  # in the page's order
DELETE_CACHE = (600, 3600)  # gradio's copies of uploads and exports are deleted after an hour, checked every 10 min
QUEUE_MAX = 64  # waiting events beyond this are turned away


def build_demo(session: Session) -> gr.Blocks:
    """The page: each tab lays itself out, then wires its own listeners (tvr_demo/ui/*_tab.py)."""
    page = Page(session, [tab(session) for tab in TABS])
    with gr.Blocks(title="TVR demo: DRL and UNIFY", delete_cache=DELETE_CACHE) as demo:
        page.layout()
        page.wire(demo)
    demo.queue(default_concurrency_limit=2, max_size=QUEUE_MAX)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the TVR demo (DRL and UNIFY) as a Gradio app.")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="registry name, our checkpoint folder, or an official DRL file; repeat or comma-separate "
                        "(default: every bundled checkpoint)")
    p.add_argument("--dataset", default=None, help="a folder of clips (subfolders are slices; an optional "
                                                   "captions.csv gives ground truth) or a benchmark folder (default: "
                                                   "the bundled synthetic benchmark, generated on first start)")
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
    # gradio refuses larger uploads before they reach a listener; tvr_demo.data.video checks the rest of each upload.
    # It shows files from the working and temp folders only, unless allowed: the galleries' clips lie in data_roots
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=UPLOAD_MAX_BYTES,
                allowed_paths=[str(root) for root in session.data_roots], prevent_thread_lock=True)
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
