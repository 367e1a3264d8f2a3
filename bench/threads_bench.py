"""OpenMP settings vs latency: one query against 1,000 clips of ViT-B/32 shape, timed in child processes that
start with different OpenMP environments (they are read once, when torch loads)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {  # label -> environment changes; None removes the variable
    "default (libgomp spins, then sleeps)": {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": None},
    "OMP_NUM_THREADS=1": {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": "1"},
}


def _child() -> dict:
    """Runs in the child: p50 / p90 latency of (b) and (c) for one query vs 1,000 clips."""
    import torch

    from bench.synthetic import world
    from tvr_demo.kernels import wti_scores
    from tvr_demo.models import drl

    w = world(1000)
    q = w.generator.queries(1)
    mask = q.mask
    tokens = drl.l2_normalize(q.feats)
    weights = drl.interaction_weights(None, mask)
    g = w.gallery
    out = {"threads": torch.get_num_threads()}
    for name, fn in (("batched", drl.wti_similarity), ("fused", wti_scores)):
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            fn(tokens, mask, weights, g.feats, g.mask, g.weights)
            times.append((time.perf_counter() - t0) * 1e3)
        times = sorted(times[3:])
        out[name] = {"p50_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(0.9 * len(times))], 2)}
    return out


def threads_rows() -> list[dict]:
    from bench.measure import log

    rows = []
    root = Path(__file__).resolve().parent.parent
    for label, changes in SETTINGS.items():
        env = dict(os.environ)
        for key, value in changes.items():
            env.pop(key, None) if value is None else env.__setitem__(key, value)
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        # torch first: its OpenMP reads the environment before importing bench (bench/__init__.py) could change it
        code = "import torch, json; from bench.threads_bench import _child; print(json.dumps(_child()))"
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            rows.append({"setting": label, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"setting": label, "workload": "query vs 1e3 (ViT-B/32 shapes)", **result})
        log(f"threads {label}: fused p50 {result['fused']['p50_ms']} ms, batched {result['batched']['p50_ms']} ms")
    return rows

