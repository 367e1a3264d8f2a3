"""Training objectives: InfoNCE and CDCR 1-3 against loops written from the official code's definition, and a sweep
over every model variant (shapes, no NaN, a gradient for every parameter)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import build_model, tiny_config
from reference import loop_normalize, loop_similarity, loop_softmax_weights

from tvr_demo.models import UnifyConfig, drl
from tvr_demo.models.backbone import get_tokenizer
from tvr_demo.models.config import CDCRConfig
from tvr_demo.models.losses import (
    cdcr_correlation,
    cross_correlation,
    decorrelation_loss,
    pooled_correlation,
    symmetric_infonce,
)
from tvr_demo.models.unify import bag_of_words
from tvr_demo.training.objective import training_loss, unify_stage

# ---------------------------------------------------------------- loop references


def loop_standardize(rows: list[list[float]]) -> list[list[float]]:
    """Each column minus its mean, divided by its unbiased standard deviation (torch's std, Barlow Twins)."""
    n, d = len(rows), len(rows[0])
    out = [[0.0] * d for _ in range(n)]
    for j in range(d):
        col = [r[j] for r in rows]
        mean = sum(col) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in col) / (n - 1))
        for i in range(n):
            out[i][j] = (col[i] - mean) / std
    return out


def loop_correlation(x_rows, y_rows, weights=None, denominator=None) -> torch.Tensor:
    """c[p][q] = sum_n w_n za[n][p] zb[n][q] / denominator (N by default)."""
    za, zb = loop_standardize(x_rows), loop_standardize(y_rows)
    n, d = len(za), len(za[0])
    weights = weights or [1.0] * n
    denominator = denominator or n
    c = torch.zeros(d, d, dtype=torch.float64)
    for k in range(n):
        for p in range(d):
            for q in range(d):
                c[p, q] += weights[k] * za[k][p] * zb[k][q]
    return c / denominator


def loop_decorrelation(c: torch.Tensor, alpha1: float, alpha2: float) -> float:
    on = sum((float(c[i, i]) - 1) ** 2 for i in range(c.shape[0]))
    off = sum(float(c[i, j]) ** 2 for i in range(c.shape[0]) for j in range(c.shape[1]) if i != j)
    return alpha1 * on + alpha2 * off


def loop_matched_rows(text, tmask, video, vmask, tw, vw):
    """For every positive pair i: each valid token with its argmax frame (masked cosines are 0 and take part in the
    max, as in the official code), each valid frame with its argmax token; the WTI weight of each row."""
    t_rows, t_frames, t_w, v_rows, v_tokens, v_w = [], [], [], [], [], []
    n, t_len, v_len = text.shape[0], text.shape[1], video.shape[1]

    def s(i, t, v):
        if not (tmask[i, t] and vmask[i, v]):
            return 0.0
        return sum(a * b for a, b in zip(text[i, t].tolist(), video[i, v].tolist(), strict=True))

    for i in range(n):
        for t in range(t_len):
            if tmask[i, t]:
                row = [s(i, t, v) for v in range(v_len)]
                t_rows.append(text[i, t].tolist())
                t_frames.append(video[i, row.index(max(row))].tolist())
                t_w.append(float(tw[i, t]))
        for v in range(v_len):
            if vmask[i, v]:
                col = [s(i, t, v) for t in range(t_len)]
                v_rows.append(video[i, v].tolist())
                v_tokens.append(text[i, col.index(max(col))].tolist())
                v_w.append(float(vw[i, v]))
    return (t_rows, t_frames, t_w), (v_rows, v_tokens, v_w)


@pytest.fixture
def pairs():
    """Four matched pairs of L2-normalised tokens / frames (D = 6) with ragged masks and garbage at padding."""
    g = torch.Generator().manual_seed(11)
    text = drl.l2_normalize(torch.randn(4, 5, 6, generator=g))
    video = drl.l2_normalize(torch.randn(4, 4, 6, generator=g))
    tmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    vmask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    tw = drl.interaction_weights(torch.randn(4, 5, generator=g), tmask)
    vw = drl.interaction_weights(torch.randn(4, 4, generator=g), vmask)
    return text, tmask, video, vmask, tw, vw


# ---------------------------------------------------------------- InfoNCE


