"""Command-line interface: `python -m tvr_demo <command>`; heavy modules load inside each command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tvr_demo.errors import TVRError


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def _cmd_frames(args: argparse.Namespace) -> int:
    from tvr_demo.data.video import FrameSampling, sample_video

    sampled = sample_video(Path(args.video), FrameSampling(max_frames=args.max_frames, framerate=args.framerate,
                                                          start_s=args.start, end_s=args.end))
    print(json.dumps(sampled.as_json()))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from tvr_demo.data.synthetic import SyntheticConfig, generate

    config = SyntheticConfig(seed=args.seed, n_train=args.n_train, n_test=args.n_test, n_val=args.n_val)
    out = generate(Path(args.out), config)
    print(json.dumps({"out": str(out)}))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from tvr_demo.retrieval.scoring import score_files

    captions = [line.strip() for line in Path(args.captions).read_text(encoding="utf-8").splitlines() if line.strip()]
    sim = score_files(args.checkpoint, captions, [Path(v) for v in args.videos], device=args.device,
                      interaction=args.interaction, batch_size=args.batch_size, num_workers=args.workers)
    import numpy as np

    np.save(args.out, sim)
    print(json.dumps({"out": args.out, "shape": list(sim.shape)}))
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    """Under torchrun each rank encodes a share of the clips into shards of its own; every rank then reads them all
    (tvr_demo.retrieval.gallery). A gallery above the engine's two-stage threshold also gets its index on disk."""
    import os

    from tvr_demo.retrieval.engine import Engine

    device, rank = args.device, 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
        rank = dist.get_rank()
        if torch.cuda.is_available() and device != "cpu":
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    engine = Engine.from_names(args.checkpoint, args.dataset, args.split, device=device, progress=True)
    index = None
    if rank == 0 and not engine.is_unify and engine.gallery_size > engine.two_stage_above:
        index = engine.two_stage_index.kind  # built now and kept beside the store: the app starts without it
    if rank == 0:
        print(json.dumps({"cache": str(engine.cache_path), "videos": engine.gallery_size,
                          "encoded": engine.coverage.encoded - len(engine.skipped), "captions": engine.num_captions,
                          "skipped": engine.skipped, "index": index}))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tvr_demo.retrieval.engine import Engine

    engine = Engine.from_names(args.checkpoint, args.dataset, args.split, device=args.device, progress=True)
    result = engine.analysis.evaluate(dsl=args.dsl).to_json()
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def _search_video(engine, video: str) -> int | Path:
    """--video: a gallery video by id (its path inside a folder gallery) or a clip file; a file inside the gallery is
    that gallery video (left out of its own ranking)."""
    from tvr_demo.errors import QueryError

    if video in engine.bench.video_ids:
        return engine.bench.video_index(video)
    path = Path(video).expanduser()
    if not path.is_file():
        raise QueryError(f"--video {video!r} is neither a video of the gallery nor a file")
    resolved = path.resolve()
    same = [i for i, p in enumerate(engine.bench.video_paths) if p.resolve() == resolved]
    return same[0] if same else path


