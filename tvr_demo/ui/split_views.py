"""Benchmark-level callbacks: metrics, the failure list and slices, two-model comparison, channel correlation and
the embedding map. Each returns figures and tables built from the engine's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tvr_demo import plots
from tvr_demo.diagnosis.blind_spots import failure_differences
from tvr_demo.diagnosis.embedding_map import umap_coordinates
from tvr_demo.errors import QueryError
from tvr_demo.retrieval.engine import Engine
from tvr_demo.ui.labels import score_kind
from tvr_demo.ui.session import gallery_key_of, model_summary

ALL_SLICES = "(all)"
# Failure-table column widths: auto widths gave a caption the whole row at 1440 px and pushed "ground truth", "rank"
# and "beaten by" off the right edge; captions and slices wrap instead. A column not named here gets the default.
FAILURE_COLUMN_WIDTHS = {
    "t2v": {"query #": "5%", "caption": "26%", "ground truth": "9%", "rank": "5%", "beaten by": "9%",
            "margin": "7%", "differs in": "14%", "slices": "25%"},
    "v2t": {"video": "9%", "best GT caption": "22%", "rank": "5%", "beaten by": "22%", "margin": "7%",
            "differs in": "13%", "slices": "22%"},
}
FAILURE_DEFAULT_WIDTH = "10%"


def failure_column_widths(columns, direction: str) -> list[str]:
    widths = FAILURE_COLUMN_WIDTHS.get(direction, {})
    return [widths.get(c, FAILURE_DEFAULT_WIDTH) for c in columns]


MAP_COLOURS = ("modality", "outcome")


def _branch(engine: Engine, branch: str | None) -> str:
    return engine.ranking_branch(branch if branch in engine.branches else None)


def metrics_view(engine: Engine, name: str) -> tuple[go.Figure, pd.DataFrame]:
    """Recall bars in both directions (per branch for UNIFY) and the full table with MdR and MnR."""
    result = engine.analysis.evaluate()
    series = ({b: {"t2v": m.t2v, "v2t": m.v2t} for b, m in result.branches.items()} if engine.is_unify
              else {name: {"t2v": result.top.t2v, "v2t": result.top.v2t}})
    rows = [{"series": s, "direction": d, **{k: round(v, 2) for k, v in m[d].items()}}
            for s, m in series.items() for d in ("t2v", "v2t")]
    title = f"{name} on {engine.bench.name}/{engine.bench.split} ({engine.gallery_size} videos)"
    return plots.metrics_figure(series, title=title), pd.DataFrame(rows)


def query_slices(engine: Engine, direction: str) -> list[list[str]]:
    """Slice labels per query: a caption's own (t2v), or the union of a video's captions' labels (v2t)."""
    return engine.analysis.query_slices(direction)


def slice_choices(engine: Engine, limit: int = 60) -> list[str]:
    counts = engine.analysis.slice_counts()
    return [ALL_SLICES] + [label for label, _ in counts.most_common(limit)]


def failures_view(engine: Engine, direction: str, branch: str | None, sort_by: str, slice_label: str | None,
                  limit: int) -> tuple[pd.DataFrame, list[tuple[str, int, str, int]], str]:
    """Failed queries (ground truth not first), worst first, optionally within one slice. Each row comes with the
    two pairs the explain view should show: (ground-truth caption, video) and (the pair that won)."""
    branch = _branch(engine, branch)
    failed = engine.analysis.failures(direction, branch, sort_by)
    labels = query_slices(engine, direction)
    if slice_label and slice_label != ALL_SLICES:
        failed = [o for o in failed if slice_label in labels[o.query]]
    bench, rows, pairs = engine.bench, [], []
    for o in failed[: int(limit)]:
        if direction == "t2v":
            rows.append({"query #": o.query, "caption": bench.captions[o.query], "ground truth": bench.video_ids[o.gt],
                         "rank": o.rank + 1, "beaten by": bench.video_ids[o.top],
                         "differs in": _differences(engine, o.gt, o.top, bench.captions[o.query]),
                         "margin": round(o.margin, 4), "slices": ", ".join(labels[o.query])})
            pairs.append((bench.captions[o.query], o.gt, bench.captions[o.query], o.top))
        else:
            rows.append({"video": bench.video_ids[o.query], "best GT caption": bench.captions[o.gt],
                         "rank": o.rank + 1, "beaten by": bench.captions[o.top],
                         "differs in": _differences(engine, o.query, int(bench.caption_video[o.top]),
                                                    bench.captions[o.gt]),
                         "margin": round(o.margin, 4), "slices": ", ".join(labels[o.query])})
            pairs.append((bench.captions[o.gt], o.query, bench.captions[o.top], o.query))
    n_queries = len(labels) if not slice_label or slice_label == ALL_SLICES else sum(
        slice_label in row for row in labels)
    summary = (f"**{len(failed)}** of {n_queries} {direction} queries miss rank 1 ({score_kind(engine.config, branch)} score); "
               f"showing {len(rows)}, worst {sort_by} first. Click a row to explain it.")
    return pd.DataFrame(rows), pairs, summary