def loop_infonce(logits: torch.Tensor) -> float:
    """(CrossEn(S) + CrossEn(S^T)) / 2 with CrossEn = -mean_i log softmax(S_i)_i, the official loss, in loops."""

    def cross_en(m):
        total = 0.0
        for i in range(m.shape[0]):
            row = m[i].tolist()
            z = max(row)
            total -= row[i] - z - math.log(sum(math.exp(x - z) for x in row))
        return total / m.shape[0]

    return (cross_en(logits) + cross_en(logits.T)) / 2


def test_symmetric_infonce_matches_official_cross_entropy():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 3
    assert float(symmetric_infonce(logits)) == pytest.approx(loop_infonce(logits), abs=1e-5)


# ---------------------------------------------------------------- CDCR


def test_cross_correlation_and_decorrelation_loss_match_loop():
    """c = standardised X^T Y / N; loss = alpha1 sum (c_ii - 1)^2 + alpha2 sum_{i != j} c_ij^2."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    c = cross_correlation(x, y)
    expected = loop_correlation(x.tolist(), y.tolist())
    torch.testing.assert_close(c.double(), expected, atol=1e-5, rtol=0)
    for alpha1, alpha2 in ((1.0, 0.06), (1.0, 0.0), (0.5, 2.0)):
        got = float(decorrelation_loss(c, alpha1, alpha2))
        assert got == pytest.approx(loop_decorrelation(expected, alpha1, alpha2), abs=1e-4)


def test_alpha2_zero_turns_off_decorrelation():
    """With alpha2 = 0 (every shipped DRL command) the off-diagonal entries do not count at all."""
    c = torch.eye(3) * 0.5
    off = c + torch.tensor([[0.0, 9.0, 9.0], [9.0, 0.0, 9.0], [9.0, 9.0, 0.0]])
    assert float(decorrelation_loss(off, 1.0, 0.0)) == pytest.approx(float(decorrelation_loss(c, 1.0, 0.0)))
    assert float(decorrelation_loss(off, 1.0, 0.06)) > float(decorrelation_loss(c, 1.0, 0.06))


def test_cdcr_variant1_matches_loop_with_seeded_generator(pairs):
    """Variant 1: one random valid token and frame per pair (randint(0, 10000) % length, as official), same draws."""
    text, tmask, video, vmask, *_ = pairs
    got = cdcr_correlation(1, text, tmask, video, vmask, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t_draw = torch.randint(0, 10000, (4,), generator=g).tolist()
    v_draw = torch.randint(0, 10000, (4,), generator=g).tolist()
    t_rows, v_rows = [], []
    for i in range(4):
        t_rows.append(text[i, t_draw[i] % int(sum(tmask[i].tolist()))].tolist())
        v_rows.append(video[i, v_draw[i] % int(sum(vmask[i].tolist()))].tolist())
    torch.testing.assert_close(got.double(), loop_correlation(t_rows, v_rows), atol=1e-5, rtol=0)


def test_cdcr_variant1_never_picks_padding(pairs):
    """Whatever the seed, variant 1 draws valid positions only: NaN at every padded position never reaches c."""
    text, tmask, video, vmask, *_ = pairs
    text, video = (
        text.masked_fill(tmask[..., None] == 0, float("nan")),
        video.masked_fill(vmask[..., None] == 0, float("nan")),
    )
    for seed in range(20):
        c = cdcr_correlation(1, text, tmask, video, vmask, generator=torch.Generator().manual_seed(seed))
        assert torch.isfinite(c).all()


def test_cdcr_variant2_matches_loop(pairs):
    """Variant 2: tokens with their argmax frames and frames with their argmax tokens, c = (c1 + c2) / 2."""
    text, tmask, video, vmask, tw, vw = pairs
    (t, tf, _), (v, vt, _) = loop_matched_rows(text, tmask, video, vmask, tw, vw)
    expected = (loop_correlation(t, tf) + loop_correlation(v, vt)) / 2
    got = cdcr_correlation(2, text, tmask, video, vmask, tw, vw)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_cdcr_variant3_matches_loop(pairs):
    """Variant 3: each row's outer product weighted by its WTI weight, summed and divided by the batch size."""
    text, tmask, video, vmask, tw, vw = pairs
    (t, tf, t_w), (v, vt, v_w) = loop_matched_rows(text, tmask, video, vmask, tw, vw)
    expected = (loop_correlation(t, tf, t_w, denominator=4) + loop_correlation(v, vt, v_w, denominator=4)) / 2
    got = cdcr_correlation(3, text, tmask, video, vmask, tw, vw)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_cdcr_argmax_of_all_negative_row_is_a_padded_frame():
    """A token with only negative cosines is paired with a padded frame (its masked 0 wins), as officially."""
    text = torch.tensor([[[1.0, 0.0, 0.0], [-0.6, 0.8, 0.0]], [[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]]])
    video = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]]])
    tmask = torch.ones(2, 2, dtype=torch.long)
    vmask = torch.tensor([[1, 0], [1, 1]])
    tw, vw = drl.interaction_weights(None, tmask), drl.interaction_weights(None, vmask)
    (t, tf, _), (v, vt, _) = loop_matched_rows(text, tmask, video, vmask, tw, vw)
    assert (
        tf[0] == video[0, 1].tolist()
    )  # token 0 of pair 0: cos -1 with frame 0, masked 0 with padded frame 1
    c = cdcr_correlation(2, text, tmask, video, vmask, tw, vw)
    expected = (loop_correlation(t, tf) + loop_correlation(v, vt)) / 2
    torch.testing.assert_close(c.double(), expected, atol=1e-5, rtol=0)
    other = video.clone()
    other[0, 1] = torch.tensor([0.0, 1.0, 0.0])
    assert not torch.allclose(cdcr_correlation(2, text, tmask, other, vmask, tw, vw), c)


