"""`python -m tvr_demo bench`: run the suite on the CPU (and on CUDA when present), print its tables, write JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from bench.encode_bench import encode_rows
from bench.measure import log, machine_info
from bench.scoring_bench import VARIANTS, block_sweep, scoring_rows
from bench.search_bench import engine_rows, two_stage_rows
from bench.threads_bench import threads_rows
from tvr_demo.kernels import serving_path

SHORT = {"official_loop": "(a) official", "batched": "(b) batched", "fused": "(c) fused"}


def run_suite(quick: bool = False, json_out: str | None = None) -> dict:
    """Every section on every device; --quick measures fewer rows and sizes (under two minutes on a 2-core CPU)."""
    start = time.perf_counter()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    result: dict = {"quick": quick, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machines": {}, "scoring_path": {},
                    "scoring": [], "block_sweep": [], "two_stage": [], "engine": [], "threads": [], "encode": [], "skipped": []}
    if not torch.cuda.is_available():
        result["skipped"].append({"row": "every cuda row (Triton kernel included)", "reason": "no CUDA device"})
    with torch.no_grad():
        for device in devices:
            machine = machine_info(device)
            result["machines"][str(device)] = machine
            serving_path(device)  # on CUDA: the Triton kernel's self-check, before any row is timed
            for row in scoring_rows(device, machine, quick):
                if "skipped" in row:
                    result["skipped"].append({"row": f"{row['workload']} on {row['device']}",
                                              "reason": row["skipped"]})
                else:
                    result["scoring"].append(row)
            path = serving_path(device)  # after the rows: a kernel that failed on one of them is reported
            result["scoring_path"][str(device)] = {"path": path.name, "reason": path.reason}
            if not quick:
                result["block_sweep"] += block_sweep(device)
            rows, skipped = encode_rows(device, quick)
            result["encode"] += rows
            result["skipped"] += skipped
        result["two_stage"] = two_stage_rows(quick)
    rows, skipped = engine_rows(quick)
    result["engine"], result["skipped"] = rows, result["skipped"] + skipped
    if not quick:
        result["threads"] = threads_rows()
    result["elapsed_s"] = round(time.perf_counter() - start, 1)
    print(format_tables(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {json_out}")
    return result


def _fmt(x, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def format_tables(result: dict) -> str:
    """The suite's results as markdown tables (what bench/README.md shows)."""
    out = []
    for name, m in result["machines"].items():
        out.append(f"{name}: {m['name']}, {m['threads']} threads (OMP_WAIT_POLICY {m['omp_wait_policy']}), "
                   f"load average {m['load_average_1m']:.1f}, "
                   f"measured fp32 matmul {m['peak_gflops_fp32']} GFLOP/s, read {m['read_gbs']} GB/s")
    for name, p in result.get("scoring_path", {}).items():
        out.append(f"{name}: the fused scorer (c) runs the {p['path']} path ({p['reason']})")
    if result["scoring"]:
        rows = []
        for r in result["scoring"]:
            v = r["variants"]
            ms = [v[k].get("ms") for k in VARIANTS]
            peaks = "/".join(_fmt(v[k].get("peak_mb"), 0) for k in VARIANTS)
            rows.append([r["workload"], r["device"], *ms, r.get("official_loop/fused"), r.get("batched/fused"),
                         r["roofline_ms"], f"{100 * r['fused_of_roofline']:.1f}%", r["gflops"], r["mbytes"], peaks])
        out.append("\nScoring (ms; matrix rows measured on part of the rows are scaled, see JSON notes)\n" + _table(
            ["workload", "device", *[SHORT[k] for k in VARIANTS], "a/c", "b/c", "roofline", "c of roofline",
             "GFLOP", "MB", "peak MB a/b/c"], rows))
    if result["block_sweep"]:
        out.append("\nFused torch path, cosines per block\n" + _table(
            ["workload", "block floats", "ms"], [[r["workload"], r["block_floats"], r["ms"]]
                                                for r in result["block_sweep"]]))
    if result["two_stage"]:
        out.append("\nTwo-stage search vs exact (synthetic galleries)\n" + _table(
            ["gallery", "index", "C", "queries", "recall@10", "first ms", "rerank ms", "total p50", "total p90",
             "exact p50"],
            [[r["gallery"], r["index"], r["candidates"], r["queries"], f"{r['recall_at_10_vs_exact']:.3f}",
              r["first_stage_ms"], r["rerank_ms"], r["total_ms_p50"], r["total_ms_p90"], r["exact_ms_p50"]]
             for r in result["two_stage"]]))
    if result["engine"]:
        lat = [r for r in result["engine"] if "p50_ms" in r]
        rec = [r for r in result["engine"] if "recall_at_10_vs_exact" in r]
        out.append("\nEngine.search_text, typed queries, text encoding included\n" + _table(
            ["gallery", "checkpoint", "mode", "threads", "p50 ms", "p90 ms", "text encode ms"],
            [[r["gallery"], r["checkpoint"], r["mode"], r["threads"], r["p50_ms"], r["p90_ms"],
              r["text_encode_p50_ms"]] for r in lat]))
        if rec:
            out.append(_table(["gallery", "checkpoint", "C", "queries", "two-stage recall@10 vs exact"],
                              [[r["gallery"], r["checkpoint"], r["candidates"], r["queries"],
                                f"{r['recall_at_10_vs_exact']:.3f}"] for r in rec]))
    if result["threads"]:
        ok = [r for r in result["threads"] if "fused" in r]
        out.append("\nOpenMP settings (child processes; one query vs 1,000 clips of ViT-B/32 shapes)\n" + _table(
            ["setting", "threads", "(b) p50 ms", "(b) p90 ms", "(c) p50 ms", "(c) p90 ms"],
            [[r["setting"], r["threads"], r["batched"]["p50_ms"], r["batched"]["p90_ms"], r["fused"]["p50_ms"],
              r["fused"]["p90_ms"]] for r in ok]))
    if result["encode"]:
        out.append("\nEncode throughput\n" + _table(
            ["model", "device", "px", "stage", "clips", "seconds", "clips/s", "ms"],
            [[r["model"], r["device"], r["resolution"], r["stage"], r["clips"],
              r["seconds"], r["clips_per_s"], r.get("query_ms_p50")] for r in result["encode"]]))
    if result["skipped"]:
        out.append("\nSkipped\n" + "\n".join(f"- {s['row']}: {s['reason']}" for s in result["skipped"]))
    out.append(f"\nelapsed {result['elapsed_s']} s")
    return "\n".join(out)
