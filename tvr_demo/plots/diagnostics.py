"""Blind-spot figures: Winoground scores per attribute beside chance, confusion matrices per attribute, the words
failures lose, and which word decides a pair's rank."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LABEL_SHIFT = 1.18  # a rank label's x over its bar's end, on the logarithmic rank axis (about 0.07 decades right)
SCORES = {"text": "text score:<br>each clip prefers its own caption",  # two lines: a panel is a third of the page
          "video": "video score:<br>each caption prefers its own clip",
          "group": "group score:<br>both"}


def twin_scores_figure(scores: Mapping[str, Sequence[tuple[str, int, float, float, float]]],
                       chance: Mapping[str, float], title: str = "") -> go.Figure:
    """scores[model] = [(attribute, n pairs, text, video, group shares 0..1), ...]: one panel per Winoground score,
    bars per attribute and model (percent, the pair count in the hover), chance as a dashed line."""
    # the chance level is named in each panel's title (a label on its dashed line would cross the bars' labels)
    titles = [f"{text}<br><span style='font-size:11px'>chance {100 * chance[key]:.1f}% (dashed)</span>"
              for key, text in SCORES.items()]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.04)
    colours = px.colors.qualitative.Set2
    several = len(scores) > 1  # bars side by side: upright labels, so "100" and "100" do not run together
    for i, (model, rows) in enumerate(scores.items()):
        attrs = [r[0] for r in rows]
        for col, key in enumerate(SCORES, start=1):
            values = [100 * r[2 + col - 1] for r in rows]
            fig.add_trace(go.Bar(
                x=attrs, y=values, name=model, legendgroup=model, showlegend=col == 1,
                marker_color=colours[i % len(colours)], text=[f"{v:.0f}" for v in values], textposition="outside",
                textangle=-90 if several else 0, textfont=dict(size=10), cliponaxis=False,
                customdata=[r[1] for r in rows],
                hovertemplate=f"{model} · %{{x}}: {key} score %{{y:.1f}}% of %{{customdata}} pairs<extra></extra>"),
                row=1, col=col)
            fig.add_hline(y=100 * chance[key], line_dash="dash", line_color="#888", row=1, col=col)
    # labels above the bars stay inside the plot area (up to 125), under the panel titles; ticks stop at 100
    fig.update_yaxes(range=[0, 125 if several else 112], tickvals=list(range(0, 101, 20)))
    fig.update_yaxes(title_text="twin pairs passing (%)", row=1, col=1)
    fig.update_layout(barmode="group", template="plotly_white", height=500, title=dict(text=title),
                      margin=dict(l=10, r=10, t=150, b=30), legend=dict(orientation="h", y=-0.15),
                      uniformtext=dict(minsize=9, mode="show"))
    return fig


def confusion_figure(matrices: Mapping[str, tuple[list[str], list[str], np.ndarray]], title: str = "",
                     truth_label: str = "ground truth", winner_label: str = "winner",
                     subtitles: Mapping[str, str] | None = None) -> go.Figure:
    """matrices[attribute] = (truth values, winner values, counts): one count heatmap per attribute, rows what the
    ground truth shows, columns what the clip that beat it shows; subtitles[attribute] under each panel's name."""
    names = [a for a, (_, _, z) in matrices.items() if np.size(z)]
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    subtitles = subtitles or {}
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{a} ({subtitles[a]})" if a in subtitles else a
                                                              for a in names] or ["no failures"],
                        horizontal_spacing=0.12, vertical_spacing=0.16)
    for i, attribute in enumerate(names):
        truth, winner, z = matrices[attribute]
        r, c = divmod(i, cols)
        fig.add_trace(go.Heatmap(
            z=z, x=winner, y=truth, colorscale="Reds", showscale=False, text=z, texttemplate="%{text}",
            hovertemplate=f"{attribute}: {truth_label} %{{y}}, {winner_label} %{{x}}: %{{z}}<extra></extra>"),
            row=r + 1, col=c + 1)
        fig.update_yaxes(autorange="reversed", title_text=truth_label if c == 0 else None, row=r + 1, col=c + 1)
        fig.update_xaxes(title_text=winner_label, title_standoff=4, row=r + 1, col=c + 1)
    fig.update_layout(template="plotly_white", height=max(360, 330 * rows), title=dict(text=title),
                      margin=dict(l=10, r=10, t=80, b=30))
    return fig


