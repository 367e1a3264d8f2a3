"""The papers' tables: rows filled from the checkpoints' configs, and sentences that follow the numbers."""

from __future__ import annotations

from tvr_demo.diagnosis.ablations import REPORTED, AblationRow, drl_row, drl_sentences, unify_sentence
from tvr_demo.models import ModelConfig
from tvr_demo.models.checkpoints import bundled_registry, load_our_format
from tvr_demo.models.config import CDCRConfig
from tvr_demo.paths import BUNDLED_CHECKPOINT_DIR

# The DRL repository README's ablation table (MSR-VTT 1k-A, ViT-B/32), typed here by hand: text -> video and
# video -> text R@1 of the rows our bundled DRL checkpoints fill.
DRL_README = {"DP, meanP": (42.9, 43.0), "TI": (44.8, 42.6), "WTI": (46.6, 45.4), "WTI + CDCR": (47.6, 45.1)}


def test_every_bundled_drl_checkpoint_has_its_published_bars():
    """The Walkthrough draws a paper bar beside each bundled DRL checkpoint's own (TI and WTI had none)."""
    for name in bundled_registry():
        config = load_our_format(BUNDLED_CHECKPOINT_DIR / name)[0].config
        if config.unify is None:
            row = drl_row(config)
            assert REPORTED[row][:2] == DRL_README[row], (name, row)


def test_each_checkpoint_fills_the_row_of_what_it_computes():
    assert drl_row(ModelConfig(interaction="dp", temporal="meanP")) == "DP, meanP"
    assert drl_row(ModelConfig(interaction="ti")) == "TI"
    assert drl_row(ModelConfig(interaction="wti")) == "WTI"
    assert drl_row(ModelConfig(interaction="wti", cdcr=CDCRConfig(variant=3, alpha2=0.06))) == "WTI + CDCR"
    # DRL's own CDCR rows (scripts/msrvtt.sh) set alpha2 = 0, training the diagonal only: the same row
    assert drl_row(ModelConfig(interaction="wti", cdcr=CDCRConfig(variant=3, alpha2=0.0))) == "WTI + CDCR"
    assert drl_row(ModelConfig(interaction="ti", cdcr=CDCRConfig(variant=2, alpha2=0.0))) == "TI + CDCR"


def _rows(meanp: float, cdcr: float, wti: float) -> list[AblationRow]:
    return [AblationRow("DP, zero-shot", None, None, None, 31.1, None),
            AblationRow("DP, meanP", "meanp", meanp, 47.6, 43.1, None),
            AblationRow("WTI", "drl-wti", wti, 61.8, None, None),
            AblationRow("WTI + CDCR", "drl-wti-cdcr", cdcr, 59.7, 47.6, 45.1)]


def test_drl_sentence_says_agree_when_both_gaps_point_the_same_way():
    first, second = drl_sentences(_rows(meanp=48.7, cdcr=62.3, wti=61.7))
    # hand-computed: 62.3 - 48.7 = +13.6 here, 47.6 - 43.1 = +4.5 in the papers
    assert "+13.6 here (62.3 vs 48.7)" in first and "+4.5 in the papers (47.6 vs 43.1" in first
    assert first.endswith("the ordering agrees (a larger gap here).")
    assert "(WTI)" in second and "WTI + CDCR 62.3 > WTI 61.7 > DP, meanP 48.7" in second


def test_drl_sentence_says_reversed_when_the_gallery_disagrees():
    first = drl_sentences(_rows(meanp=55.0, cdcr=52.5, wti=50.0))[0]
    assert "-2.5 here" in first and first.endswith("the ordering is reversed here.")


def test_unify_sentence_compares_the_fusion_gain():
    rows = [AblationRow("latent", "unify", 50.3, 54.1, None, None), AblationRow("lexicon", "unify", 44.6, 46.4, None,
            None), AblationRow("fused", "unify", 51.4, 52.3, None, None)]
    text = unify_sentence(rows)
    assert "+1.1 here (51.4 vs 50.3), +4.8 in the paper" in text and "agrees (a smaller gap here)" in text
    assert "5.7 below the latent one" in text  # 50.3 - 44.6
    rows[2].t2v = 49.0
    assert "-1.3 here" in unify_sentence(rows) and "reversed" in unify_sentence(rows)
