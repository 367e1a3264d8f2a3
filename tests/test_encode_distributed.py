"""`encode` under torchrun: each rank encodes its share of the clips into shards of its own, the store reads them all,
and every clip's features equal a single-process encode's."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tvr_demo.data import load_benchmark
from tvr_demo.data.synthetic import SyntheticConfig, generate
from tvr_demo.models import ModelConfig, TVRModel
from tvr_demo.models.backbone import clip_config
from tvr_demo.models.checkpoints import save_checkpoint
from tvr_demo.retrieval.store import FeatureStore

ROOT = Path(__file__).resolve().parent.parent


def _encode(args: list[str], cache: Path, torchrun: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "TVR_DEMO_CACHE": str(cache), "TVR_DEMO_ENCODE_CHUNK": "2", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    return subprocess.run([*launcher, "-m", "tvr_demo", "encode", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _features(cache: Path, bench) -> dict[str, dict[str, np.ndarray]]:
    """Each clip's stored arrays by file name, read back from the cache's store by the clip's content key."""
    (directory,) = (cache / "store").iterdir()
    store = FeatureStore(directory)
    keys = np.stack([np.frombuffer(hashlib.sha256(p.read_bytes()).digest(), np.uint8) for p in bench.video_paths])
    locations = store.locate(keys)
    assert (locations >= 0).all(), "a clip of the gallery is missing from the store"
    rows = store.gather(locations)
    return {p.name: {k: v[i] for k, v in rows.items()} for i, p in enumerate(bench.video_paths)}


def test_torchrun_encode_writes_a_shard_per_rank_and_matches_one_process(tmp_path):
    """Two gloo ranks each encode a share of the clips into their own shard; the store reads both, and each clip's
    features are those a single process stores."""
    data = generate(tmp_path / "bench", SyntheticConfig(seed=5, n_train=0, n_test=7, n_val=0), progress=False,
                    num_workers=1)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(TVRModel(ModelConfig(clip=clip_config("tvr-tiny"))), tmp_path / "ckpt")
    args = ["--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "test", "--device", "cpu"]
    distributed = _encode(args, tmp_path / "cache_ddp", torchrun=2)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    assert "rank 1" in distributed.stderr  # the second rank encoded its own share
    shards = sorted(p.name for p in (tmp_path / "cache_ddp").glob("store/*/shard-*"))
    assert shards == ["shard-r0-0000", "shard-r1-0000"]
    committed = [json.loads(p.read_text())["rows"] for p in sorted((tmp_path / "cache_ddp").glob(
        "store/*/shard-*/committed.json"))]
    assert committed == [4, 3]  # clips 0, 2, 4, 6 and 1, 3, 5
    report = json.loads(distributed.stdout)
    assert (report["videos"], report["encoded"], report["skipped"]) == (7, 7, [])  # rank 0 read rank 1's shard
    single = _encode(args, tmp_path / "cache_one")
    assert single.returncode == 0, single.stderr[-3000:]
    bench = load_benchmark(data, "test")
    a, b = _features(tmp_path / "cache_ddp", bench), _features(tmp_path / "cache_one", bench)
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            np.testing.assert_allclose(a[name][key].astype(np.float32), b[name][key].astype(np.float32), rtol=0,
                                       atol=1e-6, err_msg=f"{name} {key}")
