"""Which word decides: a clip's score and rank after removing each word of a query, or replacing an attribute word
with each of its alternatives, and for a failure the smallest edit that brings the ground truth to rank 1.

Every edited query is scored as a search scores it (Engine.score_texts, all of them in one batch) and ranked with the
search's tie rule (ScoreRow.rank: pessimistic ties).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from tvr_demo.diagnosis.blind_spots import content_words
from tvr_demo.retrieval.engine import Engine

PUNCTUATION = ".,;:!?\"'()"
BENCHMARK_ALTERNATIVES = 8  # without a vocabulary, a content word is replaced by the benchmark's 8 most frequent
FIX_CANDIDATES = 8  # two-word fixes combine the 8 single edits that bring the ground truth closest to rank 1


@dataclass(frozen=True)
class Edit:
    """Words of the query changed: position -> replacement ("" removes the word)."""

    changes: tuple[tuple[int, str, str], ...]  # (word position, old word, new word or "")
    attribute: str  # the replaced word's attribute ("colour", ...), "word" elsewhere, "" for removals
    text: str  # the edited query

    @property
    def label(self) -> str:
        return " · ".join(f"−{old}" if not new else f"{old}→{new}" for _, old, new in self.changes)

    @property
    def size(self) -> int:
        return len(self.changes)


@dataclass(frozen=True)
class EditResult:
    edit: Edit
    score: float  # the clip's score for the edited query, in the ranking branch
    rank: int  # the clip's 0-based rank (pessimistic ties, as a search's ground-truth rank)
    truth_rank: int | None  # the original query's ground truth's 0-based rank, when it has one


@dataclass
class Counterfactual:
    query: str
    video: int
    branch: str
    score: float
    rank: int
    ground_truth: int | None  # the video the query (a benchmark caption) describes, else None
    truth_rank: int | None
    results: list[EditResult] = field(default_factory=list)  # one-word edits, in word order
    fix: EditResult | None = None  # the smallest edit that brings the ground truth to rank 1 (a failure only)
    fix_note: str = ""  # why there is no fix, or how far the search went
    notice: str | None = None  # what was cut from a long query (the edits are of the words the model reads)


# ---------------------------------------------------------------------------------------------------- vocabulary


@lru_cache(maxsize=1)
def synthetic_vocabulary() -> dict[str, tuple[str, tuple[str, ...]]]:
    """word -> (attribute, alternatives) for every one-word attribute term of the synthetic captions; a word's
    alternatives are the first word of each other value in its group (same grammatical number)."""
    from tvr_demo.data.synthetic.vocabulary import COLOURS, MOTIONS, NUMBERS, SHAPES, SIZES

    groups: list[tuple[str, list[list[str]]]] = [("colour", [list(words) for _, words in COLOURS.values()]),
                                                 ("size", [list(words) for words in SIZES.values()])]
    for number in (0, 1):  # singular, plural
        groups.append(("shape", [[f[number] for f in forms if " " not in f[number]] for forms in SHAPES.values()]))
        groups.append(("motion", [[p[number] for p in ps if " " not in p[number]] for ps in MOTIONS.values()]))
    groups += [("motion", [["left"], ["right"], ["up"], ["down"]]),
               ("motion", [["leftwards"], ["rightwards"], ["upwards"], ["downwards"]]),
               ("count", [[words[0]] for words in NUMBERS.values()]),
               ("order", [["before"], ["after"]])]
    vocab: dict[str, tuple[str, tuple[str, ...]]] = {}
    for attribute, values in groups:
        values = [v for v in values if v]
        for i, words in enumerate(values):
            alternatives = tuple(other[0] for j, other in enumerate(values) if j != i)
            for word in words:
                vocab.setdefault(word, (attribute, alternatives))
    return vocab


def benchmark_words(captions: Sequence[str], n: int = BENCHMARK_ALTERNATIVES * 4) -> list[str]:
    """The benchmark's most frequent content words (ties alphabetical): the alternatives where no vocabulary is known."""
    counts = Counter(w for c in captions for w in content_words(c))
    return [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]]


def _core(word: str) -> str:
    return word.strip(PUNCTUATION).lower()


