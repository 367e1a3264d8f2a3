"""CDCR's D x D text-video channel cross-correlation, side by side for several models, with its summary numbers.

The matrix is the training loss's own statistic: channels standardised over the matched rows, c = X^T Y / N, with
DRL's variant 3 weighting each token-frame row by its softmax weight. It is not a Pearson correlation and is not
bounded by 1 (a diagonal mean of 1.05 is possible), so the colour scale follows its largest entry."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def correlation_stats(c: np.ndarray) -> dict[str, float]:
    """What the figure summarises: how close the diagonal is to 1 (matched channels agree) and how far the
    off-diagonal is from 0 (channels carry redundant information)."""
    c = np.asarray(c, dtype=np.float64)
    diag = np.diagonal(c)
    off = c[~np.eye(c.shape[0], dtype=bool)]
    return {"dim": float(c.shape[0]), "diag_mean": float(diag.mean()), "diag_min": float(diag.min()),
            "offdiag_mean_abs": float(np.abs(off).mean()) if off.size else 0.0,
            "offdiag_rms": float(np.sqrt((off**2).mean())) if off.size else 0.0,
            "offdiag_max_abs": float(np.abs(off).max()) if off.size else 0.0}


def correlation_figure(matrices: Mapping[str, np.ndarray], title: str = "") -> go.Figure:
    """One heatmap per model (one colour scale, symmetric around 0 and wide enough for the largest entry) and a
    histogram of each model's off-diagonal entries."""
    names = list(matrices)
    scale = max([1.0, *(float(np.abs(np.asarray(m)).max()) for m in matrices.values())])
    fig = make_subplots(rows=1, cols=len(names) + 1, horizontal_spacing=0.08,
                        column_widths=[1.0] * len(names) + [0.8],
                        subplot_titles=[*(f"{n}: mean c<sub>ii</sub> {correlation_stats(matrices[n])['diag_mean']:.3f}, "
                                          f"mean |c<sub>ij</sub>| {correlation_stats(matrices[n])['offdiag_mean_abs']:.3f}"
                                          for n in names), "off-diagonal c<sub>ij</sub>"])
    colours = px.colors.qualitative.Set1
    last = fig.get_subplot(1, len(names)).xaxis.domain[1]  # the colour bar sits right after the last heatmap
    for col, name in enumerate(names, start=1):
        c = np.asarray(matrices[name], dtype=float)
        fig.add_trace(go.Heatmap(z=c, colorscale="RdBu_r", zmin=-scale, zmax=scale, zmid=0, showscale=col == len(names),
                                 name=name, colorbar=dict(title=dict(text="c<sub>ij</sub>"), x=last + 0.005, xanchor="left",
                                               len=0.9, thickness=12),
                                 hovertemplate=f"{name}<br>text ch %{{y}} × video ch %{{x}}: %{{z:.3f}}<extra></extra>"),
                      row=1, col=col)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{col if col > 1 else ''}", title_text="text channel i",
                         title_standoff=2, row=1, col=col)
        # a square heatmap narrows its own panel (right-aligned, by its colour bar) rather than padding the axis
        fig.update_xaxes(title_text="video channel j", title_standoff=2, constrain="domain", constraintoward="right",
                         row=1, col=col)
        off = c[~np.eye(c.shape[0], dtype=bool)]
        fig.add_trace(go.Histogram(x=off, name=name, opacity=0.6, nbinsx=60, marker_color=colours[col - 1],
                                   histnorm="probability"), row=1, col=len(names) + 1)
    fig.update_xaxes(title_text="c<sub>ij</sub>, i ≠ j", title_standoff=2, row=1, col=len(names) + 1)
    fig.update_yaxes(title_text="share of entries", title_standoff=2, row=1, col=len(names) + 1)
    fig.update_layout(barmode="overlay", template="plotly_white", height=470, title=dict(text=title),
                      margin=dict(l=10, r=10, t=80, b=40), legend=dict(orientation="h", y=-0.16))
    return fig
