"""The 2-D map of caption and video embeddings (WebGL scatter, sent once), with failure lines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

# failure lines and their ends in colours the groups' palette does not use, drawn over the points
GT_LINE_COLOUR, BEAT_LINE_COLOUR, FAILED_COLOUR = "#1b5e20", "#212529", "#212529"
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
    for kind, xy, hover, point_groups in (("video", video_xy, video_hover, video_groups),
                                          ("caption", text_xy, text_hover, text_groups)):  # captions drawn on top
        point_groups = np.asarray(point_groups, dtype=object)
        for g in groups:
            idx = np.flatnonzero(point_groups == g)
            if not idx.size:
                continue
            fig.add_trace(go.Scattergl(
                x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=f"{g} ({kind})" if g != kind else kind,
                legendgroup=g, marker=dict(symbol=SYMBOLS[kind], size=7 if kind == "caption" else 8,
                                           opacity=0.9 if kind == "caption" else 0.55, color=colour[g],
                                           line=dict(width=0.5, color="#333")),
                customdata=[[kind, int(i), key] for i in idx], text=[hover[i] for i in idx],
                hovertemplate="%{text}<extra></extra>"))
    if len(failures):
        # most failures lie close to both their videos, so each end is marked too: a line can be shorter than a point
        rows = np.asarray(failures, dtype=int)
        for name, col, line_colour, dash in (("caption → its ground truth", 1, GT_LINE_COLOUR, "solid"),
                                             ("caption → the video that beat it", 2, BEAT_LINE_COLOUR, "dot")):
            xs, ys = _segments(text_xy[rows[:, 0]], video_xy[rows[:, col]])
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, hoverinfo="skip", legendgroup=name,
                                     line=dict(color=line_colour, width=1.6, dash=dash)))
        for name, xy, symbol, colour_, size in (
                ("failed caption", text_xy[rows[:, 0]], "x-thin-open", FAILED_COLOUR, 11),
                ("its ground truth", video_xy[rows[:, 1]], "circle-open", GT_LINE_COLOUR, 15),
                ("the video that beat it", video_xy[rows[:, 2]], "diamond-open", BEAT_LINE_COLOUR, 15)):
            fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=name, hoverinfo="skip",
                                     marker=dict(symbol=symbol, size=size, color=colour_, line=dict(width=2))))
    fig.update_layout(title=dict(text=title), template="plotly_white", height=620, dragmode="lasso",
                      clickmode="event+select", margin=dict(l=10, r=10, t=60, b=10), uirevision="embedding-map",
                      xaxis=dict(showticklabels=False, title="UMAP 1"), yaxis=dict(showticklabels=False, title="UMAP 2"),
                      legend=dict(itemsizing="constant"))
    return fig
