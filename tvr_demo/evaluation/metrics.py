"""Retrieval metrics (R@k, MdR, MnR), failure lists, slices and comparisons: each formula written once."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from tvr_demo.data.words import CAPTION_BOILERPLATE, STOP_WORDS

# Row blocks hold about this many entries, so a boolean comparison block stays a few MB whatever Q and G are.
_BLOCK_ENTRIES = 1 << 22


def rows_per_block(n_cols: int) -> int:
    return max(1, _BLOCK_ENTRIES // max(1, n_cols))


def _check_sim(sim: np.ndarray) -> np.ndarray:
    """A 2-D, NaN-free score matrix: a NaN never compares greater, so it would silently count as a hit."""
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D (queries x gallery), got shape {sim.shape}")
    if np.issubdtype(sim.dtype, np.floating):
        step = rows_per_block(sim.shape[1])
        for start in range(0, sim.shape[0], step):
            if np.isnan(sim[start : start + step]).any():
                raise ValueError("similarity matrix contains NaN; check the model's outputs before scoring")
    return sim


def _check_index(index: np.ndarray, size: int, what: str) -> np.ndarray:
    index = np.asarray(index)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(
            f"{what} must be a 1-D integer array, got dtype {index.dtype} and shape {index.shape}"
        )
    if index.size and (index.min() < 0 or index.max() >= size):
        raise ValueError(f"{what} has entries outside [0, {size}): min {index.min()}, max {index.max()}")
    return index.astype(np.int64, copy=False)


def gt_ranks(sim: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """0-based rank of each row's ground-truth column among the row sorted descending.

    Ties are pessimistic: rank = number of OTHER entries scoring >= the ground truth's score (the ground truth
    itself excluded), so a ground truth tied with anything ranks below it. Optimistic ties (count only the
    entries strictly above) would flatter degenerate models: UNIFY's sparse lexicon scores are exactly 0 for
    most pairs and an untrained model can score everything alike, and a constant matrix would get R@1 = 100;
    pessimistically it gets R@1 = 0. Without ties this equals the official DRL/CLIP4Clip rank, so real-valued
    matrices give the official numbers. The official `compute_metrics` finds the rank with
    `np.where(np.sort(-x, 1) - diag == 0)`, which returns several hits for a tied row and so misaligns every
    later row; we do not copy that bug.
    """
    sim = _check_sim(sim)
    gt = _check_index(gt, sim.shape[1], "ground-truth column index")
    if gt.shape[0] != sim.shape[0]:
        raise ValueError(
            f"similarity matrix has {sim.shape[0]} rows but {gt.shape[0]} ground-truth entries were given"
        )
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    step = rows_per_block(sim.shape[1])
    for start in range(0, sim.shape[0], step):
        block = sim[start : start + step]  # (b, G)
        gt_score = block[np.arange(block.shape[0]), gt[start : start + step]]  # (b,)
        # The ground truth is always >= itself (no NaNs), so subtracting 1 leaves the other entries.
        ranks[start : start + step] = np.count_nonzero(block >= gt_score[:, None], axis=1) - 1
    return ranks


def recall_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10), lower_median: bool = False
                   ) -> dict[str, float]:
    """R@k (percent of queries with rank < k), MdR = median rank + 1, MnR = mean rank + 1 (DRL's table).
    lower_median: the lower of the two middle ranks for an even count (torch.median, which DRL's multi-caption
    text-to-video metrics use) instead of their mean (np.median, its one-caption metrics)."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no ranks to summarise: the query set is empty")
    metrics = {f"R@{k}": float(100.0 * np.mean(ranks < k)) for k in ks}
    median = np.sort(ranks)[(ranks.size - 1) // 2] if lower_median else np.median(ranks)
    metrics["MdR"] = float(median + 1)
    metrics["MnR"] = float(np.mean(ranks) + 1)
    return metrics


def text_to_video_ranks(sim: np.ndarray, caption_video: np.ndarray) -> np.ndarray:
    """Each caption queries the videos; sim (n_captions, n_videos), caption_video[i] = caption i's video.

    A caption has exactly one ground-truth video, so this is gt_ranks (pessimistic ties) with several
    captions per video as well.
    """
    return gt_ranks(sim, caption_video)


def _best_gt_captions(sim: np.ndarray, caption_video: np.ndarray) -> np.ndarray:
    """For each video, the index of its highest-scoring ground-truth caption (first one on ties)."""
    n_captions, n_videos = sim.shape
    caption_video = _check_index(caption_video, n_videos, "caption_video")
    if caption_video.shape[0] != n_captions:
        raise ValueError(
            f"similarity matrix has {n_captions} caption rows but caption_video has {caption_video.shape[0]}"
        )
    missing = np.setdiff1d(np.arange(n_videos), caption_video)
    if missing.size:
        raise ValueError(
            f"{missing.size} video(s) have no caption (first: column {missing[0]}); "
            "video-to-text rank is undefined"
        )
    gt_score = sim[np.arange(n_captions), caption_video]  # (n_captions,)
    # Sort by (video, -score, caption index): the first caption of each video group is its best ground truth.
    order = np.lexsort((np.arange(n_captions), -gt_score.astype(np.float64), caption_video))
    first = np.flatnonzero(np.r_[True, np.diff(caption_video[order]) != 0])
    return order[first]


def _video_to_text(sim: np.ndarray, caption_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best ground-truth caption, rank) per video; sim is already checked."""
    best = _best_gt_captions(sim, caption_video)  # (n_videos,); caption_video checked there
    caption_video = np.asarray(caption_video, dtype=np.int64)
    n_videos = sim.shape[1]
    best_score = sim[best, np.arange(n_videos)]  # (n_videos,)
    ranks = np.zeros(n_videos, dtype=np.int64)
    step = rows_per_block(n_videos)
    for start in range(0, sim.shape[0], step):  # caption blocks, so S is never transposed into a copy
        ranks += np.count_nonzero(sim[start : start + step] >= best_score[None, :], axis=0)
    # Take back the video's own captions counted above: those scoring >= its best, i.e. tied with it.
    own_score = sim[np.arange(sim.shape[0]), caption_video]  # (n_captions,)
    own_counted = caption_video[own_score >= best_score[caption_video]]
    ranks -= np.bincount(own_counted, minlength=n_videos)
    return best, ranks


def video_to_text_ranks(sim: np.ndarray, caption_video: np.ndarray) -> np.ndarray:
    """Each video is a query over all captions and counts as found by its best-ranked caption.

    rank = number of non-ground-truth captions scoring >= the video's best ground-truth caption (pessimistic
    ties, as in gt_ranks: a tie never flatters a model; without ties this is the official rank). The video's
    other captions never count against it. With one caption per video this is `gt_ranks(sim.T, arange)`.
    sim is (n_captions, n_videos).
    """
    return _video_to_text(_check_sim(sim), caption_video)[1]


def group_best_captions(sim: np.ndarray, caption_video: np.ndarray) -> np.ndarray:
    """DRL's tensor_video_to_text_sim: for every (video j, caption group of video i), the best score of video i's
    captions against video j. sim (n_captions, n_videos) -> (n_videos, n_videos), rows the query videos."""
    sim = _check_sim(sim)
    _best_gt_captions(sim, caption_video)  # checks: every video has a caption, indices in range
    caption_video = np.asarray(caption_video, dtype=np.int64)
    order = np.argsort(caption_video, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(caption_video[order]) != 0])
    return np.maximum.reduceat(sim[order], starts, axis=0).T  # (groups = videos, n_videos).T


def grouped_video_to_text_ranks(sim: np.ndarray, caption_video: np.ndarray) -> np.ndarray:
    """Video-to-text as DRL's main.py ranks benchmarks with several captions per video: each video ranks its own
    caption group among the groups, every group scored by its best caption (pessimistic ties, as gt_ranks). With
    one caption per video this equals video_to_text_ranks."""
    return gt_ranks(group_best_captions(sim, caption_video), np.arange(sim.shape[1]))


def evaluate_similarity(sim: np.ndarray, caption_video: np.ndarray, v2t_sim: np.ndarray | None = None
                        ) -> dict[str, dict[str, float]]:
    """Both directions of the benchmark table, by the official protocol: one caption per video (MSR-VTT 1k-A) ranks
    S and S^T; several captions per video (MSVD, VATEX) follow DRL's main.py: text-to-video ranks each caption among
    the videos (MdR the lower median, as its torch.median), video-to-text ranks caption groups by their best caption.
    sim (n_captions, n_videos); v2t_sim, when video queries score differently (UNIFY's fusion), else sim. Videos that
    no caption describes (a folder gallery's uncaptioned clips) are distractors to text queries, never video queries."""
    caption_video = np.asarray(caption_video)
    v2t_sim = sim if v2t_sim is None else v2t_sim
    v2t_caption_video = caption_video
    captioned = np.unique(caption_video)
    if captioned.size < sim.shape[1]:
        v2t_sim, v2t_caption_video = v2t_sim[:, captioned], np.searchsorted(captioned, caption_video)
    multi = caption_video.size > 0 and np.bincount(caption_video).max() > 1
    if not multi:
        return {"t2v": recall_metrics(text_to_video_ranks(sim, caption_video)),
                "v2t": recall_metrics(video_to_text_ranks(v2t_sim, v2t_caption_video))}
    return {"t2v": recall_metrics(text_to_video_ranks(sim, caption_video), lower_median=True),
            "v2t": recall_metrics(grouped_video_to_text_ranks(v2t_sim, v2t_caption_video))}


def dual_softmax(sim: np.ndarray, temperature: float = 100.0, axis: int = 0) -> np.ndarray:
    """Dual-softmax (DSL, CAMoE) re-scoring: sim * softmax(temperature * sim) over the query axis.

    Not in the official DRL code, which reports no DSL numbers: report results with it separately, labelled.
    The prior uses the whole query set, so it is an evaluation-time trick, not a per-query search score.
    """
    sim = np.asarray(sim)
    out = sim.astype(np.result_type(sim.dtype, np.float32), copy=True)
    out *= temperature
    out -= out.max(axis=axis, keepdims=True)  # stable softmax
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    out *= sim
    return out


def standardize_rows(sim: np.ndarray) -> np.ndarray:
    """(s - mean) / std over the gallery axis per query, so UNIFY can add scores of heads on different scales.

    A constant row carries no ranking information and becomes all zeros rather than NaN.
    """
    sim = np.asarray(sim)
    sim = sim.astype(np.result_type(sim.dtype, np.float32), copy=False)
    out = sim - sim.mean(axis=1, keepdims=True)  # the only (Q, G) allocation; the rest is in place
    std = np.sqrt(np.einsum("qg,qg->q", out, out) / sim.shape[1])[:, None]  # population std, (Q, 1)
    out /= np.where(std > 0, std, 1)
    return out


@dataclass
class QueryOutcome:
    """One query's result: where its ground truth landed and what beat it."""

    query: int
    gt: int
    rank: int
    top: int  # the ground truth itself when rank == 0, else the best-scoring non-ground-truth item
    gt_score: float
    top_score: float
    margin: float  # top_score - gt_score: 0 when correct or tied (a tie is a miss), else > 0


def _row_top_other(sim: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per row, the first column with the highest score other than the row's gt column, in row blocks.

    The maximum is taken with the gt masked to -inf, then the first non-gt column equal to it is picked, so a
    row whose other entries are all -inf still gets a non-gt column. A row with no other column gets 0.
    """
    top = np.zeros(sim.shape[0], dtype=np.int64)
    step = rows_per_block(sim.shape[1])
    for start in range(0, sim.shape[0], step):
        block = sim[start : start + step]  # (b, G)
        rows = np.arange(block.shape[0])
        other = np.ones(block.shape, dtype=bool)
        other[rows, gt[start : start + step]] = False
        best = np.where(other, block, -np.inf).max(axis=1)  # (b,)
        top[start : start + step] = ((block == best[:, None]) & other).argmax(axis=1)
    return top


def _column_top_other(sim: np.ndarray, caption_video: np.ndarray) -> np.ndarray:
    """Per video (column), the first caption with the highest score among captions of other videos.

    Two passes over caption blocks (column maximum, then its first occurrence): numpy's argmax over a
    non-last axis would copy the whole matrix. A video that every caption belongs to gets 0.
    """
    n_videos = sim.shape[1]
    step = rows_per_block(n_videos)

    def other_mask(start: int, block: np.ndarray) -> np.ndarray:
        other = np.ones(block.shape, dtype=bool)
        other[np.arange(block.shape[0]), caption_video[start : start + step]] = False
        return other

    best = np.full(n_videos, -np.inf)
    for start in range(0, sim.shape[0], step):
        block = sim[start : start + step]
        best = np.maximum(best, np.where(other_mask(start, block), block, -np.inf).max(axis=0))
    top = np.zeros(n_videos, dtype=np.int64)
    found = np.zeros(n_videos, dtype=bool)
    for start in range(0, sim.shape[0], step):
        block = sim[start : start + step]
        hit = (block == best[None, :]) & other_mask(start, block)
        new = hit.any(axis=0) & ~found
        top[new] = start + hit.argmax(axis=0)[new]
        found |= new
        if found.all():
            break
    return top


def query_outcomes(sim: np.ndarray, caption_video: np.ndarray, direction: str = "t2v") -> list[QueryOutcome]:
    """Per-query outcomes for the failure list; for v2t the ground truth is the video's best caption.

    rank is the pessimistic rank of text_to_video_ranks / video_to_text_ranks. When rank > 0, top is the
    best-scoring non-ground-truth item (first on ties; for v2t a caption of another video), which scores >=
    the ground truth, so margin >= 0, and margin == 0 means a tie that counts as a miss.
    """
    sim = _check_sim(sim)
    if direction == "t2v":
        gt = _check_index(caption_video, sim.shape[1], "caption_video")
        ranks = gt_ranks(sim, gt)
        scores, other_top = sim, _row_top_other(sim, gt)  # (Q, G): queries on rows
    elif direction == "v2t":
        gt, ranks = _video_to_text(sim, caption_video)
        caption_video = np.asarray(caption_video, dtype=np.int64)
        # sim.T is a view: videos on rows, captions on columns
        scores, other_top = sim.T, _column_top_other(sim, caption_video)
    else:
        raise ValueError(f"direction must be 't2v' or 'v2t', got {direction!r}")
    top = np.where(ranks == 0, gt, other_top)
    rows = np.arange(scores.shape[0])
    gt_score = scores[rows, gt].astype(np.float64)
    top_score = scores[rows, top].astype(np.float64)
    return [
        QueryOutcome(int(q), int(g), int(r), int(t), float(gs), float(ts), float(ts - gs))
        for q, g, r, t, gs, ts in zip(rows, gt, ranks, top, gt_score, top_score, strict=True)
    ]


_FAILURE_ORDER = {
    "rank": lambda o: (-o.rank, -o.margin, o.query),
    "margin": lambda o: (-o.margin, -o.rank, o.query),
}


def failures(outcomes: Sequence[QueryOutcome], sort_by: str = "rank", k: int = 1) -> list[QueryOutcome]:
    """Queries whose ground truth is not in the top k, worst first (by rank, or by how far the winner won)."""
    if sort_by not in _FAILURE_ORDER:
        raise ValueError(f"sort_by must be 'rank' or 'margin', got {sort_by!r}")
    return sorted((o for o in outcomes if o.rank >= k), key=_FAILURE_ORDER[sort_by])


def _label_list(label: Hashable | Sequence[Hashable]) -> list[Hashable]:
    """A string or other scalar is one label; a list, tuple, set or array is several (deduplicated)."""
    if isinstance(label, np.ndarray):
        label = label.tolist()
    if isinstance(label, (list, tuple, set, frozenset)):
        return list(dict.fromkeys(label))
    return [label]


def slice_metrics(
    ranks: np.ndarray, labels: Sequence[Hashable] | Sequence[Sequence[Hashable]]
) -> dict[Hashable, dict[str, float]]:
    """recall_metrics plus "n" for every slice; a query with several labels counts in each of its slices.

    labels[i] is query i's label, or a list/tuple/set of labels (a string is always one label). Slices are
    ordered by size, largest first.
    """
    ranks = np.asarray(ranks)
    if len(labels) != ranks.shape[0]:
        raise ValueError(f"got {ranks.shape[0]} ranks but {len(labels)} labels")
    members: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        for name in _label_list(label):
            members.setdefault(name, []).append(i)
    ordered = sorted(members.items(), key=lambda item: -len(item[1]))  # stable: ties keep first appearance
    return {name: {**recall_metrics(ranks[idx]), "n": len(idx)} for name, idx in ordered}


_WORD = re.compile(r"[a-z]+")  # "man's" -> "man", "s"; one-letter pieces are dropped


def _content_words(caption: str) -> set[str]:
    return {w for w in _WORD.findall(caption.lower()) if w not in STOP_WORDS and w not in CAPTION_BOILERPLATE and len(w) > 1}


def keyword_slices(captions: Sequence[str], min_count: int = 20, max_slices: int = 30) -> list[list[str]]:
    """Per-caption keyword labels for benchmarks without metadata: the most frequent content words are slices.

    A word is a slice if at least min_count captions contain it; the max_slices most frequent are kept (ties
    alphabetical). Each caption's labels are listed most frequent first.
    """
    words = [_content_words(c) for c in captions]
    counts = Counter(w for ws in words for w in ws)
    frequent = [w for w, n in counts.items() if n >= min_count]
    kept = sorted(frequent, key=lambda w: (-counts[w], w))[:max_slices]
    order = {w: i for i, w in enumerate(kept)}
    return [sorted((w for w in ws if w in order), key=order.__getitem__) for ws in words]


def compare_ranks(ranks_a: np.ndarray, ranks_b: np.ndarray, k: int = 1) -> dict[str, np.ndarray]:
    """Split queries by which of two systems gets the ground truth into the top k (query indices per cell)."""
    ranks_a, ranks_b = np.asarray(ranks_a), np.asarray(ranks_b)
    if ranks_a.shape != ranks_b.shape:
        raise ValueError(
            f"rank arrays differ in shape: {ranks_a.shape} vs {ranks_b.shape}; compare the same queries"
        )
    hit_a, hit_b = ranks_a < k, ranks_b < k
    return {
        "both_right": np.flatnonzero(hit_a & hit_b),
        "a_only": np.flatnonzero(hit_a & ~hit_b),
        "b_only": np.flatnonzero(~hit_a & hit_b),
        "both_wrong": np.flatnonzero(~hit_a & ~hit_b),
    }
