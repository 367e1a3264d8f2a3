"""What a model cannot tell apart: Winoground-style scores on the synthetic benchmark's twin pairs per attribute, and
which attribute value (or, without attribute files, which word) it takes for which in its failures.

Engine-level: numbers and dataclasses only; the figures are in tvr_demo/plots/diagnostics.py.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tvr_demo.data import Benchmark
from tvr_demo.data.synthetic.scenes import CHANGING_SIZE
from tvr_demo.evaluation import metrics
from tvr_demo.retrieval.engine import Engine

# the attributes a synthetic twin pair can differ in (tvr_demo/data/synthetic/scenes.py make_twin), in reading order
ATTRIBUTES = ("colour", "shape", "size", "motion", "count", "order")
OBJECT_ATTRIBUTES = ("colour", "shape", "size", "motion")
# Winoground (Thrush et al. 2022, Vinoground 2024) chance: a random 2 x 2 score matrix passes the text score (each clip
# prefers its own caption: 1/2 x 1/2) and the video score with 1/4 each, and both (the group score) with 1/6
CHANCE = {"text": 0.25, "video": 0.25, "group": 1 / 6}
MAX_WORDS = 12  # rows and columns of the word confusion matrix on benchmarks without attribute files


@dataclass(frozen=True)
class TwinPair:
    """Two clips that differ in one attribute, with the caption each is scored by (its first one)."""

    video_a: int
    video_b: int
    caption_a: int
    caption_b: int
    attribute: str


@dataclass(frozen=True)
class TwinOutcome:
    pair: TwinPair
    text: bool  # each clip scores its own caption above its twin's
    video: bool  # each caption scores its own clip above the twin clip
    group: bool  # both


@dataclass(frozen=True)
class AttributeScores:
    """Shares (0..1) of an attribute's twin pairs that pass each Winoground score."""

    attribute: str
    n: int
    text: float
    video: float
    group: float


@dataclass(frozen=True)
class Difference:
    """One way a failure's winner differs from its ground truth: colour red (truth) -> blue (winner); on benchmarks
    without attribute files attribute is "word" and a side is "" when the word is absent from it."""

    attribute: str
    truth: str
    winner: str

    def __str__(self) -> str:
        if self.attribute == "word":
            return f"−{self.truth}" if self.truth else f"+{self.winner}"
        return f"{self.attribute} {self.truth}→{self.winner}"


@dataclass
class BlindSpots:
    """One model's blind spots on one gallery, from the scores of one branch.

    kind "attributes": `scores` per twin attribute (then "all"), `confusions[attribute][(truth, winner)]` counts over
    every text-to-video failure whose winner differs from the ground truth in that attribute. kind "words": no twins;
    `confusions["word"][(query word, winner word)]` and `word_misses[word]` (failures whose winner's captions lack
    a word of the query) over the same failures.
    """

    branch: str
    kind: str  # "attributes" or "words"
    n_failures: int
    outcomes: list[TwinOutcome] = field(default_factory=list)
    scores: list[AttributeScores] = field(default_factory=list)
    confusions: dict[str, Counter] = field(default_factory=dict)
    failures_by: Counter = field(default_factory=Counter)  # failures whose winner differs in each attribute (once)
    word_misses: Counter = field(default_factory=Counter)
    word_queries: Counter = field(default_factory=Counter)  # queries containing each word (the misses' denominator)


# ---------------------------------------------------------------------------------------------------- twin pairs


def twin_pairs(bench: Benchmark) -> list[TwinPair]:
    """Every twin pair of the split whose two clips both have a caption, in video order."""
    if bench.attributes is None:
        return []
    index = {vid: i for i, vid in enumerate(bench.video_ids)}
    pairs = []
    for a, attrs in enumerate(bench.attributes):
        b = index.get(attrs.get("twin_of"))
        if b is None or b < a or attrs.get("differs_in") is None:
            continue
        ca, cb = bench.captions_of(a), bench.captions_of(b)
        if ca and cb:
            pairs.append(TwinPair(a, b, ca[0], cb[0], str(attrs["differs_in"])))
    return pairs


