"""`encode` under torchrun: each rank encodes a share of the chunks, rank 0 merges, and the cache equals a
single-process encode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tvr_demo.data.synthetic import SyntheticConfig, generate
from tvr_demo.models import ModelConfig, TVRModel
from tvr_demo.models.backbone import clip_config
from tvr_demo.models.checkpoints import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _encode(args: list[str], cache: Path, torchrun: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "TVR_DEMO_CACHE": str(cache), "TVR_DEMO_ENCODE_CHUNK": "2", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    return subprocess.run([*launcher, "-m", "tvr_demo", "encode", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_torchrun_encode_shards_chunks_and_matches_one_process(tmp_path):
    """Two ranks split the chunks between them; the merged cache is the one a single process writes."""
    data = generate(tmp_path / "bench", SyntheticConfig(seed=5, n_train=0, n_test=7, n_val=0), progress=False,
                    num_workers=1)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(TVRModel(ModelConfig(clip=clip_config("tvr-tiny"))), tmp_path / "ckpt")
    args = ["--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "test", "--device", "cpu"]
    distributed = _encode(args, tmp_path / "cache_ddp", torchrun=2)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    assert "rank 1" in distributed.stderr  # the second rank encoded its own share
    single = _encode(args, tmp_path / "cache_one")
    assert single.returncode == 0, single.stderr[-3000:]
    (a,) = (tmp_path / "cache_ddp" / "gallery").glob("*[!.tmp]/videos.safetensors")
    (b,) = (tmp_path / "cache_one" / "gallery").glob("*[!.tmp]/videos.safetensors")
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], rtol=0, atol=1e-6)
