"""The Walkthrough's live papers' tables: DRL's and UNIFY's ablations on the loaded gallery, as one figure and the
sentences comparing them with the published numbers."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

from tvr_demo import plots
from tvr_demo.diagnosis.ablations import UNIFY_FUSION_GAIN, AblationRow, ablation_tables
from tvr_demo.retrieval.engine import Engine

HERE = ("here, text → video", "here, video → text")
PAPER = ("paper (MSR-VTT), text → video", "paper (MSR-VTT), video → text")


def _panel(rows: list[AblationRow]) -> tuple[list[str], dict[str, list[float | None]]]:
    labels = [r.row if r.model is None else f"{r.row}<br>({r.model})" for r in rows]
    return labels, {HERE[0]: [r.t2v for r in rows], HERE[1]: [r.v2t for r in rows],
                    PAPER[0]: [r.reported_t2v for r in rows], PAPER[1]: [r.reported_v2t for r in rows]}


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _table(rows: list[AblationRow]) -> str:
    lines = ["| row | checkpoint | t2v R@1 here | v2t R@1 here | t2v R@1 paper | v2t R@1 paper | source |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.row} | {r.model or '(none here)'} | {_cell(r.t2v)} | {_cell(r.v2t)} | {_cell(r.reported_t2v)} | "
              f"{_cell(r.reported_v2t)} | {r.source} |" for r in rows]
    return "\n".join(lines)


def papers_view(engines: Mapping[str, Engine]) -> tuple[go.Figure, str]:
    """Grouped bars (measured solid, published hatched) and the sentences, then both tables in numbers."""
    tables = ablation_tables(engines)
    panels = {"DRL: interaction ablation": _panel(tables.drl)}
    notes = {}
    if tables.unify:
        name = f"UNIFY: branch ablation ({tables.unify[0].model})"
        panels[name] = _panel(tables.unify)
        notes[name] = f"paper: fused = latent + {UNIFY_FUSION_GAIN:.1f} t2v R@1 on MSR-VTT (no absolute numbers)"
    fig = plots.ablation_figure(panels, notes, title=f"The papers' ablations, live on {tables.gallery}; published "
                                                     "numbers: MSR-VTT 1k-A, CLIP ViT-B/32")
    text = "\n".join(f"- {s}" for s in tables.sentences)
    return fig, (f"#### Where the orderings agree\n{text}\n\n{_table(tables.drl + tables.unify)}\n\n"
                 "Our checkpoints are tiny models trained from scratch on the synthetic benchmark; the papers' are "
                 "CLIP ViT-B/32 fine-tuned on MSR-VTT, so compare orderings, not absolute numbers.")
