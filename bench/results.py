"""The papers' comparison on the bundled benchmark: every bundled checkpoint evaluated on the 1,000-clip test split,
UNIFY per branch; and where each WTI model puts its text weight over the test captions, beside DRL's own figure.
Both as JSON and markdown tables.

    python bench/results.py [--dataset data/synthetic] [--json bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tvr_demo.data import load_benchmark  # noqa: E402
from tvr_demo.evaluation.token_weights import OFFICIAL_FIGURE, caption_weight_stats  # noqa: E402
from tvr_demo.models.checkpoints import bundled_registry, load_checkpoint  # noqa: E402
from tvr_demo.paths import default_dataset_dir  # noqa: E402
from tvr_demo.retrieval.engine import Engine  # noqa: E402

COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def evaluate_all(dataset: Path) -> dict[str, dict]:
    """name (or name/branch for UNIFY) -> {"t2v": ..., "v2t": ...}."""
    rows: dict[str, dict] = {}
    for name in bundled_registry():
        engine = Engine.from_names(name, dataset, "test", device="cpu", progress=False)
        result = engine.analysis.evaluate()
        for branch, m in result.branches.items():
            rows[f"{name} ({branch})" if engine.is_unify else name] = {"t2v": m.t2v, "v2t": m.v2t}
    return rows


def weight_rows(dataset: Path) -> dict[str, dict]:
    """name -> WeightStats as a dict, for every bundled model with learned WTI weights, over the test captions."""
    captions = load_benchmark(dataset, "test").captions
    rows = {}
    for name in bundled_registry():
        model = load_checkpoint(name).model.eval()
        if model.config.latent_interaction == "wti":
            rows[name] = caption_weight_stats(model, captions).to_dict()
    return rows


def weight_markdown(rows: dict[str, dict]) -> str:
    lines = ["| model | median `<eot>` weight | captions with `<eot>` > 0.9 | median content-word weight | "
             "median filler weight | content words outweigh fillers |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['median_eot']:.2f} | {r['share_eot_above_09']:.0f}% | {r['median_content']:.3f} | "
                     f"{r['median_filler']:.3f} | {r['share_content_over_fillers']:.0f}% |")
    f = OFFICIAL_FIGURE
    lines.append(f"| DRL's figure (one MSR-VTT caption) | {f['eot']:.2f} | - | {f['content_low']:.2f}-"
                 f"{f['content_high']:.2f} | {f['a']:.3f} (\"a\") | yes |")
    return "\n".join(lines)


def markdown(rows: dict[str, dict]) -> str:
    head = "| model | " + " | ".join(f"t2v {c}" for c in COLUMNS) + " | " + " | ".join(f"v2t {c}" for c in COLUMNS)
    lines = [head + " |", "|" + " --- |" * (1 + 2 * len(COLUMNS))]
    for name, r in rows.items():
        cells = [f"{r[d][c]:.1f}" for d in ("t2v", "v2t") for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default=str(default_dataset_dir()))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = evaluate_all(Path(args.dataset))
    weights = weight_rows(Path(args.dataset))
    if args.json:
        Path(args.json).write_text(json.dumps({"metrics": rows, "wti_weights": weights}, indent=2) + "\n")
    print(markdown(rows))
    print()
    print(weight_markdown(weights))


if __name__ == "__main__":
    main()