def winoground(t2v: np.ndarray, v2t: np.ndarray, pair: TwinPair) -> TwinOutcome:
    """Winoground's three scores for one pair. The video score compares clips for one caption, so it reads the
    scores that rank text-to-video queries (t2v); the text score compares captions for one clip and reads the v2t
    scores (they differ only for UNIFY's fused branch, standardised per query). Strictly greater: a tie fails."""
    ca, cb, va, vb = pair.caption_a, pair.caption_b, pair.video_a, pair.video_b
    text = bool(v2t[ca, va] > v2t[cb, va] and v2t[cb, vb] > v2t[ca, vb])
    video = bool(t2v[ca, va] > t2v[ca, vb] and t2v[cb, vb] > t2v[cb, va])
    return TwinOutcome(pair, text, video, text and video)


def attribute_scores(outcomes: Sequence[TwinOutcome]) -> list[AttributeScores]:
    """Per attribute (in ATTRIBUTES order, then any other), then "all" over every pair."""
    groups: dict[str, list[TwinOutcome]] = {}
    for o in outcomes:
        groups.setdefault(o.pair.attribute, []).append(o)
    order = [a for a in ATTRIBUTES if a in groups] + sorted(set(groups) - set(ATTRIBUTES))
    rows = [(a, groups[a]) for a in order] + ([("all", list(outcomes))] if outcomes else [])
    return [AttributeScores(a, len(os), float(np.mean([o.text for o in os])), float(np.mean([o.video for o in os])),
                            float(np.mean([o.group for o in os]))) for a, os in rows]


# ---------------------------------------------------------------------------------------------------- differences


def _objects(attrs: dict) -> list[tuple]:
    """A clip's distinct objects as (colour, shape, size, motion), in event order (a count clip's copies are one)."""
    objs = [tuple(str(o[k]) if o.get(k) is not None else CHANGING_SIZE for k in OBJECT_ATTRIBUTES)
            for o in attrs.get("objects", [])]
    return list(dict.fromkeys(objs))


def _alignment(truth: list[tuple], winner: list[tuple]) -> list[tuple[int, int]]:
    """(truth object, winner object) pairs matched to share the most attribute values (the identity first on ties),
    so a reversed sequence reads as an order change, not as every object changing."""
    n = min(len(truth), len(winner))
    best, best_match = [], -1
    for t_idx in itertools.permutations(range(len(truth)), n):
        for w_idx in itertools.combinations(range(len(winner)), n):
            pairs = list(zip(t_idx, w_idx, strict=True))
            match = sum(a == b for t, w in pairs for a, b in zip(truth[t], winner[w], strict=True))
            if match > best_match:
                best, best_match = pairs, match
    return best


def attribute_differences(truth: dict, winner: dict) -> list[Difference]:
    """How a winner clip differs from the ground-truth clip, from their attribute records: per matched object its
    colour, shape, size and motion; the count; the order of a two-event sequence; the structure."""
    t_objs, w_objs = _objects(truth), _objects(winner)
    pairs = _alignment(t_objs, w_objs)
    out = [Difference(attr, t_objs[t][k], w_objs[w][k])
           for t, w in pairs for k, attr in enumerate(OBJECT_ATTRIBUTES) if t_objs[t][k] != w_objs[w][k]]
    if truth.get("count") != winner.get("count"):
        out.append(Difference("count", str(truth.get("count")), str(winner.get("count"))))
    if truth.get("structure") == winner.get("structure") == "sequence" and len(pairs) == 2 and pairs[0][0] != pairs[0][1]:
        out.append(Difference("order", "as captioned", "reversed"))
    if truth.get("structure") != winner.get("structure"):
        out.append(Difference("structure", str(truth.get("structure")), str(winner.get("structure"))))
    order = {a: i for i, a in enumerate(ATTRIBUTES)}
    return sorted(dict.fromkeys(out), key=lambda d: order.get(d.attribute, len(order)))  # once each


