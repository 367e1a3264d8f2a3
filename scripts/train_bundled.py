"""Train the bundled checkpoints on the synthetic benchmark, store them in fp16, evaluate and write the registry.

    python scripts/train_bundled.py [--names meanp drl-wti ...] [--dataset data/synthetic] [--epochs N]

Runs resume after their last finished epoch. The recipe is each config's: DRL's, with the departures it names.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tvr_demo.models.checkpoints import (  # noqa: E402
    REGISTRY_FILE,
    WEIGHTS_FILE,
    load_our_format,
    save_checkpoint,
    sha256_of,
)
from tvr_demo.paths import BUNDLED_CHECKPOINT_DIR, default_dataset_dir  # noqa: E402

NAMES = ["meanp", "drl-ti", "drl-wti", "drl-wti-cdcr", "unify"]


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def bundle(name: str, run_dir: Path, dataset: Path, elapsed_s: float) -> dict:
    """Copy the last epoch into checkpoints/<name> in fp16 and evaluate it on the test split."""
    model, meta = load_our_format(run_dir / "last")
    target = BUNDLED_CHECKPOINT_DIR / name
    meta["training"]["wall_time_s"] = round(elapsed_s, 1)
    meta["training"]["hardware"] = hardware()
    meta["training"]["dataset"] = "synthetic (python -m tvr_demo generate, seed 0, defaults)"
    save_checkpoint(model, target, meta, dtype=torch.float16)
    from tvr_demo.data import load_benchmark
    from tvr_demo.models.checkpoints import Checkpoint
    from tvr_demo.retrieval.engine import Engine

    model16, meta16 = load_our_format(target)
    engine = Engine(Checkpoint(model16, name, "bundled", target, meta16), load_benchmark(dataset, "test"))
    metrics = engine.evaluate()
    metrics.pop("skipped_videos", None)
    return {"path": name, "sha256": sha256_of(target / WEIGHTS_FILE), "description": meta.get("description", ""),
            "config": f"assets/train_configs/{name}.json", "training": meta["training"], "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--names", nargs="+", default=NAMES)
    parser.add_argument("--dataset", default=str(default_dataset_dir()))
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--bundle-only", action="store_true", help="skip training; bundle existing runs")
    args = parser.parse_args()
    for name in args.names:
        run_dir = Path(args.runs) / name
        if not args.bundle_only:
            cmd = [sys.executable, "-m", "tvr_demo", "train", "--config", name, "--dataset", args.dataset,
                   "--out", str(run_dir), "--resume"]
            if args.epochs:
                cmd += ["--epochs", str(args.epochs)]
            subprocess.run(cmd, check=True, cwd=ROOT)
        log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
        elapsed = log[-1]["elapsed_s"]  # training time over all epochs, resumptions included
        entry = bundle(name, run_dir, Path(args.dataset), elapsed)
        registry = json.loads(REGISTRY_FILE.read_text()) if REGISTRY_FILE.is_file() else {}  # re-read: chains run
        registry[name] = entry  # side by side
        REGISTRY_FILE.write_text(json.dumps(dict(sorted(registry.items())), indent=2) + "\n")
        print(json.dumps({name: registry[name]["metrics"]["t2v"]}))


if __name__ == "__main__":
    main()
