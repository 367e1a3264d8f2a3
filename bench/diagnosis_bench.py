"""`python -m bench.diagnosis_bench`: which word decides, batched (every edited query encoded in one call,
Engine.score_texts) against the baseline of one Engine.search_text per edited query, in the same run; and the
blind-spot analysis. JSON out (--json PATH), one row per bundled model."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.measure import log, machine_info


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def diagnosis_row(name: str, repeats: int = 3) -> dict:
    """One bundled model on the bundled test split (its gallery encoded or read from the cache first)."""
    import torch

    from tvr_demo.diagnosis.blind_spots import blind_spots
    from tvr_demo.diagnosis.counterfactual import counterfactual, one_word_edits
    from tvr_demo.retrieval.engine import Engine

    engine = Engine.from_names(name, device="cpu", progress=False)
    engine.matrices.compute()
    query = "a small red circle moves to the left while a large blue square spins"  # typed: encoded, not looked up
    video = engine.search_text(query, k=1).hits[0].index
    edits = one_word_edits(engine, query)
    counterfactual(engine, query, video)  # warm-up (tokenizer, caches)
    with torch.no_grad():
        batched = _median_s(lambda: counterfactual(engine, query, video), repeats)
        one_by_one = _median_s(lambda: [engine.search_text(e.text, k=1) for e in edits], repeats)
        spots = _median_s(lambda: blind_spots(engine), repeats)
    row = {"model": name, "videos": engine.gallery_size, "edits": len(edits),
           "counterfactual_batched_s": round(batched, 3), "search_per_edit_s": round(one_by_one, 3),
           "speedup": round(one_by_one / batched, 2), "blind_spots_s": round(spots, 3)}
    log(json.dumps(row))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["drl-wti", "unify"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    import torch

    result = {"machine": machine_info(torch.device("cpu")), "rows": [diagnosis_row(m, args.repeats) for m in args.models]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result["rows"], indent=2))


if __name__ == "__main__":
    main()
