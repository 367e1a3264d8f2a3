"""The memory replay: every bundled model's training-split engine built, evicted and rebuilt, on `python app.py`,
driven through gradio_client and measured by the kernel alone (VmRSS after each request, VmHWM over the replay).

    python bench/replay_memory.py [--roots /path/to/base,/path/to/branch] [--dataset DIR] [--cache DIR]
                                  [--budget-gb 3] [--rounds 3] [--json out.json]

Each round asks, in this order, for unify's and meanp's training-split metrics (engine and score matrices: 2.1 and
0.7 GB on the bundled split) and loads drl-wti, drl-ti and drl-wti-cdcr there (engines without matrices, 0.23 GB
each: their token-wise matrices take 20 min apiece on 2 cores). The budget (TVR_DEMO_MEMORY_GB) is below what the
five hold together, so from the second round on every request evicts the least recently used engines and rebuilds
its own from the feature cache. After the rounds, 10 searches and 5 explanations on the test split, as a user
browsing on. Give --cache a cache that holds the five encodings (e.g. one run's) to measure rebuilds, not first
encodes: both roots read the same one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from bench.heavy_mix import cpu_model, rss_kb, start  # noqa: E402
from bench.load_test import _free_port, machine, report_out  # noqa: E402

ROUND = (("/metrics", "unify"), ("/metrics", "meanp"), ("/load", "drl-wti"), ("/load", "drl-ti"),
         ("/load", "drl-wti-cdcr"))
REPLAY_BUDGET_GB = 3.0  # under the five engines' 3.5 GB together, over unify's 2.1 GB alone


def replay(url: str, pid: int, rounds: int = 3, timeout_s: float = 3600) -> dict:
    """Run the replay against a served app (process `pid`); the server's memory after each request and at peak."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    peak_gb, stop = [0.0], threading.Event()

    def sample() -> None:  # VmRSS between the requests too (VmHWM says how high, this says when)
        while not stop.wait(0.5):
            try:
                peak_gb[0] = max(peak_gb[0], rss_kb(pid) / 2**20)
            except OSError:
                return

    client.predict("drl-wti", "", "test", api_name="/load")  # the start-up build is done
    idle_gb = rss_kb(pid) / 2**20
    threading.Thread(target=sample, daemon=True).start()
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here on
    steps = []
    try:
        for r in range(1, rounds + 1):
            for api, model in ROUND:
                t0 = time.perf_counter()
                client.submit(model, "", "train", api_name=api).result(timeout=timeout_s)
                steps.append({"round": r, "api": api, "model": model, "s": round(time.perf_counter() - t0, 1),
                              "rss_gb": round(rss_kb(pid) / 2**20, 3)})
                print(json.dumps(steps[-1]), file=sys.stderr, flush=True)
        captions = ["a small blue square grows", "a red circle moves to the left", "two green stars appear"]
        for i in range(10):
            client.submit(captions[i % 3], 10, "auto", "drl-wti", "", "test", api_name="/search").result(timeout=300)
        for i in range(5):
            client.submit(captions[i % 3], "", "", "", "drl-wti", "", "test", api_name="/explain").result(timeout=300)
        after_browsing_gb = rss_kb(pid) / 2**20
    finally:
        stop.set()
    return {"idle_rss_gb": round(idle_gb, 3), "steps": steps, "rss_after_browsing_gb": round(after_browsing_gb, 3),
            "peak_rss_sampled_gb": round(peak_gb[0], 3), "vmhwm_gb": round(rss_kb(pid, "VmHWM") / 2**20, 3)}


def run_root(root: Path, dataset: Path, cache: Path, budget_gb: float, rounds: int, workdir: Path) -> dict:
    port = _free_port()
    proc = start(root, dataset, cache, port, workdir / f"app-{root.name}.log",
                 env={"TVR_DEMO_MEMORY_GB": str(budget_gb)})
    try:
        report = replay(f"http://127.0.0.1:{port}/", proc.pid, rounds)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except Exception:
            proc.kill()
    later = [s["rss_gb"] for s in report["steps"] if s["round"] > 1]
    return {"root": str(root), **report,
            "rss_after_evictions_gb": {"min": min(later, default=None), "max": max(later, default=None)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--roots", default=str(PROJECT_ROOT), help="comma-separated checkouts, run one after the other")
    p.add_argument("--dataset", default=None, help="a benchmark folder with train and test splits (default: the "
                                                   "bundled synthetic benchmark, generated if missing)")
    p.add_argument("--cache", default=None, help="feature cache shared by the roots (default: a fresh one)")
    p.add_argument("--budget-gb", type=float, default=REPLAY_BUDGET_GB)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from tvr_demo.data.synthetic import ensure_default_dataset

    load_at_start = os.getloadavg()[0]
    dataset = Path(args.dataset) if args.dataset else ensure_default_dataset(progress=True, splits=("train", "test"))
    with tempfile.TemporaryDirectory(prefix="tvr-replay-") as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "cache"
        runs = [run_root(Path(root), dataset, cache, args.budget_gb, args.rounds, Path(tmp))
                for root in args.roots.split(",")]
    report = {"budget_gb": args.budget_gb, "rounds": args.rounds, "round": [f"{a} {m}" for a, m in ROUND],
              "machine": {**machine(), "cpu_model": cpu_model(), "loadavg_1m_at_start": load_at_start},
              "runs": runs}
    report_out(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