def test_pooled_correlation_for_dp():
    """DP's CDCR correlates the pooled text and video features of the matched pairs."""
    g = torch.Generator().manual_seed(2)
    t, v = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    torch.testing.assert_close(
        pooled_correlation(t, v).double(), loop_correlation(t.tolist(), v.tolist()), atol=1e-5, rtol=0
    )


# ---------------------------------------------------------------- the training objective


def tiny_batch(n: int = 3, frames: int = 4):
    tok = get_tokenizer()(["a red circle moves left", "a blue square", "two dogs play in the snow"][:n], 32)
    g = torch.Generator().manual_seed(9)
    video = torch.randn(n, frames, 3, 48, 48, generator=g)
    vmask = torch.ones(n, frames, dtype=torch.long)
    vmask[1, 2:] = 0
    return tok.ids, tok.mask, video, vmask


def test_training_loss_is_official_composition():
    """WTI + CDCR 3: loss = InfoNCE(scale * S) + lambda * (alpha1 on + alpha2 off) on the WTI-weighted correlation,
    every piece (S, the weights, the matched rows, the correlation, InfoNCE) computed by the loops in this file and
    tests/reference.py from the model's raw features."""
    model = build_model(
        tiny_config(interaction="wti", cdcr=CDCRConfig(variant=3, alpha2=0.06, weight=0.5)), seed=2
    )
    ids, tmask, video, vmask = tiny_batch()
    with torch.no_grad():
        text, vid = model(ids, tmask, video, vmask)
        terms = training_loss(model, text, vid)
    scale = min(math.exp(float(model.clip.logit_scale)), 100.0)
    s = loop_similarity(text.tokens, tmask, vid.frames, vmask, "wti", text.weight_logits, vid.weight_logits)
    tw, vw = loop_softmax_weights(text.weight_logits, tmask), loop_softmax_weights(vid.weight_logits, vmask)
    (t, tf, t_w), (v, vt, v_w) = loop_matched_rows(loop_normalize(text.tokens), tmask, loop_normalize(vid.frames),
                                                   vmask, tw, vw)
    n = ids.shape[0]
    c = (loop_correlation(t, tf, t_w, denominator=n) + loop_correlation(v, vt, v_w, denominator=n)) / 2
    expected = loop_infonce(scale * s) + 0.5 * loop_decorrelation(c, 1.0, 0.06)
    assert float(terms.total) == pytest.approx(expected, abs=1e-4)
    assert set(terms.parts) == {"contrastive", "cdcr"}


def test_unify_stage_schedule():
    """Stage 1 before stage1_fraction with no FLOPS; then stage 2 with a quadratic ramp that reaches 1 half way."""
    assert unify_stage(0.1, 0.3) == (1, 0.0)
    assert unify_stage(0.3, 0.3) == (2, 0.0)
    stage, ramp = unify_stage(0.3 + 0.7 / 4, 0.3)
    assert stage == 2 and ramp == pytest.approx(0.25)
    assert unify_stage(0.9, 0.3) == (2, 1.0)


