"""Per-pair explanation figures: DRL's token x frame matrix with its weights and contributions, and UNIFY's words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

WEIGHT_COLOUR, CONTRIB_COLOUR, FRAME_CONTRIB_COLOUR = "#9aa5b1", "#d9480f", "#7048e8"  # token / frame shares apart
TOKEN_ARGMAX_COLOUR, FRAME_ARGMAX_COLOUR = "#ffffff", "#e03131"
SHARED_COLOUR, ALONE_COLOUR = "#d9480f", "#9aa5b1"
PADDING = "padding (s = 0)"


def _frame_labels(n: int, labels: Sequence[str] | None) -> list[str]:
    return list(labels) if labels is not None else [f"frame {v}" for v in range(n)]


def _add_thumbnails(fig: go.Figure, thumbnails: Sequence[str] | None, xref: str, yref: str, size: float = 0.2) -> None:
    """Frame images (data URIs) under the x axis of one subplot, centred on x = 0..n-1."""
    for v, source in enumerate(thumbnails or []):
        fig.add_layout_image(source=source, x=v, y=-0.07, xref=xref, yref=f"{yref} domain", sizex=0.92,
                             sizey=size, xanchor="center", yanchor="top", sizing="contain", layer="above")


def _share(value: float) -> str:
    """A contribution as a bar label: three decimals, or one significant digit ("3e-04") rather than a row of zeros."""
    return f"{value:.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:.0e}"


def formula_text(t2v: float, v2t: float, score: float, weighted: bool) -> str:
    """WTI's decomposition with this pair's numbers (TI: the weights are uniform over the valid tokens/frames)."""
    w_t, w_v = ("w<sub>t</sub>", "w<sub>v</sub>") if weighted else ("1/T", "1/V")
    return (f"t2v = Σ<sub>t</sub> {w_t}·max<sub>v</sub> s<sub>tv</sub> = {t2v:.4f}<br>"
            f"v2t = Σ<sub>v</sub> {w_v}·max<sub>t</sub> s<sub>tv</sub> = {v2t:.4f}<br>"
            f"<b>S = (t2v + v2t) / 2 = ({t2v:.4f} + {v2t:.4f}) / 2 = {score:.4f}</b>")


def token_frame_figure(tokens: Sequence[str], cosine: np.ndarray, token_weights: np.ndarray,
                       frame_weights: np.ndarray, token_argmax: np.ndarray, frame_argmax: np.ndarray,
                       token_contrib: np.ndarray, frame_contrib: np.ndarray, t2v: float, v2t: float, score: float,
                       *, weighted: bool = True, frame_labels: Sequence[str] | None = None,
                       thumbnails: Sequence[str] | None = None, title: str = "") -> go.Figure:
    """The masked token x frame cosine matrix (tokens down, frames across with their thumbnails), each token's best
    frame (circle) and each frame's best token (square), weight and contribution bars on both margins, and the
    formula S = (t2v + v2t) / 2 with this pair's numbers. cosine is (T, V) over the valid tokens and frames."""
    cosine = np.asarray(cosine, dtype=float)
    tokens, frames = list(tokens), _frame_labels(cosine.shape[1], frame_labels)
    token_argmax, frame_argmax = np.asarray(token_argmax), np.asarray(frame_argmax)
    token_weights, token_contrib = np.asarray(token_weights, dtype=float), np.asarray(token_contrib, dtype=float)
    frame_weights, frame_contrib = np.asarray(frame_weights, dtype=float), np.asarray(frame_contrib, dtype=float)
    # DRL zeroes masked entries before the max (not -inf): when every real frame scores below 0 a token's max is a
    # padded frame's 0. Show that as one extra "padding" column (row for tokens) instead of hiding it.
    if len(token_argmax) and token_argmax.max() >= cosine.shape[1]:
        token_argmax = np.minimum(token_argmax, cosine.shape[1])
        cosine = np.pad(cosine, ((0, 0), (0, 1)))
        frames.append(PADDING)
        frame_weights, frame_contrib = np.append(frame_weights, 0.0), np.append(frame_contrib, 0.0)
    if len(frame_argmax) and frame_argmax.max() >= cosine.shape[0]:
        frame_argmax = np.minimum(frame_argmax, cosine.shape[0])
        cosine = np.pad(cosine, ((0, 1), (0, 0)))
        tokens.append(PADDING)
        token_weights, token_contrib = np.append(token_weights, 0.0), np.append(token_contrib, 0.0)
    n_tok, n_frm = cosine.shape
    t_idx, v_idx = np.arange(n_tok), np.arange(n_frm)
    t_real, v_real = np.arange(len(token_argmax)), np.arange(len(frame_argmax))  # markers: real tokens / frames only
    # the token bars get a third of the width (at 1440 px, half a page per pair, a quarter squeezed them into a
    # strip); the colour bar lies across the empty top-right cell, where its ticks have room
    widths, rows = (0.66, 0.34), (0.24, 0.76)
    fig = make_subplots(rows=2, cols=2, specs=[[{}, None], [{}, {}]], column_widths=list(widths),
                        row_heights=list(rows), shared_xaxes=True, shared_yaxes=True,
                        horizontal_spacing=0.02, vertical_spacing=0.02)
    hover_tokens = np.array([[tokens[t]] * n_frm for t in t_idx])
    fig.add_trace(go.Heatmap(
        z=cosine, x=v_idx, y=t_idx, customdata=np.dstack([hover_tokens, np.array([frames] * n_tok)]),
        colorscale="Viridis", name="cosine s[t, v]",
        colorbar=dict(title=dict(text="cos s[t, v]", side="top"), orientation="h", x=1.0, xanchor="right",
                      y=1.0 - rows[0] / 2, yanchor="middle", len=widths[1] * 0.9, thickness=12, nticks=5,
                      tickformat=".1f"),
        hovertemplate="token %{customdata[0]} × %{customdata[1]}<br>s = %{z:.4f}<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Scatter(
        x=token_argmax, y=t_real, mode="markers", name="each token's best frame (max over v)",
        marker=dict(symbol="circle-open", size=15, line=dict(width=2.5), color=TOKEN_ARGMAX_COLOUR),
        customdata=[[tokens[t], cosine[t, token_argmax[t]]] for t in t_real],
        hovertemplate="token %{customdata[0]}: best frame %{x}, s = %{customdata[1]:.4f}<extra></extra>"),
        row=2, col=1)
    fig.add_trace(go.Scatter(
        x=v_real, y=frame_argmax, mode="markers", name="each frame's best token (max over t)",
        marker=dict(symbol="square-open", size=19, line=dict(width=2), color=FRAME_ARGMAX_COLOUR),
        customdata=[[frames[v], tokens[frame_argmax[v]], cosine[frame_argmax[v], v]] for v in v_real],
        hovertemplate="%{customdata[0]}: best token %{customdata[1]}, s = %{customdata[2]:.4f}<extra></extra>"),
        row=2, col=1)
    weight_name = "weight" if weighted else "weight (uniform: TI)"
    fig.add_trace(go.Bar(x=v_idx, y=frame_weights, name=f"frame {weight_name} w_v", marker_color=WEIGHT_COLOUR,
                         legendgroup="weights", hovertemplate="w_v = %{y:.4f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=v_idx, y=frame_contrib, name="frame contribution w_v·max_t s (sums to v2t)",
                         marker_color=FRAME_CONTRIB_COLOUR, legendgroup="frame contrib",
                         hovertemplate="w_v·max_t s = %{y:.4f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(y=t_idx, x=token_weights, orientation="h", name=f"token {weight_name} w_t",
                         marker_color=WEIGHT_COLOUR, legendgroup="weights", showlegend=False,
                         hovertemplate="w_t = %{x:.4f}<extra></extra>"), row=2, col=2)
    # each token's share written beside its bar: one token (often <eot>) can take most of the weight, leaving the
    # others' bars too short to read
    fig.add_trace(go.Bar(y=t_idx, x=token_contrib, orientation="h", name="token contribution w_t·max_v s (sums to t2v)",
                         marker_color=CONTRIB_COLOUR, legendgroup="contrib", text=[_share(c) for c in token_contrib],
                         textposition="outside", textfont=dict(size=10), constraintext="none", cliponaxis=False,
                         hovertemplate="w_t·max_v s = %{x:.4f}<extra></extra>"), row=2, col=2)
    # room beside the longest token bar for its label (often <eot>'s), and left of 0 for a negative share's
    widest = max(float(np.max(token_weights, initial=0)), float(np.max(token_contrib, initial=0)), 1e-6)
    lowest = min(float(np.min(token_contrib, initial=0)), 0.0)
    fig.update_xaxes(range=[1.6 * lowest, 1.45 * widest], row=2, col=2)
    heat = fig.get_subplot(2, 1)
    fig.update_yaxes(tickvals=t_idx, ticktext=tokens, autorange="reversed", row=2, col=1)
    ticks = frames if not thumbnails else ["" if v < len(thumbnails) else frames[v] for v in v_idx]  # images label
    fig.update_xaxes(tickvals=v_idx, ticktext=ticks, row=2, col=1)
    _add_thumbnails(fig, thumbnails, heat.xaxis.plotly_name.replace("axis", ""),
                    heat.yaxis.plotly_name.replace("axis", ""), size=min(0.25, 3.0 / max(n_tok, 1)))
    formula = formula_text(t2v, v2t, score, weighted)
    fig.update_layout(
        title=dict(text=f"{title}<br><span style='font-size:12px'>{formula}</span>" if title else formula,
                   font=dict(size=14)),
        barmode="group", bargap=0.15, template="plotly_white", height=max(500, 24 * n_tok + 300),
        margin=dict(l=10, r=10, t=120, b=130 if thumbnails else 60),
        legend=dict(orientation="h", x=0, y=-0.18 if thumbnails else -0.06, yanchor="top", font=dict(size=11)),
        uirevision="token-frame")
    return fig