def content_words(text: str) -> list[str]:
    """The words that carry content, in order, as the keyword slices see them (metrics.STOP_WORDS removed)."""
    lower = text.lower()
    return sorted(metrics._content_words(lower), key=lower.find)


def word_differences(query: str, winner_captions: Sequence[str]) -> list[Difference]:
    """Content words of the query that none of the winner's captions has (−), then the winner's first caption's
    words the query lacks (+)."""
    query_words = content_words(query)
    winner_words = {w for c in winner_captions for w in content_words(c)}
    first = content_words(winner_captions[0]) if winner_captions else []
    return ([Difference("word", w, "") for w in query_words if w not in winner_words]
            + [Difference("word", "", w) for w in first if w not in query_words])


def failure_differences(engine: Engine, truth_video: int, winner_video: int, query: str = "") -> list[Difference]:
    """How a failure's winner differs from its ground truth: attributes on the synthetic benchmark, else words of the
    query missing from the winner's captions and words of the winner's caption the query lacks."""
    bench = engine.bench
    if bench.attributes is not None:
        return attribute_differences(bench.attributes[truth_video], bench.attributes[winner_video])
    return word_differences(query, [bench.captions[c] for c in bench.captions_of(winner_video)])


# ---------------------------------------------------------------------------------------------------- the analysis


def blind_spots(engine: Engine, branch: str | None = None) -> BlindSpots:
    """Twin scores per attribute and failure confusions for one model, with the engine's scores for `branch`."""
    branch = engine.ranking_branch(branch)
    bench = engine.bench
    failed = [o for o in engine.analysis.outcomes("t2v", branch) if o.rank > 0]
    if bench.attributes is None:
        return _word_blind_spots(engine, branch, failed)
    t2v, v2t = engine.matrices.direction(branch, "t2v"), engine.matrices.direction(branch, "v2t")
    outcomes = [winoground(t2v, v2t, p) for p in twin_pairs(bench)]
    confusions: dict[str, Counter] = {}
    failures_by: Counter = Counter()
    for o in failed:
        diffs = attribute_differences(bench.attributes[o.gt], bench.attributes[o.top])
        for d in diffs:
            confusions.setdefault(d.attribute, Counter())[(d.truth, d.winner)] += 1
        failures_by.update({d.attribute for d in diffs})
    return BlindSpots(branch, "attributes", len(failed), outcomes, attribute_scores(outcomes), confusions,
                      failures_by)


def _word_blind_spots(engine: Engine, branch: str, failed: list[metrics.QueryOutcome]) -> BlindSpots:
    bench = engine.bench
    queries = Counter(w for c in bench.captions for w in content_words(c))
    misses: Counter = Counter()
    pairs: Counter = Counter()
    for o in failed:
        diffs = failure_differences(engine, o.gt, o.top, bench.captions[o.query])
        lost = [d.truth for d in diffs if d.truth]
        gained = [d.winner for d in diffs if d.winner]
        misses.update(lost)
        pairs.update(itertools.product(lost, gained))
    return BlindSpots(branch, "words", len(failed), confusions={"word": pairs}, word_misses=misses,
                      word_queries=queries)


def confusion_matrix(counts: Counter, limit: int = MAX_WORDS) -> tuple[list[str], list[str], np.ndarray]:
    """(truth labels, winner labels, counts) of a confusion Counter, the `limit` most frequent labels per side,
    sorted by name (values like colours read best in a fixed order)."""
    truths, winners = Counter(), Counter()
    for (t, w), n in counts.items():
        truths[t] += n
        winners[w] += n
    rows = sorted(t for t, _ in truths.most_common(limit))
    cols = sorted(w for w, _ in winners.most_common(limit))
    z = np.array([[counts.get((t, w), 0) for w in cols] for t in rows], dtype=np.int64).reshape(len(rows), len(cols))
    return rows, cols, z
