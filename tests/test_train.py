"""Training: a few real steps on the CPU, resumption, and two ranks under torchrun staying in step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvr_demo.checkpoints import load_our_format

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory) -> Path:
    from tvr_demo.data.synthetic import SyntheticConfig, generate

    out = tmp_path_factory.mktemp("bench") / "synthetic"
    generate(out, SyntheticConfig(seed=3, n_train=24, n_test=8, n_val=8), progress=False, num_workers=1)
    return out


def _train(args: list[str], env_extra: dict | None = None, torchrun: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "TVR_DEMO_CACHE": os.environ.get("TVR_DEMO_TEST_CACHE", "/tmp/tvr_demo_test_cache"),
           **(env_extra or {})}
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               "-m", "tvr_demo", "train", *args]
    else:
        cmd = [sys.executable, "-m", "tvr_demo", "train", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_train_a_few_steps_and_loss_falls(tiny_benchmark, tmp_path):
    """`train` runs real steps on the CPU, the loss falls, and a loadable checkpoint is written each epoch."""
    out = tmp_path / "run"
    result = _train(["--config", "drl-wti", "--dataset", str(tiny_benchmark), "--out", str(out), "--epochs", "2",
                     "--batch-size", "8"])
    assert result.returncode == 0, result.stderr[-3000:]
    log = _log(out)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[-1]["losses"][-1] < log[0]["losses"][0]
    model, meta = load_our_format(out / "epoch_2")
    assert meta["training"]["epoch"] == 2 and model.config.interaction == "wti"
    assert "R@1" in log[-1]["val"]


def test_resume_keeps_finished_epochs(tiny_benchmark, tmp_path):
    """An interrupted run resumes after its last finished epoch instead of starting over."""
    out = tmp_path / "run"
    common = ["--config", "meanp", "--dataset", str(tiny_benchmark), "--out", str(out), "--batch-size", "8"]
    assert _train([*common, "--epochs", "1"]).returncode == 0
    first = (out / "epoch_1" / "model.safetensors").read_bytes()
    result = _train([*common, "--epochs", "2", "--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["epoch"] for r in _log(out)] == [1, 2]  # epoch 1 was not trained again
    assert (out / "epoch_1" / "model.safetensors").read_bytes() == first
    # two learning-rate cycles of one epoch: the resumed run is the run trained in one go
    straight = tmp_path / "straight"
    assert _train([*common[:-4], "--out", str(straight), "--batch-size", "8", "--epochs", "2"]).returncode == 0
    assert _log(straight)[-1]["param_checksums"] == pytest.approx(_log(out)[-1]["param_checksums"], rel=1e-6)
    assert _log(straight)[-1]["loss"] == pytest.approx(_log(out)[-1]["loss"], rel=1e-5)


def test_learning_rate_restarts_every_cycle():
    from tvr_demo.train import _schedule

    factors = [_schedule(step, 10, 0.2) for step in range(20)]
    assert factors[:10] == factors[10:]  # warm restart
    assert factors[0] == 0.5 and factors[1] == 1.0  # two warm-up steps
    assert all(a > b for a, b in zip(factors[2:9], factors[3:10], strict=True))  # cosine decay within a cycle


def test_unify_trains_through_both_stages(tiny_benchmark, tmp_path):
    """UNIFY's stage-1 grounding and stage-2 sparsity losses both run, and a fusion weight is chosen on val."""
    out = tmp_path / "run"
    result = _train(["--config", "unify", "--dataset", str(tiny_benchmark), "--out", str(out), "--epochs", "2",
                     "--batch-size", "8"])
    assert result.returncode == 0, result.stderr[-3000:]
    log = _log(out)
    assert "fusion_lambda" in log[-1]
    assert {"latent_R@1", "lexicon_R@1"} <= set(log[-1]["val"])


def test_torchrun_two_ranks_stay_in_step(tiny_benchmark, tmp_path):
    """Under torchrun (2 CPU processes, gloo) both ranks hold identical weights after every epoch and the loss
    falls."""
    out = tmp_path / "run"
    result = _train(["--config", "drl-wti", "--dataset", str(tiny_benchmark), "--out", str(out), "--epochs", "2",
                     "--batch-size", "4"], {"OMP_NUM_THREADS": "1"}, torchrun=2)
    assert result.returncode == 0, result.stderr[-3000:]
    log = _log(out)
    for record in log:
        assert record["world_size"] == 2
        a, b = record["param_checksums"]
        assert a == pytest.approx(b, rel=0, abs=1e-9)
    assert log[-1]["losses"][-1] < log[0]["losses"][0]