def pooled_figure(tokens: Sequence[str], frame_cosine: np.ndarray, score: float, *,
                  frame_labels: Sequence[str] | None = None, thumbnails: Sequence[str] | None = None,
                  title: str = "", sentence: str | None = None) -> go.Figure:
    """meanP / dp: one cosine between the sentence (<eot>) vector and the mean of the frames; each frame's own cosine
    shows which frames pull the mean toward the text. sentence: the query as typed (else its tokens, joined)."""
    frame_cosine = np.asarray(frame_cosine, dtype=float)
    v_idx = np.arange(len(frame_cosine))
    frames = _frame_labels(len(frame_cosine), frame_labels)
    fig = go.Figure(go.Bar(x=v_idx, y=frame_cosine, name="cos(sentence, frame v)", marker_color=WEIGHT_COLOUR,
                           customdata=frames, hovertemplate="%{customdata}: cos = %{y:.4f}<extra></extra>"))
    fig.add_hline(y=score, line=dict(color=CONTRIB_COLOUR, width=2, dash="dash"),
                  annotation_text=f"S = cos(sentence, mean of frames) = {score:.4f}", annotation_position="top left")
    fig.update_xaxes(tickvals=v_idx, ticktext=frames, showticklabels=not thumbnails)  # the images label the frames
    _add_thumbnails(fig, thumbnails, "x", "y", size=0.25)
    if sentence is None:
        sentence = " ".join(tokens[1:-1]) if len(tokens) > 2 else " ".join(tokens)
    fig.update_layout(
        title=dict(text=title or f"the sentence vector is the {tokens[-1] if tokens else '<eot>'} token of “{sentence}”"),
        template="plotly_white", height=420, margin=dict(l=10, r=10, t=60, b=120 if thumbnails else 40),
        yaxis_title="cosine", showlegend=True, legend=dict(orientation="h", y=-0.3 if thumbnails else -0.1))
    return fig


