"""What training reports at the end of an epoch (tvr_demo/training/train.py), against loops: UNIFY's fusion weight is the grid
value whose fused scores rank best on validation (t2v + v2t R@1; each branch standardised over the query's gallery,
ties counted against the ground truth, the first best lambda on the grid), and validation R@1 is the first captions'
text-to-video recall."""

from __future__ import annotations

import numpy as np
import pytest

from tvr_demo.training.train import choose_fusion_lambda

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


def test_validation_r1_is_the_first_captions_recall_by_the_design_note(tmp_path, monkeypatch):
    """`validate` reports text-to-video R@1 over each video's FIRST caption, scored by WTI as drl.md defines it
    (reference loop over the model's own unnormalised features) with ties counted against the ground truth."""
    import torch
    from reference import loop_pessimistic_rank, loop_similarity

    from tvr_demo.data.synthetic import SyntheticConfig, generate
    from tvr_demo.data.video import normalize_frames
    from tvr_demo.models.checkpoints import load_checkpoint
    from tvr_demo.training.train import prepare_data, validate

    monkeypatch.setenv("TVR_DEMO_CACHE", str(tmp_path / "cache"))
    root = generate(tmp_path / "bench", SyntheticConfig(seed=5, n_train=40, n_test=0, n_val=0), progress=False,
                    num_workers=1)
    model = load_checkpoint("drl-wti", torch.device("cpu")).model  # trained: its R@1 is far from 0 and from 100
    data = prepare_data(root, "train", model.config, progress=False)  # 5 captions a video
    data.captions_of = [rows[::-1] for rows in data.captions_of]  # the first caption is now another row
    got = validate(model, data)["R@1"]

    first = [rows[0] for rows in data.captions_of]
    with torch.no_grad():
        text = model.encode_text(data.caption_ids[first], data.caption_mask[first])
        masks = torch.from_numpy(np.ascontiguousarray(data.masks))
        video = model.encode_video(normalize_frames(torch.from_numpy(np.array(data.frames)), masks), masks)
    sim = loop_similarity(text.tokens.double(), text.mask, video.frames.double(), video.mask, "wti",
                          text.weight_logits.double(), video.weight_logits.double())
    expected = 100.0 * sum(loop_pessimistic_rank(sim[q].tolist(), [q]) == 0 for q in range(len(first))) / len(first)
    assert 0 < expected < 100
    assert got == pytest.approx(expected)