def one_word_edits(engine: Engine, query: str) -> list[Edit]:
    """Removing each word (when more than one is left), then replacing each attribute word with each alternative."""
    words = query.split()
    edits = []
    if len(words) > 1:
        edits += [_edit(words, ((i, w, ""),), "") for i, w in enumerate(words)]
    synthetic = engine.bench.attributes is not None
    vocab = synthetic_vocabulary() if synthetic else {}
    frequent = [] if synthetic else benchmark_words(engine.bench.captions)
    query_words = {_core(w) for w in words}
    for i, word in enumerate(words):
        core = _core(word)
        if synthetic and core in vocab:
            attribute, alternatives = vocab[core]
        elif not synthetic and core in content_words(core):
            attribute = "word"
            alternatives = tuple(w for w in frequent if w not in query_words)[:BENCHMARK_ALTERNATIVES]
        else:
            continue
        edits += [_edit(words, ((i, word, word.lower().replace(core, alt)),), attribute) for alt in alternatives]
    return edits


def _edit(words: list[str], changes: tuple[tuple[int, str, str], ...], attribute: str) -> Edit:
    new = dict((i, n) for i, _, n in changes)
    text = " ".join(new.get(i, w) for i, w in enumerate(words) if new.get(i, w))
    return Edit(changes, attribute, text)


# ---------------------------------------------------------------------------------------------------- scoring


def _score(engine: Engine, edits: Sequence[Edit], branch: str, video: int, truth: int | None) -> list[EditResult]:
    rows = engine.score_texts([e.text for e in edits], branch) if edits else []
    return [EditResult(e, float(row.ranking[video]), row.rank(video), None if truth is None else row.rank(truth))
            for e, row in zip(edits, rows, strict=True)]


def counterfactual(engine: Engine, query: str, video: int | None = None, branch: str | None = None) -> Counterfactual:
    """Every one-word edit of the query scored against the gallery, for one clip (None: the query's top result); for
    a failure (a benchmark caption whose ground truth is not first) also the smallest edit, of one word or else two,
    that brings the ground truth to rank 1. The edits are of the words the model reads (a long query is cut to its
    tokens first), so their number is bounded: one removal and a few replacements per word."""
    row = engine.score_text(query, branch, mode="exact")
    video = int(row.top(1)[0]) if video is None else engine.check_video(video)
    truth = row.ground_truth[0] if row.ground_truth else None
    results = _score(engine, one_word_edits(engine, row.query), row.branch, video, truth)
    out = Counterfactual(row.query, video, row.branch, float(row.ranking[video]), row.rank(video), truth,
                         None if truth is None else row.rank(truth), results, notice=row.notice)
    if truth is None:
        out.fix_note = "a typed query has no ground truth to fix"
    elif out.truth_rank == 0:
        out.fix_note = "the ground truth is already at rank 1"
    else:
        out.fix, out.fix_note = _smallest_fix(engine, row.query, results, row.branch, video, truth)
    return out


def _best(results: Sequence[EditResult]) -> EditResult | None:
    """Among the edits that bring the ground truth to rank 1, the one that changes the query least (fewest words,
    then removals before replacements, then word order)."""
    fixes = [r for r in results if r.truth_rank == 0]
    return min(fixes, key=lambda r: (r.edit.size, r.edit.attribute != "", r.edit.changes), default=None)


def _smallest_fix(engine: Engine, query: str, results: list[EditResult], branch: str, video: int, truth: int
                  ) -> tuple[EditResult | None, str]:
    fix = _best(results)
    if fix is not None:
        return fix, ""
    words = query.split()
    closest = sorted(results, key=lambda r: (r.truth_rank, r.edit.changes))[:FIX_CANDIDATES]
    pairs = [_edit(words, a.edit.changes + b.edit.changes, a.edit.attribute or b.edit.attribute)
             for a, b in itertools.combinations(closest, 2) if a.edit.changes[0][0] != b.edit.changes[0][0]]
    fix = _best(_score(engine, pairs, branch, video, truth))
    if fix is not None:
        return fix, f"no one-word edit does it; searched {len(pairs)} two-word edits"
    return None, (f"no edit of one word, nor any of {len(pairs)} two-word combinations of the {len(closest)} most "
                  "helpful one-word edits, brings the ground truth to rank 1")