def _differences(engine: Engine, truth: int, winner: int, query: str) -> str:
    """What the winner shows that the ground truth does not (tvr_demo.diagnosis.blind_spots), for a failure row."""
    return ", ".join(str(d) for d in failure_differences(engine, truth, winner, query))


def slices_view(engines: dict[str, Engine], branch: str | None, top: int = 25) -> go.Figure:
    """R@1 per slice (t2v) for one model, or for two side by side."""
    per_model = {}
    for name, engine in engines.items():
        stats = engine.analysis.slice_metrics(_branch(engine, branch))
        per_model[name] = dict(list(stats.items())[:top])
    first = next(iter(engines.values()))
    return plots.slice_figure(per_model, title=f"text → video R@1 per slice ({first.bench.name}/{first.bench.split})")


def compare_view(engine_a: Engine, name_a: str, engine_b: Engine, name_b: str, k: int
                 ) -> tuple[go.Figure, pd.DataFrame, list[tuple[str, int, str, int]], str]:
    """Which t2v queries one model gets into the top k and the other does not."""
    if engine_a.bench.root != engine_b.bench.root or engine_a.bench.split != engine_b.bench.split:
        raise QueryError("both models must be evaluated on the same gallery")
    comparison = engine_a.analysis.compare(engine_b.analysis, int(k))
    ranks_a, ranks_b, cells = comparison.ranks_a, comparison.ranks_b, comparison.cells
    bench, rows, pairs = engine_a.bench, [], []
    for cell, label in (("a_only", f"only {name_a} right"), ("b_only", f"only {name_b} right")):
        for q in cells[cell]:
            rows.append({"which": label, "query #": int(q), "caption": bench.captions[q],
                         f"rank {name_a}": int(ranks_a[q]) + 1, f"rank {name_b}": int(ranks_b[q]) + 1})
            gt = int(bench.caption_video[q])
            pairs.append((bench.captions[q], gt, "", -1))
    counts = comparison.counts
    summary = (f"{name_a} right only: **{counts['a_only']}** · {name_b} right only: **{counts['b_only']}** · "
               f"both right: {counts['both_right']} · both wrong: {counts['both_wrong']} (top {int(k)}, "
               f"{len(ranks_a)} queries). Click a row to explain it with the selected model.")
    return plots.compare_figure(counts, name_a, name_b, int(k)), pd.DataFrame(rows), pairs, summary


