"""What the page calls a score: by what it computes (WTI, TI, DP for a DRL model; latent, lexicon, fused for UNIFY).

The engine and the API keep their branch names ("latent" is a DRL model's only branch); only what a user reads is
named here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvr_demo.models.config import ModelConfig


def score_kind(config: ModelConfig, branch: str) -> str:
    """The display name of a branch's score: a DRL model's one score is its interaction (WTI, TI, DP); UNIFY's
    branches keep their names, since its latent branch is one of three."""
    if config.unify is None and branch == "latent":
        return config.interaction.upper()
    return branch
