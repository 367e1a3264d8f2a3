"""DRL's formulas (WTI, TI, DP, seqTransf masking) against plain loops over tokens and frames."""

from __future__ import annotations

import pytest
import torch
from helpers import build_model, tiny_config
from open_clip.transformer import QuickGELU
from reference import (
    loop_cosine,
    loop_dot,
    loop_normalize,
    loop_similarity,
    loop_softmax_weights,
    loop_wti,
    random_masks,
)

from tvr_demo.models import drl
from tvr_demo.models.backbone import get_tokenizer
from tvr_demo.retrieval.scoring import similarity_matrix, text_bank, video_bank


@pytest.fixture
def batch():
    """Unnormalised tokens and frames with ragged masks, and weight-head logits with garbage at padded positions."""
    g = torch.Generator().manual_seed(0)
    text = torch.randn(3, 6, 8, generator=g)
    video = torch.randn(4, 5, 8, generator=g)
    tmask = random_masks(3, 6, [6, 3, 2])
    vmask = random_masks(4, 5, [5, 1, 3, 2])
    t_logits = torch.randn(3, 6, generator=g) * 2
    v_logits = torch.randn(4, 5, generator=g) * 2
    return text, tmask, video, vmask, t_logits, v_logits


# ---------------------------------------------------------------- WTI / TI pieces


def test_masked_token_frame_cosine_matches_loop(batch):
    """s[a,b,t,v] is the dot product of valid pairs and exactly 0 wherever a token or frame is padding."""
    text, tmask, video, vmask, *_ = batch
    tn, vn = drl.l2_normalize(text), drl.l2_normalize(video)
    got = drl.masked_token_frame_cosine(tn, tmask, vn, vmask)
    assert got.shape == (3, 4, 6, 5)
    torch.testing.assert_close(got.double(), loop_cosine(tn, tmask, vn, vmask), atol=1e-6, rtol=0)


def test_l2_normalize_matches_loop(batch):
    """l2_normalize divides every row by its Euclidean norm."""
    text = batch[0]
    torch.testing.assert_close(drl.l2_normalize(text), loop_normalize(text), atol=1e-6, rtol=0)


def test_interaction_weights_softmax_over_valid_positions(batch):
    """WTI weights are a softmax over the valid positions only (padded logits are ignored, not just zeroed)."""
    _, tmask, _, vmask, t_logits, v_logits = batch
    for logits, mask in ((t_logits, tmask), (v_logits, vmask)):
        got = drl.interaction_weights(logits, mask)
        torch.testing.assert_close(got.double(), loop_softmax_weights(logits, mask), atol=1e-6, rtol=0)
        garbage = logits.masked_fill(mask == 0, 1e4)
        torch.testing.assert_close(drl.interaction_weights(garbage, mask), got)


def test_interaction_weights_uniform_for_ti(batch):
    """TI's weights are 1 / (number of valid positions) on valid positions and 0 on padding."""
    tmask = batch[1]
    got = drl.interaction_weights(None, tmask)
    for i in range(tmask.shape[0]):
        n = int(sum(tmask[i].tolist()))
        for j in range(tmask.shape[1]):
            assert float(got[i, j]) == pytest.approx(1.0 / n if tmask[i, j] else 0.0)


def test_wti_terms_and_similarity_match_loop(batch):
    """t2v, v2t, the argmaxes and S = (t2v + v2t) / 2 equal the official definition computed with loops."""
    text, tmask, video, vmask, t_logits, v_logits = batch
    tn, vn = drl.l2_normalize(text), drl.l2_normalize(video)
    tw, vw = drl.interaction_weights(t_logits, tmask), drl.interaction_weights(v_logits, vmask)
    t2v, v2t, t_arg, v_arg = loop_wti(tn, tmask, tw, vn, vmask, vw)
    terms = drl.wti_terms(drl.masked_token_frame_cosine(tn, tmask, vn, vmask), tw, vw)
    torch.testing.assert_close(terms.t2v.double(), t2v, atol=1e-6, rtol=0)
    torch.testing.assert_close(terms.v2t.double(), v2t, atol=1e-6, rtol=0)
    assert torch.equal(terms.token_argmax, t_arg)
    assert torch.equal(terms.frame_argmax, v_arg)
    score = drl.wti_similarity(tn, tmask, tw, vn, vmask, vw)
    torch.testing.assert_close(score.double(), (t2v + v2t) / 2, atol=1e-6, rtol=0)


