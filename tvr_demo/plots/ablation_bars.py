"""The papers' ablation tables as grouped bars: R@1 measured here beside the number each paper reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# measured here: solid; published: hatched, in the same colour per direction
SERIES = {"here, text → video": ("#4C78A8", ""), "here, video → text": ("#F58518", ""),
          "paper (MSR-VTT), text → video": ("#4C78A8", "/"), "paper (MSR-VTT), video → text": ("#F58518", "/")}


def ablation_figure(panels: Mapping[str, tuple[Sequence[str], Mapping[str, Sequence[float | None]]]],
                    notes: Mapping[str, str] | None = None, title: str = "") -> go.Figure:
    """panels[title] = (bar-group labels, {series: R@1 per group, None where there is no number}), series named as
    in SERIES; notes[title]: a line under a panel's title (e.g. a published gain with no absolute numbers)."""
    names = list(panels)
    widths = [max(len(panels[n][0]), 1) for n in names]
    notes = notes or {}
    titles = [f"{n}<br><span style='font-size:11px'>{notes[n]}</span>" if notes.get(n) else n for n in names]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.04,
                        column_widths=[w / sum(widths) for w in widths])
    shown: set[str] = set()
    for col, name in enumerate(names, start=1):
        labels, series = panels[name]
        for label, values in series.items():
            colour, hatch = SERIES[label]
            if all(v is None for v in values):
                continue
            fig.add_trace(go.Bar(
                x=list(labels), y=list(values), name=label, legendgroup=label, showlegend=label not in shown,
                marker=dict(color=colour if not hatch else "white", line=dict(color=colour, width=1.5),
                            pattern=dict(shape=hatch, fgcolor=colour)),
                text=["" if v is None else f"{v:.1f}" for v in values], textposition="outside", textangle=-90,
                textfont=dict(size=10), cliponaxis=False,
                hovertemplate=f"%{{x}}<br>{label}: %{{y:.1f}}<extra></extra>"), row=1, col=col)
            shown.add(label)
    # upright labels above the bars stay inside the plot area (up to 125), under the panel titles; ticks stop at 100
    fig.update_yaxes(range=[0, 125], tickvals=list(range(0, 101, 20)))
    fig.update_yaxes(title_text="R@1 (%)", row=1, col=1)
    fig.update_xaxes(tickangle=-35, automargin=True)
    fig.update_annotations(font_size=12)  # the panel titles and notes
    fig.update_layout(barmode="group", template="plotly_white", height=560, title=dict(text=title, font=dict(size=15)),
                      margin=dict(l=10, r=10, t=150, b=60), legend=dict(orientation="h", y=-0.3, yanchor="top", x=0),
                      uniformtext=dict(minsize=8, mode="show"))
    return fig
