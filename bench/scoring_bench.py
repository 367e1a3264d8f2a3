"""Scoring rows: score matrices and single-query latency, each by (a) the official loop, (a') the official loop over
the prepared gallery, (b) the batched einsum and (c) the fused scorer, in the same run on the same features, with the roofline beside each row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.baselines import Prepared, batched, official_loop, official_loop_prepared, prepare
from bench.measure import available_memory_bytes, log, measure, roofline_ms
from bench.synthetic import DIM, FRAMES, TOKENS, world
from bench.tables import VARIANTS
from tvr_demo.kernels import ScoringPath, serving_path, wti_scores
from tvr_demo.kernels.blocks import block_floats, device_memory
from tvr_demo.kernels.geometry import CONFIGS, KernelConfig, regime
from tvr_demo.kernels.wti_torch import wti_scores_torch


@dataclass
class Workload:
    name: str
    n_text: int  # 1 for a single query
    n_video: int
    rows: dict[str, int | None]  # query rows measured per variant (None: all of them; 0: not run)

    @property
    def single(self) -> bool:
        return self.n_text == 1


def workloads(quick: bool) -> list[Workload]:
    """The sizes of the issue; --quick measures fewer rows of the matrices (times are scaled, the row says so)."""
    if quick:
        return [Workload("matrix 1k x 1k", 1000, 1000, {"official_loop": 64, "official_prepared": 64, "batched": 128,
                                                             "fused": 256}),
                Workload("query vs 1e4", 1, 10_000, dict.fromkeys(VARIANTS)),
                Workload("query vs 1e5", 1, 100_000, {"official_loop": 0, "official_prepared": None, "batched": None,
                                                               "fused": None})]
    return [Workload("matrix 1k x 1k", 1000, 1000, dict.fromkeys(VARIANTS)),
            Workload("matrix 10k x 10k", 10_000, 10_000, {"official_loop": 32, "official_prepared": 32, "batched": 64,
                                                                 "fused": 256}),
            Workload("query vs 1e4", 1, 10_000, dict.fromkeys(VARIANTS)),
            Workload("query vs 1e5", 1, 100_000, dict.fromkeys(VARIANTS)),
            Workload("query vs 1e6", 1, 1_000_000, dict.fromkeys(VARIANTS))]


def gpu_workloads() -> list[Workload]:
    """The issue's GPU table, sized for one device call (bench/gpu_check.sh): the official loops skip 1e6 clips (15 s
    and 6 s a call on an H200, measured before) and run on 32 rows of the 10k x 10k matrix."""
    full = dict.fromkeys(VARIANTS)
    return [Workload("matrix 1k x 1k", 1000, 1000, full),
            Workload("matrix 10k x 10k", 10_000, 10_000, {"official_loop": 32, "official_prepared": 32,
                                                                 "batched": 256, "fused": 1024}),
            Workload("query vs 1e4", 1, 10_000, full),
            Workload("query vs 1e5", 1, 100_000, full),
            Workload("query vs 1e6", 1, 1_000_000, {"official_loop": 0, "official_prepared": 0, "batched": None,
                                                             "fused": None})]


def _memory_ok(work: Workload, device: torch.device) -> str | None:
    """None when the gallery fits, else why the row is skipped."""
    gallery = work.n_video * FRAMES * DIM * 4
    need = gallery * 2.3  # unnormalised features (the official loop's input) + the scoring-ready copy + slack
    host = available_memory_bytes()
    if need > host:
        return (f"needs about {need / 2**30:.0f} GB of RAM for the fp32 gallery (two copies of "
                f"{gallery / 2**30:.1f} GB); {host / 2**30:.0f} GB available")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free:
            return f"needs about {need / 2**30:.0f} GB on the GPU, {free / 2**30:.0f} GB free"
    return None


def _top10(scores) -> np.ndarray:
    s = torch.as_tensor(scores)
    return s.topk(min(10, s.shape[-1]), dim=-1).indices.cpu().numpy()


def _fused_prepared(text: Prepared, video: Prepared, block_floats: int | None = None) -> torch.Tensor:
    if block_floats is not None:
        return wti_scores_torch(text.feats, text.mask, text.weights, video.feats, video.mask, video.weights,
                                block_floats)
    return wti_scores(text.feats, text.mask, text.weights, video.feats, video.mask, video.weights)


def kernel_variant(path: ScoringPath, n_text: int) -> KernelConfig | None:
    """The kernel variant for a launch of n_text queries: the one serving it, else the race's fastest (to time the
    kernel where the torch path won), else None (no variant passed the self-check)."""
    config = path.config_for(n_text)
    if config is not None:
        return config
    by_label = {c.label: c for group in CONFIGS.values() for c in group}
    best = [r.best for r in path.race if r.shape.regime == regime(n_text) and r.best]
    return by_label[best[0][0]] if best else None


def _cuda_paths(work: Workload, text: Prepared, gallery: Prepared, device: torch.device, rows: int | None,
                reference: torch.Tensor) -> dict:
    """On CUDA, (c)'s two paths timed apart on the same rows: the Triton kernel's variant and the torch path."""
    from tvr_demo.kernels.wti_triton import wti_scores_triton

    n = work.n_text if rows is None else min(rows, work.n_text)
    t = Prepared(text.feats[:n], text.mask[:n], text.weights[:n])
    args = (t.feats, t.mask, t.weights, gallery.feats, gallery.mask, gallery.weights)
    config = kernel_variant(serving_path(device), n)
    paths = {"torch": lambda: wti_scores_torch(*args)}
    if config is not None:
        paths["triton"] = lambda: wti_scores_triton(*args, config=config)
    out = {}
    for name, fn in paths.items():
        log(f"{work.name} on {device}: fused, the {name} path ({n} of {work.n_text} query rows)")
        timing = measure(fn, device)
        entry = timing.as_dict()
        entry.update({"ms": round(timing.ms * work.n_text / n, 3), "measured_rows": n, "max_abs_diff_vs_fused": float((fn().cpu() - reference[:n]).abs().max())})
        if name == "triton":
            entry["config"] = config.label
        out[name] = entry
    return out


@torch.no_grad()
def run_workload(work: Workload, device: torch.device, machine: dict, seed: int = 0) -> dict:
    why = _memory_ok(work, device)
    if why:
        return {"workload": work.name, "device": str(device), "skipped": why}
    log(f"{work.name} on {device}: features")
    w = world(work.n_video, seed)
    texts = w.generator.queries(work.n_text, seed)
    text_head, video_head = w.text_head.to(device), w.video_head.to(device)
    v_raw, v_mask = w.raw.feats.to(device), w.raw.mask.to(device)
    t_raw, t_mask = texts.feats.to(device), texts.mask.to(device)
    # the encoded gallery: weights and normalisation once, as the engine's cache holds them (not timed for a query)
    gallery = Prepared(w.gallery.feats.to(device), v_mask, w.gallery.weights.to(device))
    prep_ms = 0.0 if work.single else measure(lambda: prepare(v_raw, v_mask, video_head), device, 0.0, 1).ms
    valid_tokens = t_mask.sum(1).double()
    flops = 2.0 * work.n_video * FRAMES * DIM * float(valid_tokens.sum())  # the products that are not zero
    nbytes = 4.0 * (work.n_text * TOKENS * DIM + work.n_video * FRAMES * DIM + work.n_text * work.n_video)
    row = {"workload": work.name, "device": str(device), "n_text": work.n_text, "n_video": work.n_video,
           "tokens": TOKENS, "frames": FRAMES, "dim": DIM, "gflops": round(flops / 1e9, 2),
           "mbytes": round(nbytes / 2**20, 1), "roofline_ms": round(roofline_ms(flops, nbytes, machine), 3),
           "gallery_prepare_ms": round(prep_ms, 1), "variants": {}}
    outputs = {}
    for variant in VARIANTS:
        rows = work.rows[variant]
        if rows == 0:
            row["variants"][variant] = {"skipped": "not run in --quick or the GPU check (seconds per call; the "
                                                       "full suite runs it)"}
            continue
        n = work.n_text if rows is None else min(rows, work.n_text)
        tr, tm = t_raw[:n], t_mask[:n]
        log(f"{work.name} on {device}: {variant} ({n} of {work.n_text} query rows)")
        last: dict = {}

        def run(variant=variant, tr=tr, tm=tm, last=last):
            if variant == "official_loop":
                scores = official_loop(tr, tm, v_raw, v_mask, text_head, video_head)
            elif variant == "official_prepared":
                scores = official_loop_prepared(prepare(tr, tm, text_head), gallery)
            elif variant == "batched":
                scores = batched(prepare(tr, tm, text_head), gallery)
            else:
                scores = _fused_prepared(prepare(tr, tm, text_head), gallery)
            last["scores"] = scores
            return _top10(scores) if work.single else scores  # a search answers with its top 10

        timing = measure(run, device)
        outputs[variant] = torch.as_tensor(last["scores"])
        scale = work.n_text / n
        entry = timing.as_dict()
        entry.update({"measured_rows": n, "ms": round(timing.ms * scale, 3)})
        if scale != 1:
            entry["note"] = f"measured on {n} of {work.n_text} query rows, time scaled by {scale:g}"
        if not work.single:
            if variant != "official_loop":
                entry["ms"] = round(entry["ms"] + prep_ms, 3)  # + the gallery's weights, once
            entry["pairs_per_s"] = round(work.n_text * work.n_video / (entry["ms"] / 1e3))
        row["variants"][variant] = entry
    fused = row["variants"]["fused"]
    for variant in ("official_loop", "official_prepared", "batched"):
        other = row["variants"][variant]
        if "ms" in other:
            row[f"{variant}/fused"] = round(other["ms"] / fused["ms"], 2)
    row["fused_of_roofline"] = round(row["roofline_ms"] / fused["ms"], 3)
    ref = outputs["fused"].float().cpu()
    if device.type == "cuda":
        row["cuda_paths"] = _cuda_paths(work, prepare(t_raw, t_mask, text_head), gallery, device,
                                        work.rows["fused"], ref)
    rows_compared = min(o.shape[0] for o in outputs.values())
    row["max_abs_diff_vs_fused"] = {v: float((o.float().cpu()[:rows_compared] - ref[:rows_compared]).abs().max())
                                    for v, o in outputs.items() if v != "fused"}
    row["same_top10"] = {v: bool((_top10(o.float().cpu()[:rows_compared]) == _top10(ref[:rows_compared])).all())
                         for v, o in outputs.items() if v != "fused"}
    return row


@torch.no_grad()
def block_sweep(device: torch.device, seed: int = 0) -> list[dict]:
    """The fused torch path's block size (cosines per block), for one query vs 1e4 and 256 queries vs 1e4; the
    block the device gets by default (kernels/blocks.py, whose constants this sweep chose) is marked."""
    out = []
    w = world(10_000, seed)
    gallery = Prepared(*(x.to(device) for x in (w.gallery.feats, w.gallery.mask, w.gallery.weights)))
    default = block_floats(device_memory(device))
    powers = (14, 16, 18, 20, 22) + ((23, 24, 25, 26) if device.type == "cuda" else ())
    for name, n_text in (("query vs 1e4", 1), ("matrix 256 x 1e4", 256)):
        texts = w.generator.queries(n_text, seed)
        text = prepare(texts.feats.to(device), texts.mask.to(device), w.text_head.to(device))
        for power in powers:
            t = measure(lambda p=power, t=text: _fused_prepared(t, gallery, 2**p), device)
            out.append({"workload": name, "device": str(device), "block_floats": f"2**{power}",
                        "ms": round(t.ms, 2), "first_ms": round(t.first_ms, 2), "default": 2**power == default})
            log(f"block sweep {name} 2**{power}: {t.ms:.1f} ms")
    return out


def scoring_rows(device: torch.device, machine: dict, quick: bool, works: list[Workload] | None = None
                 ) -> list[dict]:
    rows = []
    for work in works or workloads(quick):
        rows.append(run_workload(work, device, machine))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows

