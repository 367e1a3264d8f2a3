"""UNIFY's fusion weight is the grid value whose fused scores rank best on validation (t2v + v2t R@1), against a loop
written from tvr_demo/models/config.py's description: each branch standardised over the query's gallery, ties
counted against the ground truth (metrics.py's pessimistic rule), the first best lambda on the grid."""

from __future__ import annotations

import numpy as np
import pytest

from tvr_demo.train import choose_fusion_lambda

GRID = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]


def _z(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    std = (sum((x - mean) ** 2 for x in row) / (len(row) - 1)) ** 0.5
    return [(x - mean) / std for x in row]


def _r1(fused: list[list[float]]) -> float:
    """Percent of rows whose diagonal entry beats every other entry strictly."""
    hits = sum(all(row[i] > x for j, x in enumerate(row) if j != i) for i, row in enumerate(fused))
    return 100.0 * hits / len(fused)


def _loop_choice(latent: np.ndarray, lexicon: np.ndarray) -> float:
    n = latent.shape[0]
    best, best_lam = -1.0, None
    for lam in GRID:
        t2v = [[a + lam * b for a, b in zip(_z(list(latent[q])), _z(list(lexicon[q])), strict=True)]
               for q in range(n)]
        v2t = [[a + lam * b for a, b in zip(_z(list(latent[:, v])), _z(list(lexicon[:, v])), strict=True)]
               for v in range(n)]
        total = _r1(t2v) + _r1(v2t)
        if total > best:
            best, best_lam = total, lam
    return best_lam


@pytest.mark.parametrize("seed", range(6))
def test_the_chosen_lambda_is_the_loop_s_best(seed):
    rng = np.random.default_rng(seed)
    n = 24
    truth = np.eye(n)
    latent = truth * rng.uniform(0.0, 1.5) + rng.normal(size=(n, n))
    lexicon = truth * rng.uniform(0.0, 3.0) + rng.normal(size=(n, n)) * rng.uniform(0.5, 2.0)
    assert choose_fusion_lambda(latent.astype(np.float32), lexicon.astype(np.float32)) == _loop_choice(latent, lexicon)


def test_a_useless_lexicon_gets_no_weight_and_a_decisive_one_the_most():
    """Hand-made: the latent branch alone ranks every diagonal first, so lambda 0 (the first best) is chosen. When the
    latent branch puts one wrong video first and the lexicon the right one, both leads are about equal once
    standardised, so the first grid value above 1 is the smallest that lets the lexicon win every query."""
    n = 6
    right = np.eye(n) + 0.01 * np.arange(n)[None, :]
    noise = np.random.default_rng(0).normal(size=(n, n))
    assert choose_fusion_lambda(right, noise) == 0.0
    wrong = np.roll(np.eye(n), 1, axis=1)
    assert choose_fusion_lambda(wrong, 5 * np.eye(n) + 0.1 * noise) == 1.5
