"""The benchmark suite: its baselines compute the same scores, and `bench --quick` writes the expected rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.baselines import batched, official_loop, prepare
from bench.scoring_bench import VARIANTS, Workload, run_workload
from bench.synthetic import weight_heads, world
from tvr_demo.models import drl

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("weighted", [True, False], ids=["wti", "ti"])
def test_official_loop_and_batched_equal_wti_similarity(weighted: bool) -> None:
    """(a) and (b) are written from the design note, independently of drl.py: both must give its numbers."""
    w = world(70)
    texts = w.generator.queries(40)
    heads = weight_heads() if weighted else (None, None)
    got_a = torch.as_tensor(official_loop(texts.feats, texts.mask, w.raw.feats, w.raw.mask, *heads))
    text, video = prepare(texts.feats, texts.mask, heads[0]), prepare(w.raw.feats, w.raw.mask, heads[1])
    want = drl.wti_similarity(text.feats, text.mask, text.weights, video.feats, video.mask, video.weights)
    torch.testing.assert_close(got_a, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched(text, video), want, atol=1e-6, rtol=0)


def test_scoring_row_has_all_variants_and_agrees() -> None:
    machine = {"peak_gflops_fp32": 100.0, "read_gbs": 10.0}
    row = run_workload(Workload("tiny matrix", 40, 70, dict.fromkeys(VARIANTS)), torch.device("cpu"), machine)
    assert set(row["variants"]) == set(VARIANTS)
    assert all(row["variants"][v]["ms"] > 0 for v in VARIANTS)
    assert row["roofline_ms"] > 0 and "official_loop/fused" in row and "batched/fused" in row
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