def correlation_view(engines: dict[str, Engine]) -> tuple[go.Figure, str]:
    """The D x D cross-correlation of matched text and video features per model, and its statistics."""
    gallery = next(iter(engines.values())).bench
    if gallery.num_captions < 2:  # a correlation over one pair is 0 / 0
        raise QueryError(f"the channel correlation needs at least 2 captions; {gallery.name}/{gallery.split} has "
                         f"{gallery.num_captions}")
    matrices = {name: engine.analysis.channel_correlation() for name, engine in engines.items()}
    lines = ["| model | training | D | diag mean | diag min | off-diag mean abs | off-diag RMS | off-diag max abs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in matrices.items():
        s = plots.correlation_stats(c)
        lines.append(f"| {name} | {model_summary(engines[name].config)} | {int(s['dim'])} | {s['diag_mean']:.3f} | "
                     f"{s['diag_min']:.3f} | {s['offdiag_mean_abs']:.3f} | {s['offdiag_rms']:.3f} | "
                     f"{s['offdiag_max_abs']:.3f} |")
    notes = []
    for name, engine in engines.items():
        cdcr = engine.config.cdcr
        if cdcr.variant and cdcr.alpha2 == 0:
            notes.append(f"`{name}` has CDCR with α2 = 0: only the diagonal term was trained, nothing decorrelates "
                         "the channels (the official DRL commands all do this).")
    title = f"text × video channel correlation over {gallery.name}/{gallery.split} (matched pairs)"
    return plots.correlation_figure(matrices, title=title), "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "")


def gallery_key(bench) -> str:
    """How the map's points name their gallery, so a hover can ask for a video's thumbnail (no server path)."""
    return gallery_key_of(bench)


def map_colour_choices(engine: Engine) -> list[str]:
    keys = sorted({label.split(":", 1)[0] for labels in engine.analysis.caption_slices() for label in labels if ":" in label})
    return [*MAP_COLOURS, *keys] if keys else [*MAP_COLOURS, "keyword"]


def _groups(engine: Engine, colour_by: str) -> tuple[list[str], list[str]]:
    n_t, n_v = engine.num_captions, engine.gallery_size
    if colour_by == "outcome":
        t_ok, v_ok = engine.analysis.ranks("t2v") == 0, engine.analysis.ranks("v2t") == 0
        return (["caption found (rank 1)" if ok else "caption failed" for ok in t_ok],
                ["video found (rank 1)" if ok else "video failed" for ok in v_ok])
    if colour_by == "modality":
        return ["caption"] * n_t, ["video"] * n_v
    labels = engine.analysis.caption_slices()
    prefix = "" if colour_by == "keyword" else f"{colour_by}:"
    text = [next((label[len(prefix):] for label in row if label.startswith(prefix)), "other") for row in labels]
    first_caption = {}
    for caption, video in enumerate(engine.bench.caption_video):
        first_caption.setdefault(int(video), caption)
    return text, [text[first_caption[v]] if v in first_caption else "other" for v in range(n_v)]


def map_embeddings(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    """The model's part of the map (runs on the GPU when there is one, with the score matrices the colours and
    failure lines need); the projection itself is CPU work."""
    _ = engine.matrices
    pooled = engine.analysis.pooled_embeddings()
    return pooled.texts, pooled.videos


def map_view(engine: Engine, text: np.ndarray, video: np.ndarray, colour_by: str, n_lines: int, name: str
             ) -> go.Figure:
    """UMAP of captions and videos together (cached per model and gallery), coloured, with failure lines."""
    text_xy, video_xy = umap_coordinates(text, video, engine.cache_path)
    bench = engine.bench
    ranks = engine.analysis.ranks("t2v")
    first_caption = {}
    for caption, v in enumerate(bench.caption_video):
        first_caption.setdefault(int(v), caption)
    text_hover = [f"caption {i}: {c}<br>ground truth {bench.video_ids[bench.caption_video[i]]} · rank {ranks[i] + 1}"
                  for i, c in enumerate(bench.captions)]
    video_hover = [f"{vid}<br>{bench.captions[first_caption[j]] if j in first_caption else ''}"
                   for j, vid in enumerate(bench.video_ids)]
    failed = engine.analysis.failures("t2v")[: int(n_lines)]
    text_groups, video_groups = _groups(engine, colour_by)
    return plots.embedding_map_figure(
        text_xy, video_xy, text_hover, video_hover, text_groups, video_groups,
        failures=[(o.query, o.gt, o.top) for o in failed], key=gallery_key(bench),
        title=f"{name}: captions (●) and videos (◆), UMAP; lines for the {len(failed)} worst failures "
              "(green: to the ground truth, red: to the video that beat it)")