def lexicon_figure(query_words: Sequence[tuple[str, float]], video_words: Sequence[tuple[str, float]],
                   shared: Sequence[tuple[str, float, float]], scores: Mapping[str, float], title: str = ""
                   ) -> go.Figure:
    """UNIFY: the query's and the video's most activated words (shared ones highlighted) and the shared words'
    contributions q_j·v_j, which add up to the lexicon score. shared = [(word, q_j, v_j), ...]."""
    shared_words = {w for w, _, _ in shared}
    contrib = [(w, q * v) for w, q, v in shared]
    total = float(sum(c for _, c in contrib))
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.12, subplot_titles=(
        "query's top words", "video's top words", "shared: q<sub>j</sub>·v<sub>j</sub>"))
    fig.update_annotations(font_size=12)  # the three panel titles, each a third of a half page wide
    for col, words in ((1, query_words), (2, video_words)):
        fig.add_trace(go.Bar(
            y=[w for w, _ in words], x=[a for _, a in words], orientation="h", showlegend=False,
            marker_color=[SHARED_COLOUR if w in shared_words else ALONE_COLOUR for w, _ in words],
            hovertemplate="%{y}: %{x:.4f}<extra></extra>"), row=1, col=col)
    fig.add_trace(go.Bar(y=[w for w, _ in contrib], x=[c for _, c in contrib], orientation="h", showlegend=False,
                         marker_color=SHARED_COLOUR, customdata=[[q, v] for _, q, v in shared],
                         hovertemplate="%{y}: %{customdata[0]:.3f} × %{customdata[1]:.3f} = %{x:.4f}<extra></extra>"),
                  row=1, col=3)
    fig.update_yaxes(autorange="reversed")
    score_line = " · ".join(f"{b} {s:.4f}" for b, s in scores.items())
    sums = f"Σ q<sub>j</sub>·v<sub>j</sub> over the shared words = {total:.4f}"
    fig.update_layout(title=dict(text=f"{title or score_line}<br><span style='font-size:12px'>{sums}</span>",
                                 font=dict(size=14)),
                      template="plotly_white",
                      height=max(380, 22 * max(len(query_words), len(video_words), len(contrib), 1) + 160),
                      margin=dict(l=10, r=10, t=100, b=40))
    if not contrib:
        fig.add_annotation(text="no shared word: lexicon score 0", xref="x3 domain", yref="y3 domain", x=0.5,
                           y=0.5, showarrow=False)
    return fig


