"""One query's scores over the whole gallery (`ScoreRow`), and the ranked results read from it.

A request computes its row once; search reads the top k and the ground truth's rank from it, explain the score and
rank of each pair it shows, which-word-decides the ranks after each edit. Every rank shown follows one tie rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from tvr_demo.evaluation import metrics

if TYPE_CHECKING:
    from tvr_demo.retrieval.scoring import TextBank


@dataclass(frozen=True)
class SearchHit:
    index: int  # video index (text -> video) or caption index (video -> text)
    rank: int  # 0-based place in the ranking (ties in index order)
    score: float  # in the ranking branch
    scores: dict[str, float]  # every branch the model has
    is_ground_truth: bool


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]  # the top k, best first
    branch: str
    ground_truth: list[int]  # the query's ground-truth items when it is a benchmark caption / gallery video
    ground_truth_rank: int | None  # best rank among them (pessimistic ties), even when outside the top k
    notice: str | None = None  # e.g. the query was truncated
    missed: list[SearchHit] = field(default_factory=list)  # ground-truth items outside the top k, best first


@dataclass(frozen=True, eq=False)
class ScoreRow:
    """Every branch's scores of one query over every gallery item, the branch that ranks, and the ground truth."""

    scores: Mapping[str, np.ndarray]  # branch -> (n_items,)
    branch: str  # the ranking branch
    ground_truth: tuple[int, ...] = ()  # a benchmark caption's video, or a gallery video's captions
    query: str = ""  # the text as encoded (a typed query) or the benchmark caption; "" for a video query
    notice: str | None = None  # what was cut from a typed query
    caption: int | None = None  # the benchmark caption the query is, if any
    text: TextBank | None = field(default=None, repr=False)  # a typed query's encoding, reused to explain a pair
    items: str = "videos"  # what the row scores: "videos" (a text query) or "captions" (a video query)

    @property
    def ranking(self) -> np.ndarray:
        return self.scores[self.branch]

    @property
    def size(self) -> int:
        return len(self.ranking)

    def rank(self, item: int) -> int:
        """0-based rank of an item, ties counted against it: every other item scoring at least as high is above it
        (metrics.gt_ranks, the tie rule of every rank the app shows)."""
        return int(metrics.gt_ranks(self.ranking[None], np.array([item]))[0])

    @cached_property
    def ground_truth_rank(self) -> int | None:
        """The best ground truth's rank, the other ground truths taken out of the row (they never count against it)."""
        if not self.ground_truth:
            return None
        ranking = self.ranking
        best = max(self.ground_truth, key=lambda g: ranking[g])
        keep = np.ones(len(ranking), dtype=bool)
        keep[[g for g in self.ground_truth if g != best]] = False
        return int(metrics.gt_ranks(ranking[keep][None], np.array([np.count_nonzero(keep[:best])]))[0])

    def place(self, item: int) -> int:
        """0-based place of an item in the ranked list (ties in index order), as a result list shows it."""
        ranking, score = self.ranking, self.ranking[item]
        return int(np.count_nonzero(ranking > score) + np.count_nonzero(ranking[:item] == score))

    def top(self, k: int) -> np.ndarray:
        """The k best items, best first, ties in index order (a stable sort of the row, without sorting all of it)."""
        ranking = self.ranking
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        if k >= len(ranking):
            return np.argsort(-ranking, kind="stable")
        kth = np.partition(-ranking, k - 1)[k - 1]
        candidates = np.flatnonzero(-ranking <= kth)  # ascending indices, so the stable sort keeps index order
        return candidates[np.argsort(-ranking[candidates], kind="stable")][:k]

    def hit(self, item: int, place: int | None = None) -> SearchHit:
        item = int(item)
        return SearchHit(item, self.place(item) if place is None else place, float(self.ranking[item]),
                         {b: float(s[item]) for b, s in self.scores.items()}, item in self.ground_truth)

    def result(self, k: int) -> SearchResult:
        """The top k, and the ground-truth items the top k leaves out, each at its place in the whole ranking."""
        top = self.top(int(k))
        hits = [self.hit(item, place) for place, item in enumerate(top)]
        shown = set(top.tolist())
        missed = sorted((self.hit(g) for g in self.ground_truth if g not in shown), key=lambda h: h.rank)
        return SearchResult(hits, self.branch, list(self.ground_truth), self.ground_truth_rank, self.notice, missed)
