"""The suite's results as markdown tables: what `python -m bench` prints and bench/make_readme.py renders (no torch)."""

from __future__ import annotations

VARIANTS = ("official_loop", "official_prepared", "batched", "fused")
SHORT = {"official_loop": "(a) official", "official_prepared": "(a') official, prepared", "batched": "(b) batched",
         "fused": "(c) fused"}


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
    out = [f"commit {result.get('git_commit', 'unknown')[:12]}{' (with uncommitted changes)' if result.get('git_dirty') else ''}"
           f", {result['date']}, {'--quick' if result['quick'] else 'full suite'}, load average (1/5/15 min) "
           f"{'/'.join(f'{x:.1f}' for x in result.get('load_average_start', []))} at the start, "
           f"{'/'.join(f'{x:.1f}' for x in result.get('load_average_end', []))} at the end"]
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
            rows.append([r["workload"], r["device"], *ms, r.get("official_loop/fused"),
                         r.get("official_prepared/fused"), r.get("batched/fused"), r["roofline_ms"],
                         f"{100 * r['fused_of_roofline']:.1f}%", r["gflops"], r["mbytes"], peaks])
        out.append("\nScoring (ms; matrix rows measured on part of the rows are scaled, see JSON notes)\n" + _table(
            ["workload", "device", *[SHORT[k] for k in VARIANTS], "a/c", "a'/c", "b/c", "roofline", "c of roofline",
             "GFLOP", "MB", "peak MB a/a'/b/c"], rows))
    cuda = [r for r in result["scoring"] if "cuda_paths" in r]
    if cuda:
        rows = []
        for r in cuda:
            p, b = r["cuda_paths"], r["variants"]["batched"].get("ms")
            tri, tor = p.get("triton", {}), p["torch"]
            best = min(x for x in (tri.get("ms"), tor["ms"]) if x is not None)
            rows.append([r["workload"], tri.get("config"), tri.get("ms"), tri.get("first_ms"), tor["ms"],
                         tor["first_ms"], b, None if b is None else round(b / best, 2), r["roofline_ms"]])
        out.append("\nFused scorer (c) on CUDA, its two paths timed apart (ms; first = the first call alone)\n" + _table(
            ["workload", "Triton variant", "Triton", "Triton first", "torch path", "torch first", "(b) batched",
             "b / best of c", "roofline"], rows))
    if result["block_sweep"]:
        out.append("\nFused torch path, cosines per block (* = the device's default)\n" + _table(
            ["workload", "device", "block floats", "ms"],
            [[r["workload"], r.get("device", "cpu"), r["block_floats"] + (" *" if r.get("default") else ""), r["ms"]]
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
            ["model", "device", "px", "decode workers", "stage", "clips", "seconds", "clips/s", "ms"],
            [[r["model"], r["device"], r["resolution"], r.get("decode_workers", 2), r["stage"], r["clips"],
              r["seconds"], r["clips_per_s"], r.get("query_ms_p50")] for r in result["encode"]]))
    if result["skipped"]:
        out.append("\nSkipped\n" + "\n".join(f"- {s['row']}: {s['reason']}" for s in result["skipped"]))
    out.append(f"\nelapsed {result['elapsed_s']} s")
    return "\n".join(out)


def format_store(store: dict) -> str:
    """bench/store_bench.py's run: the build, then per candidate count the serving process's latency, recall and
    resident memory (MB: all of it, its own pages, mapped file pages, and its peak)."""
    build, serve, exact = store["build"], store["serve"], store["exact"]
    load = "/".join(f"{x:.1f}" for x in store["load_average_start"])
    out = [f"commit {store['git_commit'][:12]}{' (with uncommitted changes)' if store.get('git_dirty') else ''}, "
           f"{store['date']}, load average (1/5/15 min) {load} at the start, "
           f"{'/'.join(f'{x:.1f}' for x in store['load_average_end'])} at the end",
           f"cpu: {store['machine']['name']}, {store['machine']['threads']} threads, measured fp32 matmul "
           f"{store['machine']['peak_gflops_fp32']:.1f} GFLOP/s, read {store['machine']['read_gbs']:.1f} GB/s",
           "",
           f"Build: {build['clips']:,} clips, store {build['store_bytes'] / 1e9:.1f} GB on disk; this run wrote "
           f"{build['written_now']:,} of them in {build['write_s']:,.0f} s (the rest were on disk, checked and kept), "
           f"{build['index']} index {'built' if build.get('index_built_now') else 'built or read back'} in "
           f"{build['index_s']:,.0f} s",
           f"Exact scan (the reference): {exact['queries']} queries in one pass over the store, {exact['seconds']:,.0f} s "
           f"({exact['seconds_per_query']:.1f} s a query)" + (", its top 10s reused by this run (same store and "
                                                                "queries)" if exact.get("reused") else ""),
           "",
           f"Serving ({serve['queries']} typed queries; text encoding: ViT-B/32 text tower, random weights, "
           f"{serve['text_encode_ms_p50']:.1f} ms p50; resident MB after loading: {serve['memory_mb_loaded']['VmRSS']:,.0f})"]
    if "first_stage_threads" in serve:
        cached = serve["frames_page_cached_at_start"]
        out.append(f"First stage: {serve['index']} codes scanned in {serve['first_stage_threads']} threads; re-rank: "
                   "the candidates' frames read with pread, 512 clips at a time; the store's frames in the page "
                   f"cache when serving started: {'unknown' if cached is None else f'{cached:.0%}'}")
    rows = [[r["candidates"], f"{r['recall_at_10_vs_exact']:.3f}", r["first_stage_ms_p50"], r["rerank_ms_p50"],
             r["search_ms_p50"], r["typed_query_ms_p50"], r["typed_query_ms_p90"],
             f"{r['memory_mb']['VmRSS']:,.0f} / {r['memory_mb']['RssAnon']:,.0f} / {r['memory_mb']['RssFile']:,.0f}",
             f"{r['memory_mb']['VmHWM']:,.0f}"] for r in serve["rows"]]
    out.append(_table(["C", "recall@10 vs exact", "first stage ms", "re-rank ms", "search ms p50",
                       "typed query ms p50", "typed query ms p90", "resident MB (all / own / file)", "peak MB"],
                      rows))
    return "\n".join(out)
