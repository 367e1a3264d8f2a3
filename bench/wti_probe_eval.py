"""Evaluate training runs for the WTI-weight probes (docs/wti-weights.md): each run's validation per epoch (its log.jsonl), and for the
checkpoints named, test R@1 both ways and where the text weight sits over the test captions (the weight table's
columns). JSON out, for bench/notes.

    python bench/wti_probe_eval.py runs/a runs/b --epochs 3 8 [--dataset data/synthetic] [--json out.json]

`--epochs N` reads RUN/epoch_N; `last` reads RUN/last.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tvr_demo.data import load_benchmark  # noqa: E402
from tvr_demo.data.benchmark import Benchmark  # noqa: E402
from tvr_demo.evaluation.token_weights import caption_weight_stats  # noqa: E402
from tvr_demo.models.checkpoints import load_checkpoint  # noqa: E402
from tvr_demo.paths import default_dataset_dir  # noqa: E402
from tvr_demo.retrieval.engine import Engine  # noqa: E402

VAL_KEYS = ("R@1", "median_eot", "content_over_fillers")


def validation_per_epoch(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return [{"epoch": r["epoch"], "elapsed_s": r["elapsed_s"], **{k: r["val"][k] for k in VAL_KEYS if k in r["val"]}}
            for r in records]


def test_row(checkpoint_dir: Path, bench: Benchmark) -> dict:
    """Test R@1 both ways (the latent branch) and the weight statistics of one checkpoint (the split is loaded once
    for every checkpoint)."""
    checkpoint = load_checkpoint(checkpoint_dir)
    metrics = Engine(checkpoint, bench, progress=False).analysis.evaluate().branches
    latent = next(iter(metrics.values()))
    stats = caption_weight_stats(checkpoint.model.eval(), bench.captions).to_dict()
    return {"t2v_R@1": round(latent.t2v["R@1"], 1), "v2t_R@1": round(latent.v2t["R@1"], 1),
            **{k: round(v, 4) for k, v in stats.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--epochs", nargs="*", default=["last"])
    parser.add_argument("--dataset", type=Path, default=default_dataset_dir())
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bench = load_benchmark(args.dataset, "test")
    out = {}
    for run in args.runs:
        tests = {}
        for epoch in args.epochs:
            directory = run / ("last" if epoch == "last" else f"epoch_{epoch}")
            if directory.is_dir():
                tests[epoch] = test_row(directory, bench)
        out[run.name] = {"validation_per_epoch": validation_per_epoch(run), "test": tests}
        print(json.dumps({run.name: out[run.name]}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