def lexicon_difference_figure(contrib_a: Mapping[str, float], contrib_b: Mapping[str, float], label_a: str,
                              label_b: str, top: int = 20) -> go.Figure:
    """Which words put video A above (or below) video B for one query: per word q_j·v_j(A) - q_j·v_j(B); the bars
    sum to lexicon(A) - lexicon(B)."""
    words = sorted(set(contrib_a) | set(contrib_b))
    diff = {w: contrib_a.get(w, 0.0) - contrib_b.get(w, 0.0) for w in words}
    total = float(sum(diff.values()))
    shown = sorted(words, key=lambda w: -abs(diff[w]))[:top]
    fig = go.Figure(go.Bar(
        y=shown, x=[diff[w] for w in shown], orientation="h", showlegend=False,
        marker_color=[CONTRIB_COLOUR if diff[w] > 0 else "#1971c2" for w in shown],
        customdata=[[contrib_a.get(w, 0.0), contrib_b.get(w, 0.0)] for w in shown],
        hovertemplate="%{y}: %{customdata[0]:.4f} − %{customdata[1]:.4f} = %{x:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=dict(text=f"words for {label_a} (right) vs {label_b} (left): Σ = lexicon difference = {total:.4f}"),
        template="plotly_white", height=max(300, 22 * len(shown) + 120), margin=dict(l=10, r=10, t=60, b=30),
        xaxis_title=f"q_j·v_j({label_a}) − q_j·v_j({label_b})")
    return fig