def test_ti_equals_official_mean_over_valid_positions(batch):
    """TI: sum_t max_v s / n_t and sum_v max_t s / n_v, as the official code divides by the valid counts."""
    text, tmask, video, vmask, *_ = batch
    tn, vn = drl.l2_normalize(text), drl.l2_normalize(video)
    s = loop_cosine(tn, tmask, vn, vmask)
    expected = torch.zeros(3, 4, dtype=torch.float64)
    for a in range(3):
        for b in range(4):
            n_t, n_v = int(tmask[a].sum()), int(vmask[b].sum())
            t2v = sum(max(float(x) for x in s[a, b, t]) for t in range(6)) / n_t
            v2t = sum(max(float(x) for x in s[a, b, :, v]) for v in range(5)) / n_v
            expected[a, b] = (t2v + v2t) / 2
    got = drl.wti_similarity(
        tn, tmask, drl.interaction_weights(None, tmask), vn, vmask, drl.interaction_weights(None, vmask)
    )
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)


def test_negative_cosines_max_at_zero_from_masked_entries():
    """A token whose cosines to every valid frame are negative scores max 0 (a padded frame's masked 0), as official."""
    text = torch.tensor([[[1.0, 0.0]]])
    video = torch.tensor([[[-1.0, 0.2], [5.0, 5.0]]])  # frame 1 is padding
    tmask, vmask = torch.ones(1, 1, dtype=torch.long), torch.tensor([[1, 0]])
    terms = drl.wti_terms(
        drl.masked_token_frame_cosine(drl.l2_normalize(text), tmask, drl.l2_normalize(video), vmask),
        torch.ones(1, 1),
        torch.tensor([[1.0, 0.0]]),
    )
    assert float(terms.token_contrib[0, 0, 0]) == 0.0
    assert int(terms.token_argmax[0, 0, 0]) == 1


def test_wti_contributions_sum_to_score(batch):
    """WTITerms' per-token and per-frame contributions (what the explain view draws) add up to the loop's S, and
    wti_similarity returns that S too."""
    text, tmask, video, vmask, t_logits, v_logits = batch
    tn, vn = drl.l2_normalize(text), drl.l2_normalize(video)
    tw, vw = drl.interaction_weights(t_logits, tmask), drl.interaction_weights(v_logits, vmask)
    terms = drl.wti_terms(drl.masked_token_frame_cosine(tn, tmask, vn, vmask), tw, vw)
    s = loop_cosine(tn, tmask, vn, vmask)
    t2v, v2t, _, _ = loop_wti(tn, tmask, tw, vn, vmask, vw)
    for a in range(3):
        for b in range(4):
            for t in range(6):
                expected = float(tw[a, t]) * max(float(x) for x in s[a, b, t])
                assert float(terms.token_contrib[a, b, t]) == pytest.approx(expected, abs=1e-6)
            for v in range(5):
                expected = float(vw[b, v]) * max(float(x) for x in s[a, b, :, v])
                assert float(terms.frame_contrib[a, b, v]) == pytest.approx(expected, abs=1e-6)
            total = (sum(terms.token_contrib[a, b].tolist()) + sum(terms.frame_contrib[a, b].tolist())) / 2
            assert total == pytest.approx(float(t2v[a, b] + v2t[a, b]) / 2, abs=1e-6)
    torch.testing.assert_close(drl.wti_similarity(tn, tmask, tw, vn, vmask, vw).double(), (t2v + v2t) / 2,
                               atol=1e-6, rtol=0)


