"""The prepared device check (bench/gpu_check.sh, bench/gpu_check.py) on the CPU: `prepare` renders the test split in
MSR-VTT's layout and says what will travel; `run` without CUDA runs the GPU tests (which skip), skips the CUDA rows
and says so; the Engine comparison and the kernel-vs-torch rows compute what they claim on CPU stand-ins."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import TRAVEL_LIMIT, compare_engines
from bench.tables import format_tables
from tvr_demo.data.loaders import detect_kind, load_benchmark

ROOT = Path(__file__).resolve().parent.parent
N_TEST = 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("gpu_check") / "prep"
    done = subprocess.run(["bash", "bench/gpu_check.sh", "prepare", str(folder), "--no-wheels", "--n-test",
                           str(N_TEST)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, done.stdout


def test_prepare_renders_the_test_split_in_msrvtt_layout(prepared) -> None:
    folder, stdout = prepared
    split = folder / "msrvtt"
    with open(split / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        ids = [row["video_id"] for row in csv.DictReader(f)]
    assert len(ids) == N_TEST
    assert sorted(p.name for p in (split / "videos").iterdir()) == sorted(f"{i}.mp4" for i in ids)
    assert detect_kind(split) == "msrvtt"
    bench = load_benchmark(split, "test")
    assert bench.num_videos == N_TEST and all(p.is_file() for p in bench.video_paths)
    assert not (folder / "wheels").exists()  # --no-wheels


def test_prepare_prints_what_travels(prepared) -> None:
    """The repo's tracked files, its untracked ones and the carried folder, against the device call's 64 MiB."""
    folder, stdout = prepared
    line = next(x for x in stdout.splitlines() if x.startswith("travels: "))
    total = float(line.split()[1])
    tracked = sum((ROOT / p).stat().st_size for p in subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout.split("\0") if p and
        (ROOT / p).is_file())
    carried = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert tracked / 2**20 + carried / 2**20 <= total + 0.1 and total < TRAVEL_LIMIT / 2**20
    assert f"of {TRAVEL_LIMIT / 2**20:.0f} MiB" in line


@pytest.mark.slow
def test_run_without_cuda_skips_the_cuda_rows_and_says_so(prepared, tmp_path: Path) -> None:
    """The run step on the CPU (about 30 s: it runs pytest -m gpu, whose tests skip here)."""
    folder, _ = prepared
    out = tmp_path / "out"
    done = subprocess.run(["bash", "bench/gpu_check.sh", "run", str(folder), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["cuda"] is False and result["pytest"]["returncode"] == 0
    assert "skipped" in result["pytest"]["summary"] and "passed" not in result["pytest"]["summary"]
    assert result["skipped"] == [{"row": "the bench's CUDA rows and the Engine CUDA-vs-CPU comparison",
                                  "reason": "no CUDA device"}]
    assert result["scoring"] == [] and "engine_comparison" not in result
    assert "Scoring" not in format_tables(result)  # renders as a bench run (bench/README.md)
    assert "no CUDA device" in done.stdout and "pytest -m gpu:" in done.stdout


def test_the_engine_comparison_on_two_cpu_engines(prepared, tmp_path: Path, monkeypatch) -> None:
    """The comparison's arithmetic on two engines that must agree exactly (both on the CPU)."""
    monkeypatch.setenv("TVR_DEMO_CACHE", str(tmp_path))
    folder, _ = prepared
    out = compare_engines(folder / "msrvtt", tmp_path / "cache", devices={"cuda": "cpu", "cpu": "cpu"})
    assert out["latent_max_abs_diff"] == 0.0 and out["same_top1_fraction"] == out["same_top10_fraction"] == 1.0
    assert out["cuda"]["metrics"] == out["cpu"]["metrics"] and out["cpu"]["metrics"]["t2v"]["R@1"] >= 0
    assert out["cuda"]["first_search_ms"] > 0 and out["cuda"]["search_p50_ms"] > 0


_CUDA_PATHS = """
import json, torch
from unittest import mock
from bench import scoring_bench
from bench.baselines import Prepared
from tests.test_kernels import random_case, reference
from tvr_demo.kernels.geometry import CONFIGS
from tvr_demo.kernels.selfcheck import ScoringPath
text, tmask, tw, video, vmask, vw = random_case(6, 40, dim=32)
work = scoring_bench.Workload("tiny", 6, 40, {"fused": None})
path = ScoringPath("triton", "stand-in", {"batch": CONFIGS["batch"][1], "query": CONFIGS["query"][0]})
with mock.patch.object(scoring_bench, "serving_path", lambda device: path):
    out = scoring_bench._cuda_paths(work, Prepared(text, tmask, tw), Prepared(video, vmask, vw), torch.device("cpu"),
                                    None, reference(text, tmask, tw, video, vmask, vw).float())
print(json.dumps(out))
"""


def test_the_two_fused_paths_are_timed_apart_and_checked() -> None:
    """The CUDA rows' kernel-vs-torch timing (bench/scoring_bench._cuda_paths), run on the CPU with the kernel under
    TRITON_INTERPRET=1: both paths timed with their first call apart, the kernel's variant named, both checked."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", _CUDA_PATHS], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out) == {"triton", "torch"} and out["triton"]["config"] == "128v x 2q, d32, 8w3s"
    for entry in out.values():
        assert entry["ms"] > 0 and entry["first_ms"] > 0 and entry["measured_rows"] == 6
        assert entry["max_abs_diff_vs_fused"] < 1e-5