def word_misses_figure(misses: Mapping[str, Mapping[str, tuple[int, int]]], title: str = "") -> go.Figure:
    """misses[model][word] = (failures whose winner lacks the word, queries with the word): the share per word."""
    fig = go.Figure()
    colours = px.colors.qualitative.Set2
    order: list[str] = []
    for by_word in misses.values():
        order += [w for w in by_word if w not in order]
    for i, (model, by_word) in enumerate(misses.items()):
        words = [w for w in order if w in by_word]
        share = [100 * by_word[w][0] / max(by_word[w][1], 1) for w in words]
        fig.add_trace(go.Bar(
            y=words, x=share, orientation="h", name=model, marker_color=colours[i % len(colours)],
            customdata=[list(by_word[w]) for w in words],
            hovertemplate=f"{model} · %{{y}}: the winner lacks it in %{{customdata[0]}} of %{{customdata[1]}} "
                          "queries (%{x:.1f}%)<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(barmode="group", template="plotly_white", xaxis_title="queries whose failure ignores the word (%)",
                      title=dict(text=title), height=max(320, 22 * len(order) * max(1, len(misses)) + 120),
                      margin=dict(l=10, r=10, t=60, b=30), legend=dict(orientation="h", y=-0.08))
    return fig


def counterfactual_figure(labels: Sequence[str], texts: Sequence[str], scores: Sequence[float], ranks: Sequence[int],
                          kinds: Sequence[str], base_score: float, base_rank: int, fixes: Sequence[bool] = (),
                          title: str = "", gallery_size: int | None = None) -> go.Figure:
    """One row per edit: the clip's score (left) and 1-based rank (right) for the edited query, the original query's
    as dashed lines; kinds colour removals and replacements, fixes (edits that bring the ground truth to rank 1)
    are outlined. The rank axis (logarithmic) ends at the gallery's size."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.03, column_widths=[0.5, 0.5],
                        subplot_titles=["score of the clip", "rank of the clip (1 = top)"])
    palette = {"removed": "#8da0cb", "replaced": "#fc8d62"}
    fixes = list(fixes) or [False] * len(labels)
    for kind, colour in palette.items():
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if not idx:
            continue
        custom = [[texts[i], ranks[i] + 1, scores[i]] for i in idx]
        line = dict(width=[3 if fixes[i] else 0 for i in idx], color="#1a9850")
        hover = "“%{customdata[0]}”<br>score %{customdata[2]:.4f} · rank %{customdata[1]}<extra></extra>"
        y = [labels[i] for i in idx]
        fig.add_trace(go.Bar(y=y, x=[scores[i] for i in idx], orientation="h", name=f"word {kind}",
                             legendgroup=kind, marker=dict(color=colour, line=line), customdata=custom,
                             hovertemplate=hover), row=1, col=1)
        fig.add_trace(go.Bar(y=y, x=[ranks[i] + 1 for i in idx], orientation="h", name=f"word {kind}",
                             legendgroup=kind, showlegend=False, marker=dict(color=colour, line=line),
                             customdata=custom, hovertemplate=hover), row=1, col=2)
        # each rank written a little right of its bar's end, so a bar ending on the original rank's line does not
        # put its label on the line
        fig.add_trace(go.Scatter(y=y, x=[(ranks[i] + 1) * LABEL_SHIFT for i in idx], mode="text",
                                 text=[str(ranks[i] + 1) for i in idx], textposition="middle right",
                                 textfont=dict(size=10), customdata=custom, showlegend=False, hoverinfo="skip",
                                 cliponaxis=False),
                      row=1, col=2)
    fig.add_vline(x=base_score, line_dash="dash", line_color="#444", row=1, col=1,
                  annotation_text=f"original {base_score:.4f}", annotation_font_size=10)
    fig.add_vline(x=base_rank + 1, line_dash="dash", line_color="#444", row=1, col=2,
                  annotation_text=f"original rank {base_rank + 1}", annotation_font_size=10)
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=list(labels), row=1, col=1)
    top = max([gallery_size or 1, base_rank + 1, *[r + 1 for r in ranks]])
    fig.update_xaxes(type="log", dtick=1, range=[math.log10(0.8), math.log10(top * 1.5)], row=1, col=2)  # 1, 10...
    fig.update_layout(template="plotly_white", title=dict(text=title), barmode="overlay",
                      height=max(360, 18 * len(labels) + 140), margin=dict(l=10, r=40, t=80, b=30),
                      legend=dict(orientation="h", y=-0.06))
    return fig
