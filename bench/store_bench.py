"""The feature store at scale: synthetic clips of ViT-B/32 shapes (bench/synthetic.py) written to a memory-mapped
fp16 store and indexed, in one resumable command with progress; then a typed query's latency served from it, its
recall@10 against the exact scan (on a sample of queries), and the serving process's resident memory.

    python -m bench.store_bench --dir /tmp/tvr-store --clips 1000000 --json bench/results/DATE-store.json

The store is written through tvr_demo's own ShardWriter and searched by its TwoStageIndex, as an engine over a
store-backed gallery searches. A killed build resumes at its last committed chunk. Each phase runs in a process of
its own, so the serving one's memory is a server's (the model, the index, the store's pages it maps), not the
build's. The store takes about 12.4 KB a clip on disk (12.4 GB for 1e6): give --dir on a disk with room, never the
repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a module or a script: bench/ is a top-level package beside tvr_demo/

from bench.baselines import prepare  # noqa: E402
from bench.measure import log, machine_info  # noqa: E402
from bench.synthetic import CHUNK, DIM, FRAMES, Generator, weight_heads  # noqa: E402
from tvr_demo.kernels import wti_scores  # noqa: E402
from tvr_demo.models import drl  # noqa: E402
from tvr_demo.retrieval.index import TwoStageIndex  # noqa: E402
from tvr_demo.retrieval.scoring import TextBank, VideoBank, rows_of  # noqa: E402
from tvr_demo.retrieval.shards import Layout, ShardWriter  # noqa: E402
from tvr_demo.retrieval.store import FeatureStore, StoreRows  # noqa: E402

LAYOUT = Layout(FRAMES, DIM)
CANDIDATES = (4000, 8000, 12000, 16000)
EXACT_BLOCK = 16384  # clips scored at a time in the exact scan


def _keys(seed: int, start: int, n: int) -> np.ndarray:
    """Synthetic clips' content keys (a real store's are the files' sha256)."""
    return np.stack([np.frombuffer(hashlib.sha256(f"synthetic:{seed}:{i}".encode()).digest(), np.uint8)
                     for i in range(start, start + n)])


def _chunk_generator(seed: int, chunk: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + chunk)


def build(directory: Path, clips: int, seed: int, fresh_index: bool = False) -> dict:
    """The store of `clips` synthetic clips and its two-stage index; what is on disk already is kept (the index too,
    unless `fresh_index`: then its build is timed again)."""
    store_dir, own_path = directory / "store", directory / "own_topics.npy"
    world, (_, video_head) = Generator(seed), weight_heads(DIM, seed)
    store = FeatureStore(store_dir, LAYOUT)
    own = np.lib.format.open_memmap(own_path, mode="r+" if own_path.exists() else "w+", dtype=np.float16,
                                    shape=(clips, DIM))
    writer = ShardWriter(store_dir, LAYOUT)
    start_s, written = time.perf_counter(), 0
    with tqdm(total=clips, desc="writing synthetic clips", unit="clip", file=sys.stderr) as bar:
        for chunk, start in enumerate(range(0, clips, CHUNK)):
            n = min(CHUNK, clips - start)
            keys = _keys(seed, start, n)
            if (store.locate(keys) >= 0).all():  # committed by an earlier, interrupted run
                bar.update(n)
                continue
            with torch.no_grad():
                raw, topics = world.draw_videos(_chunk_generator(seed, chunk), n)
                ready = prepare(raw.feats, raw.mask, video_head)
                bank = VideoBank(ready.feats, ready.mask, ready.weights,
                                 drl.mean_pooled_frames(raw.feats, raw.mask), None)
            own[start:start + n] = topics.numpy()
            own.flush()
            writer.append(keys, np.ones(n, dtype=bool), bank, {})
            written += n
            bar.update(n)
    writer.close()
    write_s = time.perf_counter() - start_s
    store.refresh()
    log(f"store: {len(store):,} clips ({written:,} written now) in {write_s:.0f} s; building the index")
    if fresh_index:
        (directory / "index.faiss").unlink(missing_ok=True)
    start_s = time.perf_counter()
    index = TwoStageIndex(StoreRows(store, store.locations()), "wti", path=directory / "index.faiss", progress=True)
    return {"clips": len(store), "written_now": written, "write_s": round(write_s, 1),
            "index_s": round(time.perf_counter() - start_s, 1), "index": index.kind, "index_built_now": fresh_index,
            "store_bytes": sum(f.stat().st_blocks * 512 for f in store_dir.rglob("*") if f.is_file())}


