"""Training: a few real steps on the CPU, resumption, two ranks under torchrun staying in step, DRL's gather, its
initialisation of the modules it adds, and padded frames at zero in normalised space."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvr_demo.models.checkpoints import load_our_format

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory) -> Path:
    from tvr_demo.data.synthetic import SyntheticConfig, generate

    out = tmp_path_factory.mktemp("bench") / "synthetic"
    generate(out, SyntheticConfig(seed=3, n_train=8, n_test=8, n_val=8), progress=False, num_workers=1)
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
    assert "Warning" not in result.stderr, result.stderr[-3000:]  # the CLI shows progress and results, no library log
    log = _log(out)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[-1]["losses"][-1] < log[0]["losses"][0]
    model, meta = load_our_format(out / "epoch_2")
    assert meta["training"]["epoch"] == 2 and model.config.interaction == "wti"
    assert "R@1" in log[-1]["val"]


def test_resume_keeps_finished_epochs(tiny_benchmark, tmp_path):
    """A run stopped after its first epoch resumes after it (weights, BertAdam's moments and the schedule's step)
    and ends where a run trained in one go ends."""
    out = tmp_path / "run"
    common = ["--config", "meanp", "--dataset", str(tiny_benchmark), "--batch-size", "8", "--epochs", "2"]
    steps_per_epoch = 8 * 5 // 8  # every (video, caption) pair: 8 training clips with 5 captions each
    # one thread: a multi-threaded BLAS may change its thread count under load, and the sums' order with it (a run
    # under a load average of 30 ended 5e-5 apart)
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert _train([*common, "--out", str(out), "--max-steps", str(steps_per_epoch)], one_thread).returncode == 0
    assert [r["epoch"] for r in _log(out)] == [1]
    first = (out / "epoch_1" / "model.safetensors").read_bytes()
    result = _train([*common, "--out", str(out), "--resume"], one_thread)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["epoch"] for r in _log(out)] == [1, 2]  # epoch 1 was not trained again
    assert [r["step"] for r in _log(out)] == [steps_per_epoch, 2 * steps_per_epoch]
    assert (out / "epoch_1" / "model.safetensors").read_bytes() == first
    straight = tmp_path / "straight"
    assert _train([*common, "--out", str(straight)], one_thread).returncode == 0
    assert _log(straight)[-1]["param_checksums"] == pytest.approx(_log(out)[-1]["param_checksums"], rel=1e-6)
    assert _log(straight)[-1]["loss"] == pytest.approx(_log(out)[-1]["loss"], rel=1e-5)


def test_unify_trains_through_both_stages(tiny_benchmark, tmp_path):
    """UNIFY's stage-1 grounding and stage-2 sparsity losses both run, and a fusion weight is chosen on val."""
    out = tmp_path / "run"
    result = _train(["--config", "unify", "--dataset", str(tiny_benchmark), "--out", str(out), "--epochs", "2",
                     "--batch-size", "8"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr, result.stderr[-3000:]
    log = _log(out)
    assert "fusion_lambda" in log[-1]
    assert {"latent_R@1", "lexicon_R@1"} <= set(log[-1]["val"])


def test_torchrun_two_ranks_stay_in_step(tiny_benchmark, tmp_path):
    """Under torchrun (2 CPU processes, gloo, the global batch of 8 split 4 + 4) both ranks hold identical weights after every epoch and the loss
    falls."""
    out = tmp_path / "run"
    result = _train(["--config", "drl-wti", "--dataset", str(tiny_benchmark), "--out", str(out), "--epochs", "2",
                     "--batch-size", "8"], {"OMP_NUM_THREADS": "1"}, torchrun=2)
    assert result.returncode == 0, result.stderr[-3000:]
    log = _log(out)
    for record in log:
        assert record["world_size"] == 2
        a, b = record["param_checksums"]
        assert a == pytest.approx(b, rel=0, abs=1e-9)
    assert log[-1]["losses"][-1] < log[0]["losses"][0]


def _gather_worker(rank: int, rendezvous: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from tvr_demo.training.train import gather_batch

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    weights = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    gathered = gather_batch(x)
    ((gathered * weights).sum() * (rank + 1)).backward()  # each rank's loss differs, as its own batch would
    torch.save({"gathered": gathered.detach(), "grad": x.grad}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_gather_backward_returns_only_the_local_slice(tmp_path):
    """DRL's AllGather: rank r's features get rank r's slice of ITS OWN loss gradient, (r + 1) * weights[2r:2r+2];
    a summing gather (torch.distributed.nn) would give 3 * weights[2r:2r+2] on both ranks."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    weights = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got["gathered"], torch.tensor([[1.0] * 3] * 2 + [[2.0] * 3] * 2))
        assert torch.equal(got["grad"], (rank + 1) * weights[2 * rank : 2 * rank + 2])


def test_drl_init_starts_the_weight_heads_near_uniform():
    """DRL's init: the weight heads' Linear weights have std 0.02 and zero biases, so the first token weights are
    within 5% of uniform; CLIP's own tensors are untouched by it."""
    import torch

    from tests.helpers import tiny_config
    from tvr_demo.models import TVRModel

    torch.manual_seed(0)
    model = TVRModel(tiny_config(interaction="wti"))
    clip_before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    model.init_drl_modules()
    for head in (model.text_weight_fc, model.video_weight_fc):
        for layer in (head[0], head[2]):
            assert float(layer.weight.std()) == pytest.approx(0.02, rel=0.25)  # the last layer has 64 weights
            assert not layer.bias.any()
    assert all(torch.equal(v, clip_before[k]) for k, v in model.clip.state_dict().items())
    ids = torch.randint(1, 49000, (4, 32))
    with torch.no_grad():
        weights = model.encode_text(ids, torch.ones_like(ids)).weight_logits.softmax(-1)
    assert float((weights * 32 - 1).abs().max()) < 0.05


def test_padded_frames_are_zero_in_normalised_space():
    """DRL pads with zeros after normalisation: a padded frame is 0 everywhere, a real one is CLIP-normalised."""
    import numpy as np
    import torch

    from tvr_demo.training.train import TrainData, video_batch

    frames = np.zeros((1, 3, 3, 4, 4), dtype=np.uint8)
    frames[0, 0] = 255
    data = TrainData(frames, np.array([[1, 1, 0]]), torch.zeros(1, 2), torch.zeros(1, 2), [[0]], np.zeros(1), [])
    got, mask = video_batch(data, np.array([0]))
    assert mask.tolist() == [[1, 1, 0]]
    assert torch.allclose(got[0, 0, 0], torch.full((4, 4), (1 - 0.48145466) / 0.26862954))
    assert torch.allclose(got[0, 1, 1], torch.full((4, 4), -0.4578275 / 0.26130258))  # a real black frame
    assert not got[0, 2].any()
