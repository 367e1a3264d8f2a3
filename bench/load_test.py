"""Load test: the app on loopback under concurrent gradio_client users; throughput, latency percentiles, errors.

    python bench/load_test.py [--clients 20] [--requests 300] [--json load.json]

The app runs in its own process (`python app.py`) on 127.0.0.1: the bundled checkpoints on the bundled benchmark
once checkpoints/registry.json exists, else random tiny checkpoints on a small generated benchmark (the output
says which). Each client thread drives its own gradio_client.Client through a fixed mix of searches, explanations,
failure lists, metrics and requests the app must refuse. Bounded: --requests in all, --deadline seconds, and a
per-request timeout. An error is any request that does not end as expected (a result, or our own refusal message
for the bad ones): a generic gradio error, a timeout, a dropped connection.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

# The request mix: kind -> share. "bad_*" requests must be refused with the app's own message.
MIX = {"search_caption": 0.30, "search_text": 0.20, "explain": 0.15, "failures": 0.10, "metrics": 0.10,
       "search_video": 0.05, "bad_query": 0.05, "bad_video": 0.05}
WORDS = ("a red circle moves to the left", "a small blue square grows", "two green stars appear one after another",
         "a large yellow cross moves up", "an orange triangle shrinks slowly", "something purple spins")


@dataclass
class Setup:
    command: list[str]
    models: list[str]
    dataset: str  # what the clients send in the gallery field ("" = the app's default)
    captions: list[str]
    video_ids: list[str]
    description: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(workdir: Path, n_videos: int) -> Setup:
    """What to serve: the bundled checkpoints if the registry exists, else tiny random ones on a generated gallery."""
    from tvr_demo.data import load_benchmark
    from tvr_demo.models.checkpoints import REGISTRY_FILE, bundled_registry

    if REGISTRY_FILE.is_file() and bundled_registry():
        from tvr_demo.data.synthetic import ensure_default_dataset

        bench = load_benchmark(ensure_default_dataset(progress=True), "test")
        models = list(bundled_registry())
        return Setup(["app.py"], models, "", bench.captions, bench.video_ids,
                     f"bundled checkpoints ({', '.join(models)}) on the bundled benchmark "
                     f"({bench.num_videos} test videos)")
    import torch

    from tvr_demo.data.synthetic import SyntheticConfig, generate
    from tvr_demo.models import ModelConfig, TVRModel, UnifyConfig
    from tvr_demo.models.backbone import clip_config
    from tvr_demo.models.checkpoints import save_checkpoint

    root = generate(workdir / "bench", SyntheticConfig(n_train=0, n_val=0, n_test=n_videos), progress=False)
    specs = []
    for name, fields in {"drl-wti": dict(interaction="wti"),
                         "unify": dict(interaction="dp", unify=UnifyConfig(latent="dp", top_k=64))}.items():
        torch.manual_seed(0)
        model = TVRModel(ModelConfig(clip=clip_config("tvr-tiny"), **fields)).eval()
        specs.append(str(save_checkpoint(model, workdir / "checkpoints" / name, {"description": "random weights"})))
    bench = load_benchmark(root, "test")
    return Setup(["app.py", "--checkpoint", ",".join(specs), "--dataset", str(root)], ["drl-wti", "unify"],
                 str(root), bench.captions, bench.video_ids,
                 f"NO BUNDLED CHECKPOINTS (checkpoints/registry.json is missing): random tiny checkpoints "
                 f"(drl-wti, unify) on a generated benchmark of {n_videos} test videos")


def start_server(setup: Setup, port: int, log_path: Path, timeout_s: float) -> tuple[subprocess.Popen, str]:
    """`python app.py ...` on 127.0.0.1:port (its output in log_path), once it answers HTTP."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, *setup.command, "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode} before serving; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the app did not answer within {timeout_s:.0f} s; see {log_path}")


def request_plan(setup: Setup, n: int, seed: int) -> list[tuple[str, tuple, str]]:
    """(kind, args, api_name) for each request, in a fixed random order."""
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=n)
    plan = []
    for kind in kinds:
        model = rng.choice(setup.models)
        ctx = (model, setup.dataset, "test")
        caption = rng.choice(setup.captions)
        if kind == "search_caption":
            plan.append((kind, (caption, 10, "auto", *ctx), "/search"))
        elif kind == "search_text":
            plan.append((kind, (f"{rng.choice(WORDS)} {rng.randrange(10**6)}", 10, "auto", *ctx), "/search"))
        elif kind == "explain":
            plan.append((kind, (caption, "", "", "", *ctx), "/explain"))
        elif kind == "failures":
            plan.append((kind, ("t2v", "auto", rng.choice(["rank", "margin"]), "(all)", 100, *ctx), "/failures"))
        elif kind == "metrics":
            plan.append((kind, ctx, "/metrics"))
        elif kind == "search_video":
            plan.append((kind, (rng.choice(setup.video_ids), None, 10, "auto", *ctx), "/search_video"))
        elif kind == "bad_query":
            plan.append((kind, (rng.choice(["", "   ", "\n"]), 10, "auto", *ctx), "/search"))
        else:
            plan.append((kind, (caption, "no-such-video", "", "", *ctx), "/explain"))
    return plan


