"""The text tower's attention (ModelConfig.text_attention): causal as in CLIP and DRL by default; the
bidirectional departure lets every token read its whole caption and never the padding."""

from __future__ import annotations

import torch

from tvr_demo.models.backbone import clip_config, get_tokenizer
from tvr_demo.models.checkpoints import load_our_format, save_checkpoint
from tvr_demo.models.config import ModelConfig
from tvr_demo.models.tvr import TVRModel


def model(attention: str) -> TVRModel:
    torch.manual_seed(0)
    return TVRModel(ModelConfig(clip=clip_config("tvr-tiny"), text_attention=attention)).eval()


def unmasked_blocks(clip, ids: torch.Tensor) -> torch.Tensor:
    """The reference: CLIP's text blocks on the real tokens alone, with no mask at all (nothing to hide), then
    ln_final and the projection at every position."""
    x = clip.token_embedding(ids) + clip.positional_embedding[: ids.shape[1]]
    for block in clip.transformer.resblocks:
        x = block(x)
    return clip.ln_final(x) @ clip.text_projection


@torch.no_grad()
def test_bidirectional_tokens_are_the_unmasked_blocks_on_the_caption_alone():
    m = model("bidirectional")
    tok = get_tokenizer()(["a small blue square grows", "a red circle moves left then right"])
    feats = m.encode_text(tok.ids, tok.mask).tokens
    for row in range(2):
        n = int(tok.mask[row].sum())
        expected = unmasked_blocks(m.clip, tok.ids[row: row + 1, :n])[0]
        torch.testing.assert_close(feats[row, :n], expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_word_reads_the_words_after_it_only_when_bidirectional():
    tok = get_tokenizer()(["a red circle moves left", "a red circle moves right"])
    for attention, changes in (("causal", False), ("bidirectional", True)):
        feats = model(attention).encode_text(tok.ids, tok.mask).tokens
        first_word_moved = float((feats[0, 1] - feats[1, 1]).abs().max())  # "a": identical prefix in both captions
        assert (first_word_moved > 1e-4) is changes, (attention, first_word_moved)


def test_the_attention_travels_with_the_checkpoint(tmp_path):
    m = model("bidirectional")
    loaded, _ = load_our_format(save_checkpoint(m, tmp_path / "ck", {"description": "probe"}))
    assert loaded.config.text_attention == "bidirectional"
    tok = get_tokenizer()(["a red circle"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tok.ids, tok.mask).tokens, m.encode_text(tok.ids, tok.mask).tokens)
    assert ModelConfig.from_dict({k: v for k, v in m.config.to_dict().items() if k != "text_attention"}
                                 ).text_attention == "causal"  # checkpoints from before the field: CLIP's causal