def _queries(directory: Path, n: int, seed: int) -> TextBank:
    """n synthetic captions of the store's clips, scoring-ready (weights of the random text head, normalised)."""
    world, (text_head, _) = Generator(seed), weight_heads(DIM, seed)
    # mapped copy-on-write: only the rows of the queries' targets are read
    world.video_topic = torch.from_numpy(np.load(directory / "own_topics.npy", mmap_mode="c"))
    raw = world.queries(n, seed + 1)
    ready = prepare(raw.feats, raw.mask, text_head)
    eot = drl.l2_normalize(drl.eot_features(raw.feats, raw.mask))
    world.video_topic = None
    return TextBank(ready.feats, ready.mask, ready.weights, eot, torch.zeros_like(ready.mask), None)


def _store_digest(store_dir: Path) -> str:
    """The store's contents as its shards' commit records name them (each chunk's sha256): an exact scan is reused
    only over the same store."""
    h = hashlib.sha256()
    for committed in sorted(store_dir.glob("shard-*/committed.json")):
        h.update(committed.parent.name.encode() + committed.read_bytes())
    return h.hexdigest()


def _query(bank: TextBank, i: int) -> TextBank:
    return TextBank(*(None if v is None else v[i:i + 1] for v in bank.__dict__.values()))


def _memory() -> dict:
    """This process's resident memory (MB): all of it, its own (anonymous) pages, mapped file pages, and the peak."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


def _page_cached(paths: list[Path]) -> float | None:
    """The share of these files' bytes in the page cache (util-linux fincore), None where it cannot be read: a
    re-rank reads its candidates' frames from there or, for the rest, from the disk."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", *map(str, paths)],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    res, size = np.array([line.split() for line in out.splitlines()], dtype=np.int64).sum(0)
    return round(float(res / max(size, 1)), 3)


@torch.no_grad()
def serve(directory: Path, n_queries: int, seed: int) -> dict:
    """A server's view: the ViT-B/32 model (random weights) to encode typed text, the index, the memory-mapped store;
    per query the text encoding, then the two-stage search of a synthetic query, at each candidate count."""
    from tvr_demo.models import ModelConfig, TVRModel
    from tvr_demo.models.backbone import clip_config
    from tvr_demo.retrieval.scoring import encode_texts

    at_start = _memory()
    cached = _page_cached(sorted((directory / "store").glob("shard-*/frames.npy")))
    model = TVRModel(ModelConfig(clip=clip_config("ViT-B-32"))).eval()
    store = FeatureStore(directory / "store")
    index = TwoStageIndex(StoreRows(store, store.locations()), "wti", path=directory / "index.faiss")
    texts = _queries(directory, n_queries, seed)
    loaded = _memory()
    captions = [f"a person is cooking food number {i} in a kitchen" for i in range(n_queries)]
    encode_texts(model, captions[:1])  # warm: the tokenizer and the first call's allocations
    encode_ms = []
    for caption in captions:
        t0 = time.perf_counter()
        encode_texts(model, [caption])
        encode_ms.append((time.perf_counter() - t0) * 1e3)
    rows, tops = [], {}
    for count in CANDIDATES:
        first, second, top = [], [], []
        for i in range(n_queries):
            q = _query(texts, i)
            t0 = time.perf_counter()
            cands = index.candidates(q, count)
            t1 = time.perf_counter()
            scores = index.rerank(q, cands)[0].numpy()
            order = np.argsort(-scores, kind="stable")[:10]
            t2 = time.perf_counter()
            first.append((t1 - t0) * 1e3)
            second.append((t2 - t1) * 1e3)
            top.append(cands[0][order].tolist())
        total = [a + b + c for a, b, c in zip(first, second, encode_ms, strict=True)]
        tops[count] = top
        rows.append({"candidates": count, "first_stage_ms_p50": round(statistics.median(first), 1),
                     "rerank_ms_p50": round(statistics.median(second), 1),
                     "search_ms_p50": round(statistics.median(a + b for a, b in zip(first, second, strict=True)), 1),
                     "typed_query_ms_p50": round(statistics.median(total), 1),
                     "typed_query_ms_p90": round(float(np.percentile(total, 90)), 1),
                     "memory_mb": _memory()})
        log(f"serve C={count}: search p50 {rows[-1]['search_ms_p50']} ms, typed query p50 "
            f"{rows[-1]['typed_query_ms_p50']} ms, memory {rows[-1]['memory_mb']}")
    parts = getattr(index.index, "parts", [index.index])
    return {"queries": n_queries, "index": index.kind, "first_stage_threads": len(parts),
            "frames_page_cached_at_start": cached,
            "text_encode_ms_p50": round(statistics.median(encode_ms), 1), "memory_mb_at_start": at_start,
            "memory_mb_loaded": loaded, "rows": rows, "tops": tops}