def run_clients(url: str, plan: list, n_clients: int, deadline_s: float, timeout_s: float, download_files: bool
                ) -> tuple[list, float]:
    """Each client takes the next request from the shared plan until it is done or the deadline passes."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    clients = [Client(url, verbose=False, download_files=download_files) for _ in range(n_clients)]
    results, lock, position = [], threading.Lock(), iter(range(len(plan)))
    start = time.perf_counter()

    def work(client) -> None:
        while time.perf_counter() - start < deadline_s:
            with lock:
                i = next(position, None)
            if i is None:
                return
            kind, args, api_name = plan[i]
            t0 = time.perf_counter()
            try:
                client.submit(*args, api_name=api_name).result(timeout=timeout_s)
                outcome, message = ("error", "accepted a bad request") if kind.startswith("bad_") else ("ok", "")
            except AppError as err:
                message = str(err)
                generic = "verbose error reporting" in message
                outcome = "refused" if kind.startswith("bad_") and not generic else "error"
            except Exception as err:  # a timeout, a dropped connection
                outcome, message = "error", f"{type(err).__name__}: {err}"
            with lock:
                results.append({"kind": kind, "latency_s": time.perf_counter() - t0, "outcome": outcome,
                                "message": message[:200]})

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_s + timeout_s + 10)
    return results, time.perf_counter() - start


def summarise(results: list, wall_s: float) -> dict:
    def stats(rows: list) -> dict:
        lat = np.array([r["latency_s"] for r in rows]) if rows else np.zeros(1)
        return {"requests": len(rows), "errors": sum(r["outcome"] == "error" for r in rows),
                "p50_s": round(float(np.percentile(lat, 50)), 3), "p95_s": round(float(np.percentile(lat, 95)), 3),
                "p99_s": round(float(np.percentile(lat, 99)), 3), "max_s": round(float(lat.max()), 3)}

    total = stats(results)
    total["throughput_rps"] = round(len(results) / wall_s, 2)
    total["wall_s"] = round(wall_s, 1)
    per_kind = {kind: stats([r for r in results if r["kind"] == kind]) for kind in MIX}
    errors = Counter(f"{r['kind']}: {r['message']}" for r in results if r["outcome"] == "error")
    return {"total": total, "per_kind": per_kind, "outcomes": dict(Counter(r["outcome"] for r in results)),
            "first_errors": dict(errors.most_common(5))}


def report_out(report: dict, json_path: str | None) -> None:
    """Print a served-app bench's report, and write it to `json_path` when given."""
    print(json.dumps(report, indent=2))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")


def machine() -> dict:
    import torch

    trainings = subprocess.run(["pgrep", "-fc", "tvr_demo train"], capture_output=True, text=True).stdout.strip()
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(), "loadavg_1m_at_end": os.getloadavg()[0],
            "niceness": os.nice(0), "other_trainings_running": int(trainings or 0)}


def table(report: dict) -> str:
    lines = [f"{'kind':<16}{'requests':>9}{'errors':>8}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'max s':>8}"]
    for kind, s in [*report["per_kind"].items(), ("ALL", report["total"])]:
        lines.append(f"{kind:<16}{s['requests']:>9}{s['errors']:>8}{s['p50_s']:>8.3f}{s['p95_s']:>8.3f}"
                     f"{s['p99_s']:>8.3f}{s['max_s']:>8.3f}")
    t = report["total"]
    lines.append(f"throughput {t['throughput_rps']} requests/s over {t['wall_s']} s with {report['clients']} clients")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--deadline", type=float, default=600, help="stop sending after this many seconds")
    p.add_argument("--timeout", type=float, default=60, help="per request, seconds")
    p.add_argument("--videos", type=int, default=100, help="gallery size when no bundled checkpoints exist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--download-files", action="store_true",
                   help="also fetch every returned file (the result videos) inside each request, as a browser "
                        "showing them would; by default a request ends when its outputs arrive, files as URLs")
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tvr-load-") as tmp:
        setup = prepare(Path(tmp), args.videos)
        print(f"serving: {setup.description}", file=sys.stderr)
        started = time.perf_counter()
        proc, url = start_server(setup, _free_port(), Path(tmp) / "app.log", timeout_s=900)
        try:
            from gradio_client import Client

            warm = Client(url, verbose=False)
            for model in setup.models:  # encode each gallery and score its captions before the clock starts
                warm.predict(model, setup.dataset, "test", api_name="/load")
                warm.predict(setup.captions[0], 10, "auto", model, setup.dataset, "test", api_name="/search")
            startup_s = time.perf_counter() - started
            plan = request_plan(setup, args.requests, args.seed)
            results, wall_s = run_clients(url, plan, args.clients, args.deadline, args.timeout, args.download_files)
            conditions = machine()  # load average over the run, trainings running beside it
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    report = {"served": setup.description, "clients": args.clients, "planned_requests": args.requests,
              "files_downloaded_in_each_request": args.download_files,
              "startup_s": round(startup_s, 1), "machine": conditions, **summarise(results, wall_s)}
    print(table(report))
    report_out(report, args.json)
    return 0 if report["total"]["errors"] == 0 and len(results) == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
