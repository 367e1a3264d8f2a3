"""Whole-split analysis of one engine's scores: official metrics, per-query outcomes and ranks, slices, the CDCR
channel correlation and the pooled vectors the embedding map projects.

Split from the engine so that `Engine` stays the search facade (encode once, search, explain a pair). An engine owns
its `Analysis` (`engine.analysis`): every score matrix read here is the engine's own (`engine.matrices`), so the
session's memory budget (`Engine.nbytes`) counts it and dropping the engine frees it.
Results are dataclasses; the dict form survives only as the `evaluate` CLI's stable JSON (`Evaluation.to_json`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from tvr_demo.data.folder import require_captions
from tvr_demo.data.synthetic.scenes import CHANGING_SIZE
from tvr_demo.evaluation import metrics

if TYPE_CHECKING:
    from tvr_demo.data import Benchmark
    from tvr_demo.models.config import ModelConfig
    from tvr_demo.retrieval.gallery import EncodedGallery
    from tvr_demo.retrieval.matrices import ScoreMatrices

DSL_NOTE = "dual softmax at inference (not in the official DRL code)"


@dataclass(frozen=True)
class BranchMetrics:
    """Official recall metrics (R@1, R@5, R@10, MdR, MnR) of one branch in both directions; with dual softmax at
    inference when asked for."""

    t2v: dict[str, float]
    v2t: dict[str, float]
    dsl_t2v: dict[str, float] | None = None
    dsl_v2t: dict[str, float] | None = None

    def to_json(self) -> dict:
        out: dict = {"t2v": self.t2v, "v2t": self.v2t}
        if self.dsl_t2v is not None:
            out["dsl"] = {"t2v": self.dsl_t2v, "v2t": self.dsl_v2t}
        return out


@dataclass(frozen=True)
class Evaluation:
    """Every branch's metrics; `ranking` is the branch the model ranks by (fused for UNIFY, latent for DRL)."""

    branches: dict[str, BranchMetrics]
    ranking: str
    skipped_videos: list[str]

    @property
    def top(self) -> BranchMetrics:
        return self.branches[self.ranking]

    def to_json(self) -> dict:
        """The `tvr_demo evaluate` JSON, a stable interface that scripts parse: the ranking branch at the top level, each
        branch under its name for UNIFY, then the skipped videos."""
        top = self.top
        out: dict = {"t2v": top.t2v, "v2t": top.v2t}
        if top.dsl_t2v is not None:
            out["dsl"] = {"note": DSL_NOTE, "t2v": top.dsl_t2v, "v2t": top.dsl_v2t}
        if len(self.branches) > 1:
            out.update({b: m.to_json() for b, m in self.branches.items()})
        out["skipped_videos"] = list(self.skipped_videos)
        return out


@dataclass(frozen=True)
class PooledEmbeddings:
    """L2-normalised sentence (EOT) and video (mean of frames) vectors, one row per caption / video."""

    texts: np.ndarray
    videos: np.ndarray


@dataclass(frozen=True)
class RankComparison:
    """Which queries each of two models gets into the top k (query indices per cell, metrics.compare_ranks)."""

    ranks_a: np.ndarray
    ranks_b: np.ndarray
    cells: dict[str, np.ndarray]

    @property
    def counts(self) -> dict[str, int]:
        return {c: len(v) for c, v in self.cells.items()}


class ScoredSplit(Protocol):
    """What the analysis reads from an engine (tvr_demo.retrieval.engine.Engine): written as an interface, so that this module
    depends on no engine code and the engine can own its analysis."""

    bench: Benchmark
    gallery: EncodedGallery

    @property
    def config(self) -> ModelConfig: ...

    @property
    def gallery_size(self) -> int: ...

    @property
    def matrices(self) -> ScoreMatrices: ...

    def ranking_branch(self, branch: str | None) -> str: ...


