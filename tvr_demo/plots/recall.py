"""Benchmark figures: recall per direction and branch, recall per slice, and a two-model agreement matrix."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

RECALLS = ("R@1", "R@5", "R@10")
DIRECTIONS = {"t2v": "text → video", "v2t": "video → text"}


def metrics_figure(results: Mapping[str, Mapping[str, Mapping[str, float]]], title: str = "") -> go.Figure:
    """results[series][direction][metric], e.g. {"latent": {"t2v": {"R@1": ..}, "v2t": ..}, "lexicon": ..}: grouped
    recall bars per direction; MdR and MnR in the hover and the legend."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[DIRECTIONS[d] for d in DIRECTIONS], shared_yaxes=True,
                        horizontal_spacing=0.05)
    colours = px.colors.qualitative.Set2
    several = len(results) > 1  # side by side, labels stand upright so neighbours' values do not run together
    for i, (series, by_direction) in enumerate(results.items()):
        for col, direction in enumerate(DIRECTIONS, start=1):
            m = by_direction[direction]
            fig.add_trace(go.Bar(
                x=list(RECALLS), y=[m[k] for k in RECALLS], name=series, legendgroup=series, showlegend=col == 1,
                marker_color=colours[i % len(colours)], text=[f"{m[k]:.1f}" for k in RECALLS], textposition="outside",
                textangle=-90 if several else 0, textfont=dict(size=11), cliponaxis=False,
                hovertemplate=f"{series} %{{x}} = %{{y:.1f}}%<br>MdR {m['MdR']:.1f} · MnR {m['MnR']:.1f}<extra></extra>"),
                row=1, col=col)
    # labels above the bars stay inside the plot area (up to 125), under the panel titles; ticks stop at 100
    fig.update_yaxes(range=[0, 125 if several else 112], tickvals=list(range(0, 101, 20)))
    fig.update_yaxes(title_text="recall (%)", row=1, col=1)
    fig.update_layout(barmode="group", template="plotly_white", height=400, title=dict(text=title),
                      margin=dict(l=10, r=10, t=80, b=30), legend=dict(orientation="h", y=-0.12),
                      uniformtext=dict(minsize=9, mode="show"))
    return fig


def slice_figure(slices: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str = "R@1",
                 title: str = "") -> go.Figure:
    """slices[series][slice] = {"R@1": .., "n": ..}: one horizontal bar per slice (and per series when comparing),
    slices in the first series' order; the bar label gives the slice size."""
    fig = go.Figure()
    colours = px.colors.qualitative.Set2
    order: list[str] = []
    for by_slice in slices.values():
        order += [s for s in by_slice if s not in order]
    for i, (series, by_slice) in enumerate(slices.items()):
        present = [s for s in order if s in by_slice]
        fig.add_trace(go.Bar(
            y=[str(s) for s in present], x=[by_slice[s][metric] for s in present], orientation="h", name=series,
            marker_color=colours[i % len(colours)], customdata=[int(by_slice[s]["n"]) for s in present],
            text=[f"{by_slice[s][metric]:.1f}% (n={int(by_slice[s]['n'])})" for s in present],
            textposition="outside", textfont=dict(size=11), cliponaxis=False,
            hovertemplate=f"{series} · %{{y}}: {metric} = %{{x:.1f}}% of %{{customdata}} queries<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 125], tickvals=[0, 20, 40, 60, 80, 100])  # room right of a 100% bar for its label
    fig.update_layout(barmode="group", template="plotly_white", xaxis_title=f"{metric} (%)", title=dict(text=title),
                      height=max(320, 26 * len(order) * max(1, len(slices)) + 120),
                      margin=dict(l=10, r=10, t=60, b=30), legend=dict(orientation="h", y=-0.08))
    return fig


def compare_figure(cells: Mapping[str, int], name_a: str, name_b: str, k: int = 1) -> go.Figure:
    """2 x 2 counts of queries by whether model A and model B get the ground truth into the top k
    (cells: both_right, a_only, b_only, both_wrong, as metrics.compare_ranks names them)."""
    z = [[cells["both_right"], cells["a_only"]], [cells["b_only"], cells["both_wrong"]]]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{name_b} right", f"{name_b} wrong"], y=[f"{name_a} right", f"{name_a} wrong"],
        text=[[str(v) for v in row] for row in z], texttemplate="%{text}", colorscale="Blues", showscale=False,
        hovertemplate="%{y} · %{x}: %{z} queries<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=dict(text=f"top-{k} agreement: {name_a} vs {name_b}"), template="plotly_white",
                      height=320, margin=dict(l=10, r=10, t=60, b=30))
    return fig
