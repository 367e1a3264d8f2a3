"""The 2-D map of caption and video embeddings (WebGL scatter, sent once), with failure lines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

GT_LINE_COLOUR, BEAT_LINE_COLOUR = "#2f9e44", "#e03131"
SYMBOLS = {"caption": "circle", "video": "diamond"}


def _segments(start: np.ndarray, end: np.ndarray) -> tuple[list, list]:
    """x and y lists of separate segments (None between them) for one line trace."""
    xs, ys = [], []
    for a, b in zip(start, end, strict=True):
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
    return xs, ys


def embedding_map_figure(text_xy: np.ndarray, video_xy: np.ndarray, text_hover: Sequence[str],
                         video_hover: Sequence[str], text_groups: Sequence[str], video_groups: Sequence[str],
                         failures: Sequence[tuple[int, int, int]] = (), title: str = "", key: str = "") -> go.Figure:
    """Captions (circles) and videos (diamonds) coloured by group; each point's customdata is ["caption", i, key] or
    ["video", j, key] (key names the gallery), which the app reads on hover and click. failures = [(caption i, its ground-truth video, the video that beat
    it)] draws a green line to the ground truth and a red one to the winner."""
    text_xy, video_xy = np.asarray(text_xy, dtype=float), np.asarray(video_xy, dtype=float)
    groups = list(dict.fromkeys([*text_groups, *video_groups]))
    palette = px.colors.qualitative.Plotly + px.colors.qualitative.Set2 + px.colors.qualitative.Pastel
    colour = {g: palette[i % len(palette)] for i, g in enumerate(groups)}
    fig = go.Figure()
    for kind, xy, hover, point_groups in (("caption", text_xy, text_hover, text_groups),
                                          ("video", video_xy, video_hover, video_groups)):
        point_groups = np.asarray(point_groups, dtype=object)
        for g in groups:
            idx = np.flatnonzero(point_groups == g)
            if not idx.size:
                continue
            fig.add_trace(go.Scattergl(
                x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=f"{g} ({kind})" if g != kind else kind,
                legendgroup=g, marker=dict(symbol=SYMBOLS[kind], size=7 if kind == "caption" else 9, opacity=0.8,
                                           color=colour[g], line=dict(width=0.5, color="#333")),
                customdata=[[kind, int(i), key] for i in idx], text=[hover[i] for i in idx],
                hovertemplate="%{text}<extra></extra>"))
    if len(failures):
        rows = np.asarray(failures, dtype=int)
        for name, col, line_colour in (("caption → its ground truth", 1, GT_LINE_COLOUR),
                                       ("caption → the video that beat it", 2, BEAT_LINE_COLOUR)):
            xs, ys = _segments(text_xy[rows[:, 0]], video_xy[rows[:, col]])
            fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", name=name, hoverinfo="skip",
                                       line=dict(color=line_colour, width=1.2), opacity=0.7))
    fig.update_layout(title=dict(text=title), template="plotly_white", height=620, dragmode="lasso",
                      clickmode="event+select", margin=dict(l=10, r=10, t=60, b=10), uirevision="embedding-map",
                      xaxis=dict(showticklabels=False, title="UMAP 1"), yaxis=dict(showticklabels=False, title="UMAP 2"),
                      legend=dict(itemsizing="constant"))
    return fig
