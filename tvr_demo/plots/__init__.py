"""Plotly figures for the app and for slides: each function takes arrays and labels and knows nothing of models."""

from tvr_demo.plots.ablation_bars import ablation_figure
from tvr_demo.plots.correlation import correlation_figure, correlation_stats
from tvr_demo.plots.diagnostics import (
    confusion_figure,
    counterfactual_figure,
    twin_scores_figure,
    word_misses_figure,
)
from tvr_demo.plots.embedding import embedding_map_figure
from tvr_demo.plots.explanations import (
    lexicon_difference_figure,
    lexicon_figure,
    pooled_figure,
    token_frame_figure,
)
from tvr_demo.plots.recall import compare_figure, metrics_figure, slice_figure

__all__ = [
    "ablation_figure",
    "compare_figure",
    "confusion_figure",
    "correlation_figure",
    "correlation_stats",
    "counterfactual_figure",
    "embedding_map_figure",
    "lexicon_difference_figure",
    "lexicon_figure",
    "metrics_figure",
    "pooled_figure",
    "slice_figure",
    "token_frame_figure",
    "twin_scores_figure",
    "word_misses_figure",
]
