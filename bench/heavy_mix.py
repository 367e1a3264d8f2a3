"""The hostile heavy mix on loopback: while two first-time training-split builds (/metrics) and crafted
uploads (an mp4 of millions of empty boxes, a valid 4K clip of 590 s) run, a client keeps searching (until
the last heavy request ends, at least --searches times, 0.5 s apart); reports the
search latencies and the server's resident memory (peak and over time), for one or more checkouts in the same run.

    python bench/heavy_mix.py [--roots /path/to/base,/path/to/branch] [--train 1000] [--json out.json]
                              [--heavy unify,drl-wti-cdcr] [--py-spy PATH --stacks DIR]

Each root serves the bundled checkpoints (from that checkout) with `python app.py --dataset DIR` on a generated
benchmark of --train training clips and a fresh feature cache, so the builds are first-time. Peak resident memory is
the kernel's VmHWM of the server process (its worker processes not included); ratios are against the first root.
With --py-spy, every thread's stack is dumped twice a second through the mix (DIR/<root>-stacks.txt, each dump
headed by its time after the heavy requests were sent), so a slow search's wait can be read off its thread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from bench.load_test import _free_port, machine, report_out  # noqa: E402

HEAVY_MODELS = "unify,drl-wti-cdcr"  # two first-time training-split builds, UNIFY's the largest


def flood_mp4(path: Path, n_boxes: int) -> Path:
    """One ftyp box and n empty free boxes (8 bytes each): every box looks valid to a walk of the top level."""
    block = b"\x00\x00\x00\x08free" * 65536
    with path.open("wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")
        for _ in range(n_boxes // 65536):
            f.write(block)
        f.write(b"\x00\x00\x00\x08free" * (n_boxes % 65536))
    return path


def long_4k_mp4(path: Path, seconds: int = 590, width: int = 3840, height: int = 2160) -> Path:
    """A valid H.264 clip at the upload limits: 4K UHD frames, one every 10 s for `seconds` (a few hundred kB)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(1, 10))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        frame = np.zeros((height, width, 3), np.uint8)
        for _ in range(seconds // 10):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def cpu_model() -> str:
    """The CPU's model name (lscpu's), for the report."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start(root: Path, dataset: Path, cache: Path, port: int, log: Path, env: dict[str, str] | None = None,
          args: Sequence[str] = ()) -> subprocess.Popen:
    """`python app.py` of a checkout on the CPU at a local port, with a fresh feature cache (and `env`, `args` added);
    returns once its page answers (the tests start their servers here too)."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TVR_DEMO_CACHE": str(cache), **(env or {})}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--dataset", str(dataset), "--host", "127.0.0.1",
                                 "--port", str(port), "--device", "cpu", *args], cwd=root, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    import urllib.request

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{root}: the app exited with code {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{root}: the app did not answer within 900 s; see {log}")


def dump_stacks(py_spy: str, pid: int, out: Path, started: list[float], stop: threading.Event,
                every_s: float = 0.5) -> None:
    """Append `py-spy dump` of every thread of `pid` to `out` every `every_s` seconds until `stop`, each headed by its
    time after started[0] (the heavy requests' send time, once set)."""
    with out.open("w") as f:
        while not stop.is_set():
            t = time.perf_counter()
            dump = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
            f.write(f"===== t={t - started[0] if started else -1:.2f}s\n{dump}\n")
            stop.wait(max(0.0, every_s - (time.perf_counter() - t)))


def run_root(root: Path, dataset: Path, uploads: dict[str, Path], captions: list[str], n_searches: int,
             workdir: Path, heavy_models: Sequence[str] = HEAVY_MODELS.split(","), py_spy: str | None = None,
             stacks: Path | None = None) -> dict:
    from gradio_client import Client, handle_file

    cache = workdir / f"cache-{root.name}"
    port = _free_port()
    proc = start(root, dataset, cache, port, workdir / f"app-{root.name}.log")
    samples, stop = [], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append((time.perf_counter(), rss_kb(proc.pid)))
            except OSError:
                return
            time.sleep(0.25)

    try:
        url = f"http://127.0.0.1:{port}/"
        warm = Client(url, verbose=False)
        warm.predict("drl-wti", "", "test", api_name="/load")
        warm.predict(captions[0], 10, "auto", "drl-wti", "", "test", api_name="/search")
        # The floor, nothing else running: the ranked answer alone (what the page waits for; a browser then fetches
        # the clips in parallel from the file route), and the answer plus its 10 clips downloaded one by one (what
        # gradio_client does by default)
        answer = Client(url, verbose=False, download_files=False)
        idle_latencies, idle_with_clips = [], []
        for i in range(10):
            for client, out in ((answer, idle_latencies), (warm, idle_with_clips)):
                t0 = time.perf_counter()
                client.predict(captions[-1 - i], 10, "auto", "drl-wti", "", "test", api_name="/search")
                out.append(time.perf_counter() - t0)
        idle_kb = rss_kb(proc.pid)
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM from here on
        threading.Thread(target=sample, daemon=True).start()
        spy_started: list[float] = []
        if py_spy:
            stacks.mkdir(parents=True, exist_ok=True)
            threading.Thread(target=dump_stacks, args=(py_spy, proc.pid, stacks / f"{root.name}-stacks.txt",
                                                       spy_started, stop), daemon=True).start()
        heavy = []

        def fire(*args, api_name: str) -> None:
            t0 = time.perf_counter()
            try:
                Client(url, verbose=False).predict(*args, api_name=api_name)
                outcome = "ok"
            except Exception as err:  # refusals are expected for the crafted uploads
                outcome = f"{type(err).__name__}: {str(err)[:160]}"
            heavy.append({"api": api_name, "args": str(args[:1])[:40], "s": round(time.perf_counter() - t0, 1),
                          "ended_at_s": round(time.perf_counter() - mix_started, 1),
                          "ended": time.perf_counter(), "outcome": outcome})

        threads = [threading.Thread(target=fire, args=(m, "", "train"), kwargs={"api_name": "/metrics"})
                   for m in heavy_models]
        for name in ("flood", "flood", "flood", "long_4k", "long_4k"):
            threads.append(threading.Thread(target=fire, args=(None, handle_file(str(uploads[name])), 5, "auto",
                                                               "drl-wti", "", "test"),
                                            kwargs={"api_name": "/search_video"}))
        mix_started = time.perf_counter()
        spy_started.append(mix_started)
        for t in threads:
            t.start()
        time.sleep(1.0)
        client, latencies, started, failed = answer, [], [], []
        i = 0
        while i < n_searches or any(t.is_alive() for t in threads):  # search through the whole heavy window
            if i:
                time.sleep(0.5)  # a user's pause between queries
            i += 1
            t0 = time.perf_counter()
            try:
                client.predict(f"{captions[i % len(captions)]}", 10, "auto", "drl-wti", "", "test",
                               api_name="/search")
            except Exception as err:  # e.g. the server did not even take the request in time: counted, not fatal
                failed.append({"at_s": round(t0 - mix_started, 1), "after_s": round(time.perf_counter() - t0, 2),
                               "error": f"{type(err).__name__}: {str(err)[:120]}"})
            latencies.append(time.perf_counter() - t0)
            started.append(t0 - mix_started)
        searches_done_s = time.perf_counter()
        for t in threads:
            t.join(1800)
        peak_kb = rss_kb(proc.pid, "VmHWM")
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    def summary(values: list[float]) -> dict:
        v = np.array(values)
        return {"n": len(v), "p50_s": round(float(np.percentile(v, 50)), 3),
                "p95_s": round(float(np.percentile(v, 95)), 3), "max_s": round(float(v.max()), 3)}

    slow = [{"at_s": round(t, 1), "s": round(x, 2)} for t, x in zip(started, latencies, strict=True) if x > 1.0]
    return {"root": str(root), "heavy_models": list(heavy_models), "idle_rss_gb": round(idle_kb / 2**20, 2), "peak_rss_gb": round(peak_kb / 2**20, 2),
            "rss_after_gb": round(samples[-1][1] / 2**20, 2) if samples else None,
            "search_idle": summary(idle_latencies), "search_idle_with_clips": summary(idle_with_clips),
            "search": summary(latencies),
            "slow_searches": slow,  # over 1 s, with when they started (s after the heavy requests were sent)
            "failed_searches": failed,  # counted in the latencies too, at the time they took to fail
            "heavy_still_running_when_searches_ended": sum(h.pop("ended") > searches_done_s for h in heavy),
            "heavy": heavy}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--roots", default=str(PROJECT_ROOT), help="comma-separated checkouts to run (the first is the "
                                                              "baseline of the ratios)")
    p.add_argument("--dataset", default=None, help="a benchmark folder with train and test splits (default: "
                                                   "generate one with --train training clips)")
    p.add_argument("--train", type=int, default=1000, help="training clips when generating (5 captions each)")
    p.add_argument("--searches", type=int, default=40)
    p.add_argument("--flood-boxes", type=int, default=24_000_000, help="empty boxes in the crafted mp4 (8 B each)")
    p.add_argument("--heavy", default=HEAVY_MODELS, help="models whose training split /metrics builds, comma-separated")
    p.add_argument("--py-spy", default=None, help="a py-spy executable: dump the server's stacks through the mix")
    p.add_argument("--stacks", default="heavy-mix-stacks", help="folder for the stack dumps (with --py-spy)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from tvr_demo.data import load_benchmark
    from tvr_demo.data.synthetic import SyntheticConfig, generate

    load_at_start = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="tvr-heavy-") as tmp:
        workdir = Path(tmp)
        dataset = Path(args.dataset) if args.dataset else generate(
            workdir / "bench", SyntheticConfig(n_train=args.train, n_val=0, n_test=200), progress=True)
        captions = load_benchmark(dataset, "test").captions
        uploads = {"flood": flood_mp4(workdir / "flood.mp4", args.flood_boxes),
                   "long_4k": long_4k_mp4(workdir / "long_4k.mp4")}
        runs = [run_root(Path(root), dataset, uploads, captions, args.searches, workdir, args.heavy.split(","),
                         args.py_spy, Path(args.stacks)) for root in args.roots.split(",")]
        conditions = {**machine(), "cpu_model": cpu_model(), "loadavg_1m_at_start": load_at_start}
    base = runs[0]
    for run in runs[1:]:
        run["ratio_to_first"] = {"peak_rss": round(run["peak_rss_gb"] / base["peak_rss_gb"], 2),
                                 "search_p95": round(run["search"]["p95_s"] / base["search"]["p95_s"], 3)}
    report = {"train_clips": load_benchmark(dataset, "train").num_videos if args.dataset else args.train,
              "flood_boxes": args.flood_boxes, "machine": conditions, "runs": runs}
    report_out(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