@torch.no_grad()
def exact(directory: Path, n_queries: int, seed: int, checked: int) -> dict:
    """The exact top 10 of the first `checked` of the served queries: every clip of the store scored by the fused
    scorer, block by block from the memory map, all those queries at once."""
    store = FeatureStore(directory / "store")
    texts = rows_of(_queries(directory, n_queries, seed), slice(0, checked))
    drawn, n_queries = n_queries, checked
    locations = store.locations()
    best_scores = torch.full((n_queries, 10), -np.inf)
    best_ids = torch.zeros((n_queries, 10), dtype=torch.int64)
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(locations), EXACT_BLOCK), desc="exact scan", unit="block", file=sys.stderr):
        block = store.bank(locations[start:start + EXACT_BLOCK], torch.float16)
        store.release()
        scores = wti_scores(texts.tokens, texts.mask, texts.weights, block.frames, block.mask, block.weights)
        merged = torch.cat([best_scores, scores], 1)
        ids = torch.cat([best_ids, torch.arange(start, start + scores.shape[1]).expand(n_queries, -1)], 1)
        best_scores, pick = merged.topk(10, dim=1)  # ties: the earlier clip first, as a stable sort orders them
        best_ids = ids.gather(1, pick)
    seconds = time.perf_counter() - t0
    return {"queries": n_queries, "drawn": drawn, "seed": seed, "store": _store_digest(directory / "store"),
            "seconds": round(seconds, 1),
            "seconds_per_query": round(seconds / n_queries, 2), "load_average": list(os.getloadavg()),
            "tops": best_ids.tolist()}


def _phase(phase: str, args: argparse.Namespace) -> dict:
    """Run one phase in a fresh process (its memory is its own) and read back its JSON."""
    out = args.dir / f"{phase}.json"
    command = [sys.executable, "-m", "bench.store_bench", "--phase", phase, "--dir", str(args.dir),
               "--queries", str(args.queries), "--exact-queries", str(args.exact_queries), "--seed", str(args.seed),
               "--phase-out", str(out)]
    subprocess.run(command, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def _exact_done(args: argparse.Namespace) -> dict | None:
    """An exact scan already run for these queries over this store (it takes minutes and its answer does not
    change): kept beside the store, in exact.json."""
    try:
        done = json.loads((args.dir / "exact.json").read_text())
    except (OSError, ValueError):
        return None
    same = (done.get("drawn"), done.get("seed"), done.get("queries"), done.get("store")) == (
        args.queries, args.seed, args.exact_queries, _store_digest(args.dir / "store"))
    return done if same else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the store goes (about 12.4 KB a clip)")
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200, help="typed queries timed by the serving process")
    parser.add_argument("--exact-queries", type=int, default=100, help="of those, how many the exact scan checks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the result here")
    parser.add_argument("--fresh-index", action="store_true", help="build the index again even if it is on disk")
    parser.add_argument("--build-only", action="store_true", help="write the store and its index, measure nothing")
    parser.add_argument("--phase", choices=("serve", "exact"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "serve":
        args.phase_out.write_text(json.dumps(serve(args.dir, args.queries, args.seed)))
        return 0
    if args.phase == "exact":
        args.phase_out.write_text(json.dumps(exact(args.dir, args.queries, args.seed, args.exact_queries)))
        return 0
    from bench.run import provenance

    args.dir.mkdir(parents=True, exist_ok=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **provenance(),
              "machine": machine_info(torch.device("cpu")), "load_average_start": list(os.getloadavg())}
    result["build"] = build(args.dir, args.clips, args.seed, args.fresh_index)
    if args.build_only:
        print(json.dumps(result["build"]))
        return 0
    served = _phase("serve", args)
    checked = _exact_done(args)
    checked = {**checked, "reused": True} if checked else _phase("exact", args)
    for row in served["rows"]:
        got = served["tops"][str(row["candidates"])][:args.exact_queries]
        row["recall_at_10_vs_exact"] = round(float(np.mean(
            [len(set(g) & set(e)) / 10 for g, e in zip(got, checked["tops"], strict=True)])), 4)
    del served["tops"], checked["tops"]
    result |= {"serve": served, "exact": checked, "load_average_end": list(os.getloadavg())}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"store": result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
