"""Search rows: two-stage search (faiss + exact re-ranking) against exact search on synthetic 10k / 100k galleries,
and end-to-end typed-query latency of the engine on the bundled gallery (text encoding included)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.baselines import prepare
from bench.measure import log
from bench.synthetic import world
from tvr_demo.kernels import wti_scores
from tvr_demo.models import drl
from tvr_demo.retrieval.index import TwoStageConfig, TwoStageIndex
from tvr_demo.retrieval.queries import clean_query
from tvr_demo.retrieval.scoring import TextBank, VideoBank, encode_texts


class _Clock:
    """`with _Clock() as c:` ... then c.ms."""

    def __enter__(self) -> _Clock:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.ms = (time.perf_counter() - self.t0) * 1e3


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return len(set(a.tolist()) & set(b.tolist())) / len(b)


@torch.no_grad()
def synthetic_banks(n_videos: int, n_queries: int, seed: int = 0) -> tuple[TextBank, VideoBank]:
    """The shared synthetic gallery (bench.synthetic.world) as the engine's banks, and a fresh set of queries."""
    w = world(n_videos, seed)
    queries = w.generator.queries(n_queries, seed + 1)
    text = prepare(queries.feats, queries.mask, w.text_head)
    eot = drl.l2_normalize(drl.eot_features(queries.feats, queries.mask))
    return (TextBank(text.feats, text.mask, text.weights, eot, torch.zeros_like(text.mask), None),
            VideoBank(w.gallery.feats, w.gallery.mask, w.gallery.weights, w.pooled, None))


def _query(bank: TextBank, i: int) -> TextBank:
    return TextBank(*(None if v is None else v[i:i + 1] for v in bank.__dict__.values()))


def two_stage_rows(quick: bool) -> list[dict]:
    rows = []
    sizes = ((10_000, 30), (100_000, 10)) if quick else ((10_000, 100), (100_000, 100))
    for n, n_queries in sizes:
        log(f"two-stage {n} clips: exact top 10 of {n_queries} queries")
        texts, videos = synthetic_banks(n, n_queries)
        exact_ms, exact_top = [], []
        for i in range(n_queries):
            q = _query(texts, i)
            with _Clock() as clock:
                top = wti_scores(q.tokens, q.mask, q.weights, videos.frames, videos.mask, videos.weights)[0].topk(10)
            exact_ms.append(clock.ms)
            exact_top.append(top.indices.numpy())
        configs = [TwoStageConfig()]
        if n >= 100_000 and not quick:
            configs.append(TwoStageConfig(flat_max=0))  # force the 8-bit first stage, for comparison
        candidates = ((1000,) if n < 100_000 else (1000, 8000)) if quick else (500, 1000, 2000, 4000, 8000)
        for config in configs:
            with _Clock() as build:
                index = TwoStageIndex(videos, "wti", config=config)
            for c in candidates:
                first, second, total, recall = [], [], [], []
                for i in range(n_queries):
                    q = _query(texts, i)
                    with _Clock() as t_first:
                        cands = index.candidates(q, c)
                    with _Clock() as t_second:
                        scores = index.rerank(q, cands)
                    top = cands[0][np.argsort(-scores[0].numpy(), kind="stable")[:10]]
                    first.append(t_first.ms)
                    second.append(t_second.ms)
                    total.append(t_first.ms + t_second.ms)
                    recall.append(_overlap(top, exact_top[i]))
                rows.append({"gallery": n, "queries": n_queries, "index": index.kind, "candidates": c,
                             "build_ms": round(build.ms, 1), "recall_at_10_vs_exact": round(float(np.mean(recall)), 4),
                             "first_stage_ms": round(statistics.median(first), 2),
                             "rerank_ms": round(statistics.median(second), 2),
                             "total_ms_p50": round(statistics.median(total), 2),
                             "total_ms_p90": round(float(np.percentile(total, 90)), 2),
                             "exact_ms_p50": round(statistics.median(exact_ms), 2)})
                log(f"two-stage {n} {index.kind} C={c}: recall {rows[-1]['recall_at_10_vs_exact']}, "
                     f"{rows[-1]['total_ms_p50']} ms (exact {rows[-1]['exact_ms_p50']} ms)")
        del texts, videos
    return rows


