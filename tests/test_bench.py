"""The benchmark suite: its baselines compute the same scores, and `bench --quick` writes the expected rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import np_softmax_weights, np_uniform_weights, np_wti

from bench import make_readme
from bench.baselines import batched, official_loop, official_loop_prepared, prepare
from bench.scoring_bench import Workload, run_workload
from bench.synthetic import weight_heads, world
from bench.tables import VARIANTS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("weighted", [True, False], ids=["wti", "ti"])
def test_baselines_give_the_definition(weighted: bool) -> None:
    """(a), (a') and (b) against S computed in float64 numpy from DRL's formula (tests/reference.py): raw features
    normalised here, weights the softmax of the heads' logits over valid positions (uniform for TI)."""
    w = world(70)
    texts = w.generator.queries(40)
    heads = weight_heads() if weighted else (None, None)

    def unit(x: torch.Tensor) -> np.ndarray:
        x = x.double().numpy()
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    with torch.no_grad():
        if weighted:
            tw = np_softmax_weights(heads[0](texts.feats).squeeze(-1), texts.mask)
            vw = np_softmax_weights(heads[1](w.raw.feats).squeeze(-1), w.raw.mask)
        else:
            tw, vw = np_uniform_weights(texts.mask), np_uniform_weights(w.raw.mask)
    want = torch.from_numpy(np_wti(unit(texts.feats), texts.mask.numpy(), tw, unit(w.raw.feats), w.raw.mask.numpy(), vw))
    got_a = torch.as_tensor(official_loop(texts.feats, texts.mask, w.raw.feats, w.raw.mask, *heads)).double()
    text, video = prepare(texts.feats, texts.mask, heads[0]), prepare(w.raw.feats, w.raw.mask, heads[1])
    torch.testing.assert_close(got_a, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.as_tensor(official_loop_prepared(text, video)).double(), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched(text, video).double(), want, atol=1e-5, rtol=0)


def test_scoring_row_has_all_variants_and_agrees() -> None:
    machine = {"peak_gflops_fp32": 100.0, "read_gbs": 10.0}
    row = run_workload(Workload("tiny matrix", 40, 70, dict.fromkeys(VARIANTS)), torch.device("cpu"), machine)
    assert set(row["variants"]) == set(VARIANTS)
    assert all(row["variants"][v]["ms"] > 0 for v in VARIANTS)
    assert row["roofline_ms"] > 0 and {"official_loop/fused", "official_prepared/fused", "batched/fused"} <= set(row)
    assert max(row["max_abs_diff_vs_fused"].values()) < 1e-4
    assert all(row["same_top10"].values())


@pytest.mark.slow
def test_quick_suite_writes_the_expected_rows(tmp_path: Path) -> None:
    """`python -m tvr_demo bench --quick --json` end to end (about 1.5 minutes on a 2-core CPU)."""
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "tvr_demo", "bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and "cpu" in result["machines"]
    assert result["scoring_path"]["cpu"]["path"] == "torch" and "fused scorer (c) runs the torch path" in done.stdout
    scoring = {(r["workload"], r["device"]) for r in result["scoring"]}
    assert {("matrix 1k x 1k", "cpu"), ("query vs 1e4", "cpu"), ("query vs 1e5", "cpu")} <= scoring
    for row in result["scoring"]:
        assert "ms" in row["variants"]["fused"] and row["roofline_ms"] > 0
    assert {r["gallery"] for r in result["two_stage"]} == {10_000, 100_000}
    assert all(0 <= r["recall_at_10_vs_exact"] <= 1 for r in result["two_stage"])
    assert result["engine"] or any("engine" in s["row"] for s in result["skipped"])
    assert result["encode"] or any("encode" in s["row"] for s in result["skipped"])
    assert "Scoring" in done.stdout


def test_readme_is_generated_from_the_committed_runs() -> None:
    """bench/README.md is exactly what bench/make_readme.py renders from bench/results/*.json (no hand-typed number)."""
    assert list((ROOT / "bench" / "results").glob("*.json")), "no committed benchmark run"
    assert make_readme.render() == (ROOT / "bench" / "README.md").read_text()


def test_readme_findings_come_from_the_run() -> None:
    """The sentences under a run restate its JSON: change a number and the sentence changes with it."""
    runs = [json.loads(path.read_text()) for path in sorted((ROOT / "bench" / "results").glob("*.json"))]
    run = [r for r in runs if "scoring" in r][-1]  # the latest suite run (store runs sit beside them)
    row = next(r for r in run["scoring"] if r["workload"] == "query vs 1e4")
    a, a2, c = (row["variants"][k]["ms"] for k in ("official_loop", "official_prepared", "fused"))
    text = "\n".join(make_readme.findings(run))
    assert f"(caching: a / a' = {a / a2:.1f})" in text and f"(scoring: a' / c = {a2 / c:.1f})" in text
    row["variants"]["official_loop"]["ms"] = a * 3
    assert f"(caching: a / a' = {3 * a / a2:.1f})" in "\n".join(make_readme.findings(run))


def test_the_first_call_is_timed_apart() -> None:
    """A call that compiles on its first run (here: sleeps 0.2 s once) shows it in first_ms, not in ms."""
    import time

    from bench.measure import measure

    calls = []

    def fn() -> None:
        time.sleep(0.2 if not calls else 0.002)
        calls.append(1)

    t = measure(fn, torch.device("cpu"), min_time_s=0.02)
    assert t.first_ms >= 200 and t.ms < 50 and t.reps == len(calls) - 1 >= 1