SWEEP = [
    ({"interaction": "wti"}, 0.0),
    ({"interaction": "ti"}, 0.0),
    ({"interaction": "dp"}, 0.0),
    ({"interaction": "wti", "temporal": "meanP"}, 0.0),
    ({"interaction": "ti", "temporal": "meanP"}, 0.0),
    ({"interaction": "dp", "temporal": "meanP"}, 0.0),
    ({"interaction": "wti", "wti_arch": 1}, 0.0),
    ({"interaction": "wti", "wti_arch": 3}, 0.0),
    ({"interaction": "wti", "cdcr": CDCRConfig(variant=1)}, 0.0),
    ({"interaction": "wti", "cdcr": CDCRConfig(variant=2)}, 0.0),
    ({"interaction": "wti", "cdcr": CDCRConfig(variant=3)}, 0.0),
    ({"interaction": "ti", "cdcr": CDCRConfig(variant=3)}, 0.0),
    ({"interaction": "dp", "cdcr": CDCRConfig(variant=1)}, 0.0),
    ({"interaction": "dp", "unify": UnifyConfig(latent="dp")}, 0.1),
    ({"interaction": "dp", "unify": UnifyConfig(latent="dp")}, 0.9),
    ({"interaction": "wti", "unify": UnifyConfig(latent="wti")}, 0.1),
    ({"interaction": "wti", "unify": UnifyConfig(latent="wti")}, 0.9),
    ({"interaction": "dp", "temporal": "meanP", "unify": UnifyConfig(latent="dp")}, 0.9),
]


@pytest.mark.parametrize(
    ("fields", "progress"),
    SWEEP,
    ids=lambda x: (
        str(x)
        if not isinstance(x, dict)
        else "-".join(f"{k}={getattr(v, 'variant', getattr(v, 'latent', v))}" for k, v in x.items())
    ),
)
def test_every_variant_trains(fields, progress):
    """Forward shapes, no NaN, and a non-zero gradient for every parameter from training_loss."""
    model = build_model(tiny_config(**fields), seed=3).train()
    ids, tmask, video, vmask = tiny_batch()
    text, vid = model(ids, tmask, video, vmask)
    assert text.tokens.shape == (3, 32, 64) and vid.frames.shape == (3, 4, 64)
    sim = model.similarity(text, vid)
    assert sim.shape == (3, 3) and torch.isfinite(sim).all()
    if model.config.unify is not None:
        assert text.lexicon_logits.shape == vid.lexicon_logits.shape == (3, 49408)
    words = bag_of_words(ids, 49408) if model.config.unify is not None else None
    terms = training_loss(model, text, vid, video_words=words, progress=progress)
    assert torch.isfinite(terms.total)
    if model.config.unify is not None:
        assert ("bow" in terms.parts) == (progress < 0.3) and ("flops" in terms.parts) == (progress >= 0.3)
    terms.total.backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None], (
        "parameters outside the loss's graph"
    )
    # The last bias of a WTI weight head shifts every logit of a softmax equally, so its gradient is zero by design
    # (the official heads have the same property); every other parameter must get a non-zero gradient.
    shift_invariant = {"text_weight_fc.bias", "video_weight_fc.bias"} | {
        f"{side}_weight_fc.{2 * (model.config.wti_arch - 1)}.bias" for side in ("text", "video")
    }
    zero = [n for n, p in model.named_parameters() if n not in shift_invariant and not p.grad.abs().sum() > 0]
    assert not zero, f"parameters with an all-zero gradient: {zero}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_unify_with_default_interaction_has_no_dead_parameters():
    """A UNIFY config left at the default interaction ("wti") with latent "dp" builds no unused WTI weight heads."""
    model = build_model(tiny_config(unify=UnifyConfig(latent="dp")), seed=3).train()
    ids, tmask, video, vmask = tiny_batch()
    text, vid = model(ids, tmask, video, vmask)
    training_loss(model, text, vid, video_words=bag_of_words(ids, 49408), progress=0.9).total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters that never get a gradient: {no_grad}"
