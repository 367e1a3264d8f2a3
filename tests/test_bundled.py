"""The bundled checkpoints, as a user gets them from a clone: each loads through the registry and reproduces, on a
freshly generated test split, the metrics its registry entry and the README table state (to the first decimal)."""

from __future__ import annotations

import pytest

from tvr_demo.data import load_benchmark
from tvr_demo.models.checkpoints import WEIGHTS_FILE, bundled_registry, load_checkpoint, sha256_of
from tvr_demo.paths import BUNDLED_CHECKPOINT_DIR, PROJECT_ROOT
from tvr_demo.retrieval.engine import Engine

METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR")
REGISTRY = bundled_registry()


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    """The default benchmark's test split, generated here: each split has its own random stream, so skipping the
    training and validation splits leaves the 1,000 test clips as the app's default dataset has them."""
    from tvr_demo.data.synthetic import SyntheticConfig, generate

    return generate(tmp_path_factory.mktemp("synthetic"), SyntheticConfig(n_train=0, n_val=0), progress=False)


def test_the_registry_lists_the_five_papers_models():
    assert {"meanp", "drl-ti", "drl-wti", "drl-wti-cdcr", "unify"} <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_bundled_checkpoint_reproduces_its_registry_and_readme_numbers(name, test_split, tmp_path):
    entry = REGISTRY[name]
    assert sha256_of(BUNDLED_CHECKPOINT_DIR / entry["path"] / WEIGHTS_FILE) == entry["sha256"]
    engine = Engine(load_checkpoint(name), load_benchmark(test_split, "test"), cache_root=tmp_path, progress=False)
    result = engine.evaluate()
    readme = (PROJECT_ROOT / "README.md").read_text()
    branches = ("latent", "lexicon", "fused") if engine.is_unify else (None,)
    for branch in branches:
        got = result if branch is None else result[branch]
        want = entry["metrics"] if branch is None else entry["metrics"][branch]
        for direction in ("t2v", "v2t"):
            for metric in METRICS:
                assert got[direction][metric] == pytest.approx(want[direction][metric], abs=0.05), (
                    name, branch, direction, metric)
        row = " | ".join(f"{got[d][m]:.1f}" for d in ("t2v", "v2t") for m in METRICS)
        assert row in readme.replace("**", ""), f"README table lacks {name} {branch or ''}: {row}"


def test_readme_wti_weight_table_matches_the_bundled_models(test_split):
    """The README's table of WTI text weights is what bench/results.py computes from the bundled checkpoints."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_results", PROJECT_ROOT / "bench" / "results.py")
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    rows = results.weight_rows(test_split)
    assert set(rows) == {"drl-wti", "drl-wti-cdcr"}
    table = results.weight_markdown(rows)
    readme = (PROJECT_ROOT / "README.md").read_text()
    for line in table.splitlines()[2:]:
        assert line in readme, f"README lacks the WTI weight row: {line}"