def _bundled_checkpoint(tmp: Path):
    """The first DRL entry of checkpoints/registry.json, else a seeded random tvr-tiny saved to tmp (its weights
    hash the same every run, so the gallery cache is reused)."""
    from tvr_demo.models import ModelConfig, TVRModel
    from tvr_demo.models.backbone import clip_config
    from tvr_demo.models.checkpoints import bundled_registry, load_checkpoint, save_checkpoint

    for name in bundled_registry():
        checkpoint = load_checkpoint(name, "cpu")
        if checkpoint.config.unify is None:
            return checkpoint, f"bundled {name}"
    torch.manual_seed(0)
    model = TVRModel(ModelConfig(clip_name="tvr-tiny", clip=clip_config("tvr-tiny"))).eval()
    return load_checkpoint(save_checkpoint(model, tmp / "tvr-tiny-random"), "cpu"), "tvr-tiny, random weights"


def engine_rows(quick: bool) -> tuple[list[dict], list[dict]]:
    """Typed-query latency through Engine.search_text on the bundled test split, and the two-stage recall there."""
    from tvr_demo.data import load_benchmark
    from tvr_demo.paths import default_dataset_dir
    from tvr_demo.retrieval.engine import Engine

    dataset = default_dataset_dir()
    if not (dataset / "MSRVTT_JSFUSION_test.csv").is_file():
        return [], [{"row": "engine on the bundled gallery",
                     "reason": f"no bundled benchmark at {dataset}; run `python -m tvr_demo generate --out {dataset}`"}]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, label = _bundled_checkpoint(Path(tmp))
        bench = load_benchmark(dataset, "test")
        log(f"engine: {label} on {bench.num_videos} clips (encoded once, then read from the cache)")
        with _Clock() as t_open:
            engine = Engine(checkpoint, bench, progress=True)
        n_queries = 20 if quick else 100
        queries = [f"{c} in a short clip" for c in bench.captions[:n_queries]]  # typed, not benchmark captions
        rows = []
        default_threads = torch.get_num_threads()
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            for mode in ("exact", "two_stage"):
                engine.search_text(queries[0], mode=mode)  # warm: first call builds the index / tokenizer
                times, encode = [], []
                for q in queries:
                    with _Clock() as clock:
                        engine.search_text(q, k=10, mode=mode)
                    times.append(clock.ms)
                for q in queries[:10]:
                    with _Clock() as clock:
                        encode_texts(engine.model, [clean_query(q, engine.config.max_words).text])
                    encode.append(clock.ms)
                rows.append({"gallery": f"bundled test split ({engine.gallery_size} clips)", "checkpoint": label,
                             "mode": mode, "threads": threads, "queries": len(queries),
                             "p50_ms": round(statistics.median(times), 2),
                             "p90_ms": round(float(np.percentile(times, 90)), 2),
                             "text_encode_p50_ms": round(statistics.median(encode), 2),
                             "open_engine_s": round(t_open.ms / 1e3, 1)})
                log(f"engine {mode} threads={threads}: p50 {rows[-1]['p50_ms']} ms")
        torch.set_num_threads(default_threads)
        exact = engine.matrices["latent"]
        texts = engine.gallery.texts
        for c in (50, 100, 200):
            index = TwoStageIndex(engine.gallery.videos, engine.config.latent_interaction, engine.gallery.decoded_ok,
                                  TwoStageConfig(candidates=c))
            got = index.row_scores(texts, 10)
            recall = [_overlap(np.argsort(-g, kind="stable")[:10], np.argsort(-e, kind="stable")[:10])
                      for g, e in zip(got, exact, strict=True)]
            rows.append({"gallery": f"bundled test split ({engine.gallery_size} clips)", "checkpoint": label,
                         "mode": "two_stage recall", "candidates": c, "queries": len(texts.mask),
                         "recall_at_10_vs_exact": round(float(np.mean(recall)), 4)})
    return rows, []

