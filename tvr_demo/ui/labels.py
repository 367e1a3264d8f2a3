"""What the page calls a model (one line on what it computes) and a score (WTI, TI, DP for a DRL model; latent,
lexicon, fused for UNIFY).

The engine and the API keep their branch names ("latent" is a DRL model's only branch); only what a user reads is
named here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvr_demo import ModelConfig


def model_summary(config: ModelConfig) -> str:
    """One line on what a model computes, for headers and tables."""
    if config.unify is not None:
        return f"UNIFY: latent {config.unify.latent} + lexicon (top-{config.unify.top_k} words), fused"
    parts = [config.interaction.upper(), config.temporal]
    if config.cdcr.variant:
        parts.append(f"CDCR v{config.cdcr.variant} (α1={config.cdcr.alpha1:g}, α2={config.cdcr.alpha2:g})")
    return " + ".join(parts)


def score_kind(config: ModelConfig, branch: str) -> str:
    """The display name of a branch's score: a DRL model's one score is its interaction (WTI, TI, DP); UNIFY's
    branches keep their names, since its latent branch is one of three. Video -> video search ranks by "pooled"."""
    if branch == "pooled":
        return "pooled video cosine"
    if config.unify is None and branch == "latent":
        return config.interaction.upper()
    return branch
