"""Where a WTI model puts its text weight (`<eot>`, content words, fillers), and the Walkthrough's sentences about it,
checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvr_demo.evaluation.token_weights import caption_weights, summarize, text_weight_stats, token_kind
from tvr_demo.ui.walkthrough_tab import weight_sentence

TOKENS = ["<sot>", "a", "red", "circle", "moves", "to", "the", "left", ".", "<eot>"]


def test_token_kinds():
    assert [token_kind(t) for t in TOKENS] == ["sot", "filler", "content", "content", "content", "filler", "filler",
                                               "content", "other", "eot"]


def test_caption_weights_by_hand():
    w = [0.02, 0.01, 0.10, 0.12, 0.08, 0.03, 0.02, 0.14, 0.04, 0.44]
    cw = caption_weights(TOKENS, w)
    assert cw.eot == pytest.approx(0.44)
    assert cw.content_mean == pytest.approx((0.10 + 0.12 + 0.08 + 0.14) / 4)
    assert cw.filler_mean == pytest.approx((0.01 + 0.03 + 0.02) / 3)
    assert cw.content_outweighs_fillers is True


def test_summary_by_hand():
    rows = [caption_weights(TOKENS, w) for w in (
        [0.0, 0.01, 0.1, 0.1, 0.1, 0.01, 0.01, 0.1, 0.0, 0.57],  # eot 0.57, content 0.1 > filler 0.01
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.95],  # eot 0.95, content 0 = filler 0: not outweighing
        [0.0, 0.2, 0.05, 0.05, 0.05, 0.2, 0.2, 0.05, 0.0, 0.2],  # eot 0.2, fillers 0.2 > content 0.05
    )]
    stats = summarize(rows)
    assert stats.captions == 3
    assert stats.median_eot == pytest.approx(0.57)
    assert stats.share_eot_above_09 == pytest.approx(100 / 3)
    assert stats.share_content_over_fillers == pytest.approx(100 / 3)
    assert stats.median_content == pytest.approx(0.05)
    assert stats.median_filler == pytest.approx(0.01)


def test_stats_of_a_model_use_its_softmax_weights():
    """A model whose text head gives <eot> a logit of log(9) over n - 1 zeros: <eot> weighs 9 / (n + 8)."""
    from tests.helpers import tiny_config
    from tvr_demo.models import TVRModel
    from tvr_demo.models.backbone import get_tokenizer

    torch.manual_seed(0)
    model = TVRModel(tiny_config(interaction="wti")).eval()
    tok = get_tokenizer()(["a red circle moves to the left", "a blue square spins"])
    eot_logit = np.log(9.0)

    def fake_logits(ids, mask):  # replaces the head's output, position by position
        feats = TVRModel.encode_text(model, ids, mask)
        last = mask.sum(1) - 1
        logits = torch.zeros_like(feats.weight_logits)
        logits[torch.arange(len(ids)), last] = eot_logit
        feats.weight_logits = logits
        return feats

    model.encode_text = fake_logits
    stats = text_weight_stats(model, tok.ids, tok.mask)
    lengths = tok.mask.sum(1).tolist()  # 9 and 6 tokens with SOT and EOT
    assert stats.median_eot == pytest.approx(np.median([9 / (n + 8) for n in lengths]))
    assert stats.share_content_over_fillers == 0.0  # content and fillers weigh the same: not more


def test_walkthrough_sentence_follows_the_numbers():
    """A collapsed caption is not told that content words count more; a spread one is, with its own numbers."""
    collapsed = weight_sentence(TOKENS, np.array([0.001, 0.002, 0.002, 0.002, 0.002, 0.002, 0.002, 0.002, 0.0, 0.985]))
    assert "takes 0.985 of the weight on its own" in collapsed
    assert "count more" not in collapsed
    assert "weighs 0.002, not less than an average content word (0.002)" in collapsed
    spread = weight_sentence(TOKENS, np.array([0.02, 0.01, 0.10, 0.12, 0.08, 0.03, 0.02, 0.14, 0.04, 0.44]))
    assert "an average content word weighs 0.110 against 0.020 for a filler" in spread
    assert "content words count more" in spread
    assert "`<eot>` (the token that has read the whole sentence) weighs 0.440." in spread