def _cmd_search(args: argparse.Namespace) -> int:
    """Text -> video (the model's own score) or video -> video (pooled cosine); prints the top k and, for a caption of
    the gallery, where its ground truth ranked."""
    import math

    from tvr_demo.errors import QueryError
    from tvr_demo.retrieval.engine import Engine
    from tvr_demo.ui.labels import score_kind

    if (args.query is None) == (args.video is None):
        raise QueryError("give a text query or --video CLIP, not both and not neither")
    engine = Engine.from_names(args.checkpoint, args.dataset, args.split, device=args.device, progress=True)
    bench = engine.bench
    if args.video is None:
        result = engine.search_text(args.query, k=args.k, branch=args.branch)
    else:
        result = engine.search_similar(_search_video(engine, args.video), k=args.k)
    score = score_kind(engine.config, result.branch)
    hits = [{"rank": h.rank + 1, "path": bench.relative_path(bench.video_paths[h.index]), "score": round(h.score, 6),
             "ground_truth": h.is_ground_truth} for h in result.hits if math.isfinite(h.score)]
    truth = [bench.relative_path(bench.video_paths[g]) for g in result.ground_truth]
    rank = None if result.ground_truth_rank is None else result.ground_truth_rank + 1
    if args.json:
        print(json.dumps({"query": args.query if args.video is None else args.video, "score": score, "hits": hits,
                          "ground_truth": truth, "ground_truth_rank": rank, "videos": engine.gallery_size,
                          "skipped": [{"path": f, "reason": r} for f, r in engine.skipped]}, indent=2))
        return 0
    print(f"{'rank':>4}  {'score':>9}  path   ({score})")
    for h in hits:
        print(f"{h['rank']:>4}  {h['score']:>9.4f}  {h['path']}" + ("   <- ground truth" if h["ground_truth"] else ""))
    if truth:
        print(f"ground truth {', '.join(truth)}: rank {rank} of {engine.gallery_size}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from tvr_demo.training.train import train_from_args

    train_from_args(args)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    """The suite lives beside the package (bench/, in a source checkout), never inside it: run it as its own program."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "__main__.py").is_file():
        raise TVRError("the benchmark suite ships with the source checkout only (bench/ beside tvr_demo/)")
    command = [sys.executable, "-m", "bench"] + (["--quick"] if args.quick else [])
    if args.json:
        command += ["--json", str(Path(args.json).resolve())]
    return subprocess.run(command, cwd=root).returncode


def _cmd_checkpoints(args: argparse.Namespace) -> int:
    from tvr_demo.models.checkpoints import list_checkpoints

    entries = list_checkpoints()
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        for e in entries:
            metrics = e.get("metrics", {}).get("t2v", {})
            r1 = f"R@1 {metrics['R@1']:.1f}" if "R@1" in metrics else ""
            print(f"{e['name']:<16} {e['source']:<8} {e.get('description', '')}  {r1}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tvr_demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("frames", help="print the frames the model sees in VIDEO as JSON")
    p.add_argument("video")
    p.add_argument("--max-frames", type=int, default=12, help="DRL: 12")
    p.add_argument("--framerate", type=float, default=1.0, help="frames sampled per second (DRL: 1)")
    p.add_argument("--start", type=float, default=None, help="start second")
    p.add_argument("--end", type=float, default=None, help="end second")
    p.set_defaults(func=_cmd_frames)

    p = sub.add_parser("generate", help="write the synthetic benchmark in MSR-VTT's layout")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=200)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("score", help="caption x video similarity matrix to .npy")
    p.add_argument("--checkpoint", required=True, help="registry name, our checkpoint dir, or official pytorch_model.bin[.N]")
    p.add_argument("--captions", required=True, help="text file, one caption per line")
    p.add_argument("--videos", required=True, nargs="+", help="video files (columns in this order) or one folder")
    p.add_argument("--out", required=True)
    p.add_argument("--interaction", choices=["wti", "ti", "dp"], default=None, help="override the checkpoint's")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None,
                   help="video decode processes (default: one per core, bounded by free memory)")
    _add_device(p)
    p.set_defaults(func=_cmd_score)

    for name, func, helptext in [("encode", _cmd_encode, "encode a benchmark split or a folder of clips into the "
                                                         "feature store"),
                                 ("evaluate", _cmd_evaluate, "retrieval metrics as JSON")]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--dataset", default=None, help="benchmark folder or folder of clips (default: the bundled "
                                                       "synthetic benchmark)")
        p.add_argument("--split", default="test", help="benchmark split (a folder of clips has one)")
        _add_device(p)
        if name == "evaluate":
            p.add_argument("--json", default=None, help="also write the metrics here")
            p.add_argument("--dsl", action="store_true", help="also report dual-softmax (DSL) re-scored metrics")
        p.set_defaults(func=func)

    p = sub.add_parser("search", help="the top k videos for a text query, or for a clip (--video)")
    p.add_argument("query", nargs="?", default=None, help="what to look for, e.g. \"a dog jumps\"")
    p.add_argument("--video", default=None, metavar="CLIP",
                   help="search by a clip instead: a gallery video's id (its path inside a folder) or a video file; "
                        "ranked by the cosine of the pooled video features")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default=None, help="folder of clips (with an optional captions.csv) or benchmark "
                                                   "folder (default: the bundled synthetic benchmark)")
    p.add_argument("--split", default="test", help="benchmark split (a folder of clips has one)")
    p.add_argument("--k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--branch", choices=["latent", "lexicon", "fused"], default=None,
                   help="UNIFY's ranking branch (default: fused)")
    p.add_argument("--json", action="store_true", help="print JSON: hits (rank, path, score), the ground truth and "
                                                       "its rank, skipped files")
    _add_device(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("train", help="train a configuration (runs under torchrun unchanged)")
    p.add_argument("--config", required=True, help="a training config name or JSON file")
    p.add_argument("--dataset", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None,
                   help="the global batch, all processes together (default: the config's)")
    p.add_argument("--clip-weights", default=None, metavar="PATH",
                   help="start CLIP from these weights, as DRL does: an OpenAI JIT archive (ViT-B-32.pt), an "
                        "open_clip state dict, or the towers of one of our checkpoints (its model.safetensors); the "
                        "architecture must match the config's (default: the config's clip_from checkpoint, else "
                        "random init)")
    _add_device(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("bench", help="run the benchmark suite and print its table")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("checkpoints", help="list bundled and user checkpoints")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_checkpoints)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "device", None):
            from tvr_demo.devices import default_device

            default_device(args.device)  # a device this machine lacks fails here, before anything loads
        return args.func(args)
    except TVRError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
