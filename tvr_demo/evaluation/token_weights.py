"""How a WTI model spreads a caption's weight over its tokens: `<eot>`, content words and fillers, beside the numbers
of DRL's own figure (the bench table, the README and the Walkthrough all read them from here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tvr_demo.models.unify import STOP_WORDS

# DRL's demo figure (official `demo/wti.png`, a real MSR-VTT model, "a soccer team walking out on the field").
OFFICIAL_FIGURE = {"eot": 0.22, "content_low": 0.07, "content_high": 0.17, "a": 0.014}


def token_kind(token: str) -> str:
    """"eot", "sot", "content" (a whole alphabetic word of 2+ letters, not a stop word), "filler" (a stop word) or
    "other" (punctuation, numbers), from the display string of a token."""
    if token in ("<eot>", "<sot>"):
        return token[1:-1]
    if token in STOP_WORDS:
        return "filler"
    return "content" if token.isascii() and token.isalpha() and len(token) >= 2 else "other"


@dataclass
class CaptionWeights:
    """One caption's text weights by kind of token."""

    eot: float
    content_mean: float | None  # mean weight of a content word (None: the caption has none)
    filler_mean: float | None

    @property
    def content_outweighs_fillers(self) -> bool | None:
        """Whether an average content word weighs more than an average filler (None without both kinds)."""
        if self.content_mean is None or self.filler_mean is None:
            return None
        return self.content_mean > self.filler_mean


def caption_weights(tokens: Sequence[str], weights: Sequence[float]) -> CaptionWeights:
    """Split one caption's valid tokens (SOT..EOT) and their weights by kind."""
    kinds = [token_kind(t) for t in tokens]
    w = np.asarray(weights, dtype=np.float64)

    def mean(kind: str) -> float | None:
        picked = [x for x, k in zip(w, kinds, strict=True) if k == kind]
        return float(np.mean(picked)) if picked else None

    return CaptionWeights(float(sum(x for x, k in zip(w, kinds, strict=True) if k == "eot")), mean("content"),
                          mean("filler"))


@dataclass
class WeightStats:
    """The text weights of a WTI model over a set of captions."""

    captions: int
    median_eot: float  # median <eot> weight (DRL's figure: 0.22)
    share_eot_above_09: float  # percent of captions whose <eot> weighs more than 0.9
    median_content: float  # median over captions of the mean content-word weight (DRL's figure: 0.07-0.17)
    median_filler: float  # the same for fillers (DRL's figure: "a" 0.014)
    share_content_over_fillers: float  # percent of captions (with both kinds) whose content words outweigh fillers

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(per_caption: Sequence[CaptionWeights]) -> WeightStats:
    eot = np.array([c.eot for c in per_caption])
    both = [c for c in per_caption if c.content_outweighs_fillers is not None]
    return WeightStats(
        len(per_caption), float(np.median(eot)), float(100 * np.mean(eot > 0.9)),
        float(np.median([c.content_mean for c in per_caption if c.content_mean is not None])),
        float(np.median([c.filler_mean for c in per_caption if c.filler_mean is not None])),
        float(100 * np.mean([c.content_outweighs_fillers for c in both])) if both else float("nan"))


def text_weight_stats(model, ids, mask, batch_size: int = 256) -> WeightStats:
    """The WTI text weights (softmax of text_weight_fc over the valid tokens) of every caption, summarised.
    model a TVRModel, ids and mask (N, T) tensors as the tokenizer gives them."""
    import torch

    from tvr_demo.models import drl
    from tvr_demo.models.backbone import get_tokenizer

    tokenizer = get_tokenizer()
    per_caption = []
    for start in range(0, ids.shape[0], batch_size):
        b_ids, b_mask = ids[start:start + batch_size], mask[start:start + batch_size]
        with torch.no_grad():
            feats = model.encode_text(b_ids.to(model.device), b_mask.to(model.device))
        weights = drl.interaction_weights(feats.weight_logits, feats.mask).cpu().numpy()
        for row, m, w in zip(b_ids.tolist(), b_mask.numpy(), weights, strict=True):
            n = int(m.sum())
            per_caption.append(caption_weights(tokenizer.token_strings(row[:n]), w[:n]))
    return summarize(per_caption)


def caption_weight_stats(model, captions: Sequence[str]) -> WeightStats:
    """`text_weight_stats` over raw captions, tokenized as the model reads them (its own `max_words`): the bench
    tables and the probes all start from a split's captions."""
    from tvr_demo.models.backbone import get_tokenizer

    tok = get_tokenizer()(list(captions), model.config.max_words)
    return text_weight_stats(model, tok.ids, tok.mask)
