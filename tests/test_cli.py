"""`python -m tvr_demo checkpoints` and `evaluate` (with --dsl), as a user reads them, against the registry file
and loops over the engine's score matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_engine import loop_dual_softmax, loop_metrics, loop_t2v_ranks, loop_v2t_ranks

from tvr_demo.cli import main
from tvr_demo.models.checkpoints import REGISTRY_FILE


def test_checkpoints_lists_the_registry_then_the_users_collection(tiny_app, monkeypatch, capsys):
    user_root = Path(tiny_app.models["drl-wti"]).parent  # the tiny session's checkpoints/ folder
    monkeypatch.setenv("TVR_DEMO_CHECKPOINTS", str(user_root))
    assert main(["checkpoints", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    registry = json.loads(REGISTRY_FILE.read_text())
    assert [(e["name"], e["source"]) for e in entries] == (
        [(name, "bundled") for name in registry] + [("drl-wti", "user"), ("unify", "user")])
    for e in entries[:len(registry)]:
        assert e["metrics"]["t2v"]["R@1"] == registry[e["name"]]["metrics"]["t2v"]["R@1"]
    assert main(["checkpoints"]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = next(iter(registry))
    assert lines[0].startswith(first) and f"R@1 {registry[first]['metrics']['t2v']['R@1']:.1f}" in lines[0]
    assert lines[-1].split()[:2] == ["unify", "user"]
    monkeypatch.setenv("TVR_DEMO_CHECKPOINTS", str(user_root / "missing"))
    assert main(["checkpoints", "--json"]) == 0
    assert [e["source"] for e in json.loads(capsys.readouterr().out)] == ["bundled"] * len(registry)


@pytest.mark.parametrize("model", ["drl-wti", "unify"])
def test_evaluate_prints_the_metrics_of_the_score_matrix(tiny_app, tmp_path, monkeypatch, capsys, model):
    monkeypatch.setenv("TVR_DEMO_CACHE", str(tiny_app.cache_root))
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--checkpoint", tiny_app.models[model], "--dataset", tiny_app.dataset, "--split", "test",
                 "--device", "cpu", "--dsl", "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    engine = tiny_app.engine(model)
    cv = [int(v) for v in engine.bench.caption_video]
    top = "fused" if engine.is_unify else "latent"
    sim = engine.matrices[top]
    v2t_sim = engine.matrices.direction(top, "v2t")
    assert printed["t2v"] == pytest.approx(loop_metrics(loop_t2v_ranks(sim, cv)))
    assert printed["v2t"] == pytest.approx(loop_metrics(loop_v2t_ranks(v2t_sim, cv)))
    assert printed["dsl"]["t2v"] == pytest.approx(loop_metrics(loop_t2v_ranks(loop_dual_softmax(sim, 0), cv)))
    assert printed["dsl"]["v2t"] == pytest.approx(loop_metrics(loop_v2t_ranks(loop_dual_softmax(v2t_sim, 1), cv)))
    if engine.is_unify:
        lexicon = engine.matrices["lexicon"]
        assert printed["lexicon"]["t2v"] == pytest.approx(loop_metrics(loop_t2v_ranks(lexicon, cv)))
    assert printed["skipped_videos"] == []
    assert np.isfinite(sim).all()


def test_evaluate_on_a_missing_dataset_is_one_clear_line(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", "drl-wti", "--dataset", str(tmp_path / "nowhere"), "--device",
                 "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