# ---------------------------------------------------------------- DP


def test_eot_features_pick_last_valid_position(batch):
    """The sentence feature is the token at position (number of valid tokens - 1): the EOT."""
    text, tmask, *_ = batch
    got = drl.eot_features(text, tmask)
    for i in range(3):
        last = max(j for j in range(6) if tmask[i, j])
        assert torch.equal(got[i], text[i, last])


def test_mean_pooled_frames_and_dp_match_loop(batch):
    """DP: cos(EOT, normalise(mean of the normalised valid frames)), loops over frames."""
    text, tmask, video, vmask, *_ = batch
    pooled = drl.mean_pooled_frames(video, vmask)
    for b in range(4):
        valid = [loop_normalize(video[b, v]) for v in range(5) if vmask[b, v]]
        mean = sum(valid) / len(valid)
        torch.testing.assert_close(pooled[b], loop_normalize(mean), atol=1e-6, rtol=0)
    eot = drl.l2_normalize(drl.eot_features(text, tmask))
    got = drl.dp_similarity(eot, pooled)
    for a in range(3):
        for b in range(4):
            assert float(got[a, b]) == pytest.approx(loop_dot(eot[a], pooled[b]), abs=1e-6)


# ---------------------------------------------------------------- the model: TVRModel.similarity and masking


@pytest.fixture(scope="module")
def tiny_wti():
    """tvr-tiny with seqTransf and WTI, random weights."""
    return build_model(tiny_config(interaction="wti"), seed=1)


@pytest.fixture(scope="module")
def inputs():
    """Three captions (different lengths) and three videos of 4 frames with 4, 2 and 1 valid frames."""
    tok = get_tokenizer()(
        ["a red circle moves left", "a dog", "two people are dancing on a stage at night"], 32
    )
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(3, 4, 3, 48, 48, generator=g)
    vmask = random_masks(3, 4, [4, 2, 1])
    return tok.ids, tok.mask, frames, vmask


@pytest.mark.parametrize("interaction", ["wti", "ti", "dp"])
def test_model_similarity_matches_loop(tiny_wti, inputs, interaction):
    """TVRModel.similarity on the model's own features equals the loop definition of WTI, TI and DP."""
    ids, tmask, frames, vmask = inputs
    with torch.no_grad():
        text, video = tiny_wti(ids, tmask, frames, vmask)
        got = tiny_wti.similarity(text, video, interaction).double()
    expected = loop_similarity(text.tokens, tmask, video.frames, vmask, interaction, text.weight_logits,
                               video.weight_logits)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_seq_transf_masking_equals_truncation(tiny_wti):
    """seqTransf with a frame mask gives, at valid frames, what the blocks give on the valid frames alone."""
    g = torch.Generator().manual_seed(4)
    frames = torch.randn(2, 5, 64, generator=g)
    mask = random_masks(2, 5, [5, 3])
    got = drl.seq_transf(frames, mask, tiny_wti.frame_position_embeddings, tiny_wti.transformerClip)
    with torch.no_grad():
        for i, n in enumerate([5, 3]):
            x = frames[i, :n] + tiny_wti.frame_position_embeddings.weight[:n]
            for block in tiny_wti.transformerClip.resblocks:
                x = block(x[None])[0]
            torch.testing.assert_close(got[i, :n], x + frames[i, :n], atol=1e-5, rtol=0)


def test_seq_transf_residual_skips_position_embedding(tiny_wti):
    """The output is blocks(x + positions) + x: with zeroed (identity) blocks it is 2x + positions, not 2x + 2 positions."""
    module = drl.TemporalTransformer(64, 1, 1)
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    frames = torch.randn(2, 3, 64)
    out = drl.seq_transf(frames, torch.ones(2, 3), tiny_wti.frame_position_embeddings, module)
    positions = tiny_wti.frame_position_embeddings.weight[:3].detach()
    torch.testing.assert_close(out, 2 * frames + positions)