class Analysis:
    """Whole-split numbers for one engine; holds no matrices of its own (they are the engine's)."""

    def __init__(self, engine: ScoredSplit) -> None:
        self.engine = engine

    def evaluate(self, dsl: bool = False) -> Evaluation:
        """Official metrics in both directions, per branch."""
        engine = self.engine
        require_captions(engine.bench, "evaluation")
        cv = engine.bench.caption_video
        branches = {}
        for branch, sim in engine.matrices.items():
            v2t_sim = engine.matrices.direction(branch, "v2t")
            dsl_t2v = dsl_v2t = None
            if dsl:
                dsl_t2v = metrics.evaluate_similarity(metrics.dual_softmax(sim), cv)["t2v"]
                dsl_v2t = metrics.evaluate_similarity(metrics.dual_softmax(v2t_sim, axis=1), cv)["v2t"]
            official = metrics.evaluate_similarity(sim, cv, v2t_sim)  # DRL's protocol (multi-caption too)
            branches[branch] = BranchMetrics(official["t2v"], official["v2t"], dsl_t2v, dsl_v2t)
        return Evaluation(branches, engine.ranking_branch(None),
                          [p for p, _ in engine.bench.public_failures(engine.gallery.failures)])

    def _video_queries(self, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The video queries: the columns of the videos some caption describes, caption_video renumbered over them,
        and their gallery indices (a folder's clips without a caption are distractors only)."""
        caption_video = self.engine.bench.caption_video
        videos = np.unique(caption_video)
        if len(videos) == self.engine.gallery_size:
            return sim, caption_video, videos
        return sim[:, videos], np.searchsorted(videos, caption_video), videos

    def outcomes(self, direction: str = "t2v", branch: str | None = None) -> list[metrics.QueryOutcome]:
        """Every query's rank, ground truth, winner and margin (a video query's index is its gallery index)."""
        engine = self.engine
        require_captions(engine.bench, "the failure list")
        sim = engine.matrices.direction(engine.ranking_branch(branch), direction)
        if direction == "t2v":
            return metrics.query_outcomes(sim, engine.bench.caption_video, direction)
        sim, caption_video, videos = self._video_queries(sim)
        return [replace(o, query=int(videos[o.query])) for o in metrics.query_outcomes(sim, caption_video, "v2t")]

    def failures(self, direction: str = "t2v", branch: str | None = None, sort_by: str = "rank"
                 ) -> list[metrics.QueryOutcome]:
        """The queries whose ground truth is not first, worst first."""
        return metrics.failures(self.outcomes(direction, branch), sort_by=sort_by)

    def ranks(self, direction: str = "t2v", branch: str | None = None) -> np.ndarray:
        """0-based rank of each query's best ground truth (pessimistic ties, metrics.gt_ranks); -1 for a video that
        no caption describes."""
        engine = self.engine
        require_captions(engine.bench, "ranking the ground truth")
        sim = engine.matrices.direction(engine.ranking_branch(branch), direction)
        if direction == "t2v":
            return metrics.text_to_video_ranks(sim, engine.bench.caption_video)
        sim, caption_video, videos = self._video_queries(sim)
        ranks = np.full(engine.gallery_size, -1, dtype=np.int64)
        ranks[videos] = metrics.video_to_text_ranks(sim, caption_video)
        return ranks

    def compare(self, other: Analysis, k: int) -> RankComparison:
        """t2v queries in the top k for this model, the other, both or neither (same gallery)."""
        ranks_a, ranks_b = self.ranks("t2v"), other.ranks("t2v")
        return RankComparison(ranks_a, ranks_b, metrics.compare_ranks(ranks_a, ranks_b, int(k)))

    def caption_slices(self) -> list[list[str]]:
        """Per-caption slice labels: the synthetic benchmark's attributes of the caption's video, else keywords."""
        bench = self.engine.bench
        if bench.folders is not None:  # a folder gallery: the clip's subfolder, and keywords
            return [sorted({folder_label(bench.folders[int(v)]), *words})
                    for v, words in zip(bench.caption_video, metrics.keyword_slices(bench.captions), strict=True)]
        if bench.attributes is None:
            return metrics.keyword_slices(bench.captions)
        labels = []
        for v in bench.caption_video:
            attrs = bench.attributes[int(v)]
            row = [f"structure:{attrs.get('structure', '?')}"]
            for obj in attrs.get("objects", []):
                row += [f"{key}:{CHANGING_SIZE if obj[key] is None else obj[key]}"
                        for key in ("colour", "shape", "size", "motion") if key in obj]
            labels.append(sorted(set(row)))
        return labels

    def query_slices(self, direction: str) -> list[list[str]]:
        """Slice labels per query: a caption's own (t2v), or the union of a video's captions' labels (v2t), which
        in a folder gallery always holds the video's subfolder."""
        bench = self.engine.bench
        labels = query_slices(self.caption_slices(), bench.caption_video, self.engine.gallery_size, direction)
        if direction == "v2t" and bench.folders is not None:
            labels = [sorted({folder_label(folder), *row}) for folder, row in zip(bench.folders, labels, strict=True)]
        return labels

    def slice_counts(self) -> Counter:
        """How many captions carry each slice label."""
        return Counter(label for labels in self.caption_slices() for label in labels)

    def slice_metrics(self, branch: str | None = None) -> dict[Hashable, dict[str, float]]:
        """t2v recall metrics plus "n" per slice, largest slice first."""
        return metrics.slice_metrics(self.ranks("t2v", branch), self.caption_slices())

    def pooled_embeddings(self) -> PooledEmbeddings:
        """What the embedding map projects."""
        gallery = self.engine.gallery
        return PooledEmbeddings(gallery.texts.pooled.float().cpu().numpy(),
                                gallery.videos.pooled.float().cpu().numpy())

    def channel_correlation(self) -> np.ndarray:
        """CDCR's D x D cross-correlation of matched text and video features over the split (variant 3 pairing for
        token-wise models, pooled features for dp), computed by the training loss's own function. A gallery without
        captions has no matched pairs: then the video features' own correlation (every decoded frame for token-wise
        models, the pooled vectors for dp), whose off-diagonal is the redundancy CDCR's second term penalises."""
        from tvr_demo.models.losses import cdcr_correlation, cross_correlation, pooled_correlation

        engine = self.engine
        texts, videos = engine.gallery.texts, engine.gallery.videos
        if not engine.bench.num_captions:
            ok = torch.as_tensor(engine.gallery.decoded_ok, device=videos.frames.device)
            features = videos.pooled[ok] if engine.config.latent_interaction == "dp" \
                else videos.frames[videos.mask.bool() & ok[:, None]]
            with torch.no_grad():
                return cross_correlation(features, features).float().cpu().numpy()
        gt = torch.as_tensor(engine.bench.caption_video, device=videos.frames.device)
        with torch.no_grad():
            if engine.config.latent_interaction == "dp":
                c = pooled_correlation(texts.pooled, videos.pooled[gt])
            else:
                c = cdcr_correlation(3, texts.tokens, texts.mask, videos.frames[gt], videos.mask[gt],
                                     texts.weights, videos.weights[gt])
        return c.float().cpu().numpy()


def folder_label(folder: str) -> str:
    """A folder gallery's slice label for a clip's subfolder."""
    return f"folder:{folder}"


def query_slices(caption_labels: list[list[str]], caption_video: np.ndarray, n_videos: int, direction: str
                 ) -> list[list[str]]:
    """A caption's own labels (t2v), or per video the union of its captions' labels (v2t)."""
    if direction == "t2v":
        return caption_labels
    per_video: list[set[str]] = [set() for _ in range(n_videos)]
    for caption, video in enumerate(caption_video):
        per_video[int(video)].update(caption_labels[caption])
    return [sorted(s) for s in per_video]
