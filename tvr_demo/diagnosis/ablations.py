"""The papers' ablation tables recomputed live: DRL's interaction ablation (DP / TI / WTI, with and without CDCR)
and UNIFY's branch ablation (latent / lexicon / fused), on a loaded gallery with the checkpoints at hand, beside the
numbers the papers report on MSR-VTT, with sentences that say where the orderings agree (written from the numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tvr_demo.evaluation.analysis import BranchMetrics
from tvr_demo.models.config import ModelConfig
from tvr_demo.retrieval.engine import Engine

# Published text-to-video / video-to-text R@1 on MSR-VTT 1k-A with CLIP ViT-B/32: the ablation table of the DRL
# repository's README (foolwood/DRL; its scripts/msrvtt.sh trains every row, the CDCR rows with alpha2 = 0).
REPORTED: dict[str, tuple[float | None, float | None, str]] = {
    "DP, zero-shot": (31.1, 26.5, "DRL repository, zero-shot CLIP (dp)"),
    "DP, meanP": (42.9, 43.0, "DRL repository, DP + None (mean of frames)"),
    "DP, seqTransf": (42.8, 44.1, "DRL repository, DP + seqTransf"),
    "DP, seqTransf + CDCR": (43.9, 42.3, "DRL repository, DP + seqTransf + CDCR"),
    "TI": (44.8, 42.6, "DRL repository, TI + seqTransf"),
    "TI + CDCR": (45.8, 43.3, "DRL repository, TI + seqTransf + CDCR"),
    "WTI": (46.6, 45.4, "DRL repository, WTI + seqTransf"),
    "WTI + CDCR": (47.6, 45.1, "DRL repository, WTI + seqTransf + CDCR"),
}
UNIFY_FUSION_GAIN = 4.8  # UNIFY (Liu et al. 2024): t2v R@1 gained on MSR-VTT by adding the lexicon branch
DRL_ORDER = tuple(REPORTED)
UNIFY_BRANCHES = ("latent", "lexicon", "fused")


def drl_row(config: ModelConfig) -> str:
    """Which row of DRL's ablation a DRL checkpoint fills: its interaction, its temporal module for DP, and whether
    it was trained with CDCR (any alpha2: DRL's own CDCR rows set alpha2 = 0, training the diagonal only)."""
    base = f"DP, {config.temporal}" if config.interaction == "dp" else config.interaction.upper()
    return base + (" + CDCR" if config.cdcr.variant else "")


@dataclass
class AblationRow:
    """One bar group: a checkpoint (or a published row with no checkpoint here) and its R@1 both ways."""

    row: str  # the ablation row, e.g. "WTI + CDCR" or UNIFY's "fused"
    model: str | None  # the checkpoint that filled it on this gallery; None for a published row alone
    t2v: float | None  # R@1 on the loaded gallery, percent
    v2t: float | None
    reported_t2v: float | None  # the paper's MSR-VTT number, percent
    reported_v2t: float | None
    source: str = ""


@dataclass
class AblationTables:
    drl: list[AblationRow]
    unify: list[AblationRow]
    gallery: str  # "synthetic/test (1000 videos)"
    sentences: list[str]


def _r1(result: BranchMetrics) -> tuple[float, float]:
    return float(result.t2v["R@1"]), float(result.v2t["R@1"])


def drl_rows(engines: Mapping[str, Engine]) -> list[AblationRow]:
    """Every DRL checkpoint in its ablation row (DRL_ORDER), plus the published rows no checkpoint here fills."""
    rows = []
    for name, engine in engines.items():
        if not engine.is_unify:
            row = drl_row(engine.config)
            t2v_paper, v2t_paper, source = REPORTED.get(row, (None, None, ""))
            rows.append(AblationRow(row, name, *_r1(engine.analysis.evaluate().top), t2v_paper, v2t_paper, source))
    filled = {r.row for r in rows}
    rows += [AblationRow(row, None, None, None, t2v, v2t, source)
             for row, (t2v, v2t, source) in REPORTED.items() if row not in filled]
    return sorted(rows, key=lambda r: (DRL_ORDER.index(r.row) if r.row in DRL_ORDER else len(DRL_ORDER), r.model or ""))


def unify_rows(name: str, engine: Engine) -> list[AblationRow]:
    """UNIFY's three branches on the gallery; the paper gives the fusion's gain over the latent branch only."""
    result = engine.analysis.evaluate()
    return [AblationRow(b, name, *_r1(result.branches[b]), None, None, "") for b in UNIFY_BRANCHES]


def _ordering(ours: float, theirs: float) -> str:
    """How our difference stands against the paper's (both: the first row minus the second)."""
    if ours == 0:
        return "here the two tie, so the ordering is not reproduced"
    if (ours > 0) == (theirs > 0):
        size = "larger" if abs(ours) > abs(theirs) else "smaller"
        return f"the ordering agrees (a {size} gap here)"
    return "the ordering is reversed here"


def drl_sentences(rows: list[AblationRow]) -> list[str]:
    """For each pair of DRL rows that both the gallery and the papers measured: the two gaps and whether they agree;
    then what the papers do not report."""
    measured = [r for r in rows if r.t2v is not None and r.reported_t2v is not None]
    out = []
    for i, a in enumerate(measured):
        for b in measured[i + 1:]:
            ours, theirs = round(b.t2v - a.t2v, 1), round(b.reported_t2v - a.reported_t2v, 1)
            out.append(f"{b.row} ({b.model}) against {a.row} ({a.model}), text → video R@1: {ours:+.1f} here "
                       f"({b.t2v:.1f} vs {a.t2v:.1f}), {theirs:+.1f} in the papers ({b.reported_t2v:.1f} vs "
                       f"{a.reported_t2v:.1f} on MSR-VTT): {_ordering(ours, theirs)}.")
    if not out:
        out.append("No two DRL checkpoints here fill rows of DRL's published ablation, so no ordering can be compared "
                   "with the papers.")
    alone = [r for r in rows if r.t2v is not None and r.reported_t2v is None]
    if alone:
        ranked = sorted(alone + measured, key=lambda r: -r.t2v)
        out.append("Without a published MSR-VTT number (" + ", ".join(f"{r.row}" for r in alone) + "), the gallery "
                   "alone orders the DRL checkpoints " + " > ".join(f"{r.row} {r.t2v:.1f}" for r in ranked)
                   + " (text → video R@1).")
    return out


def unify_sentence(rows: list[AblationRow]) -> str:
    """The fused branch's gain over the latent one, here and in the paper."""
    by = {r.row: r for r in rows}
    gain = round(by["fused"].t2v - by["latent"].t2v, 1)
    lexicon = round(by["lexicon"].t2v - by["latent"].t2v, 1)
    return (f"UNIFY ({by['fused'].model}), fused against latent, text → video R@1: {gain:+.1f} here "
            f"({by['fused'].t2v:.1f} vs {by['latent'].t2v:.1f}), +{UNIFY_FUSION_GAIN:.1f} in the paper on MSR-VTT: "
            f"{_ordering(gain, UNIFY_FUSION_GAIN)}; the lexicon branch alone is {abs(lexicon):.1f} "
            f"{'below' if lexicon < 0 else 'above'} the latent one here (the paper gives no number for it alone).")


def ablation_tables(engines: Mapping[str, Engine]) -> AblationTables:
    """Both tables over engines that share one gallery (the served checkpoints on the loaded split)."""
    first = next(iter(engines.values()))
    if any(e.bench.root != first.bench.root or e.bench.split != first.bench.split for e in engines.values()):
        raise ValueError("every engine must hold the same gallery")
    drl = drl_rows(engines)
    unify = [r for name, e in engines.items() if e.is_unify for r in unify_rows(name, e)]
    sentences = drl_sentences(drl)
    for name in dict.fromkeys(r.model for r in unify):
        sentences.append(unify_sentence([r for r in unify if r.model == name]))
    if not unify:
        sentences.append("No UNIFY checkpoint is served, so its branch ablation is not computed.")
    gallery = f"{first.bench.name}/{first.bench.split} ({first.gallery_size} videos)"
    return AblationTables(drl, unify, gallery, sentences)