def test_temporal_transformer_layer_norm_and_activation():
    """The temporal blocks use LayerNorm eps 1e-12 (DRL's TF-style LayerNorm) and QuickGELU."""
    module = drl.TemporalTransformer(64, 2, 1)
    for block in module.resblocks:
        assert block.ln_1.eps == 1e-12 and block.ln_2.eps == 1e-12
        assert isinstance(block.mlp.gelu, QuickGELU)


def test_padded_frames_change_nothing(tiny_wti, inputs):
    """Changing the pixels of padded frames leaves valid frame features, weights and every score unchanged."""
    ids, tmask, frames, vmask = inputs
    noisy = frames.clone()
    noisy[vmask == 0] = torch.randn_like(noisy[vmask == 0]) * 50
    with torch.no_grad():
        text, video = tiny_wti(ids, tmask, frames, vmask)
        _, video2 = tiny_wti(ids, tmask, noisy, vmask)
        assert not torch.allclose(video.frames, video2.frames)  # the padded outputs did change
        valid = vmask.bool()
        torch.testing.assert_close(video2.frames[valid], video.frames[valid], atol=1e-5, rtol=0)
        torch.testing.assert_close(video2.weight_logits[valid], video.weight_logits[valid], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            drl.interaction_weights(video2.weight_logits, vmask),
            drl.interaction_weights(video.weight_logits, vmask),
        )
        for interaction in ("wti", "ti", "dp"):
            torch.testing.assert_close(
                tiny_wti.similarity(text, video2, interaction),
                tiny_wti.similarity(text, video, interaction),
                atol=1e-6,
                rtol=0,
            )


def test_padded_token_ids_change_nothing(tiny_wti, inputs):
    """Changing the ids after EOT leaves valid token features, weights and every score unchanged (causal mask)."""
    ids, tmask, frames, vmask = inputs
    noisy = ids.clone()
    noisy[tmask == 0] = torch.randint(
        1, 49000, (int((tmask == 0).sum()),), generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        text, video = tiny_wti(ids, tmask, frames, vmask)
        text2, _ = tiny_wti(noisy, tmask, frames, vmask)
        assert not torch.allclose(text.tokens, text2.tokens)
        valid = tmask.bool()
        torch.testing.assert_close(text2.tokens[valid], text.tokens[valid], atol=1e-5, rtol=0)
        torch.testing.assert_close(text2.weight_logits[valid], text.weight_logits[valid], atol=1e-5, rtol=0)
        for interaction in ("wti", "ti", "dp"):
            torch.testing.assert_close(
                tiny_wti.similarity(text2, video, interaction),
                tiny_wti.similarity(text, video, interaction),
                atol=1e-6,
                rtol=0,
            )


@pytest.mark.parametrize(
    ("arch", "linears"),
    [
        (1, ["weight", "bias"]),
        (2, ["0.weight", "0.bias", "2.weight", "2.bias"]),
        (3, ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]),
    ],
)
def test_weight_head_layouts(arch, linears):
    """wti_arch 1 is one Linear; 2 is Linear-ReLU-Linear; 3 adds a hidden layer: the official key names."""
    head = drl.weight_head(16, arch)
    assert sorted(head.state_dict()) == sorted(linears)
    assert head(torch.randn(2, 5, 16)).shape == (2, 5, 1)


@pytest.mark.parametrize("interaction", ["wti", "ti", "dp"])
def test_blocked_scorer_equals_model_similarity(tiny_wti, inputs, interaction):
    """The engine's blocked scorer (banks computed once, texts in blocks) gives the loop's S from the same features."""
    ids, tmask, frames, vmask = inputs
    with torch.no_grad():
        text, video = tiny_wti(ids, tmask, frames, vmask)
        got = similarity_matrix(text_bank(tiny_wti, text), video_bank(tiny_wti, video), interaction, block=2)
    expected = loop_similarity(text.tokens, tmask, video.frames, vmask, interaction, text.weight_logits,
                               video.weight_logits)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)
