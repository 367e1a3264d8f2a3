"""Captions of a clip: the canonical one and random paraphrases, naming every attribute that tells it apart."""

from __future__ import annotations

import numpy as np

from tvr_demo.data.synthetic.vocabulary import COLOURS, MOTIONS, NUMBERS, SHAPES, SIZES


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(obj: dict, rng: np.random.Generator | None, count: int = 1) -> str:
    """Like "a small red circle", "a tiny disc colored crimson", "three big green boxes"; canonical if rng is None."""

    def pick(options):
        return options[0] if rng is None else options[int(rng.integers(len(options)))]

    colour, shape = pick(COLOURS[obj["colour"]][1]), pick(SHAPES[obj["shape"]])[0 if count == 1 else 1]
    size = pick(SIZES[obj["size"]]) + " " if obj["size"] else ""
    phrase = pick(
        [f"{size}{colour} {shape}", f"{size}{shape} in {colour}", f"{size}{shape} colored {colour}"]
    )
    if count == 1:
        return _article(phrase)
    return pick([f"{pick(NUMBERS[count])} {phrase}", f"a group of {NUMBERS[count][0]} {phrase}"])


def _clause(obj: dict, rng: np.random.Generator | None, count: int = 1) -> tuple[str, str]:
    """(noun phrase, verb phrase) of one object, or of `count` identical ones."""
    verbs = MOTIONS[obj["motion"]]
    verb = verbs[0 if rng is None else int(rng.integers(len(verbs)))][0 if count == 1 else 1]
    return _noun_phrase(obj, rng, count), verb


def describe(clip: dict, canonical: bool = False, rng: np.random.Generator | None = None) -> str:
    """One caption naming every attribute that tells this clip apart; `canonical` gives the fixed wording."""
    rng = None if canonical else rng
    structure, objs = clip["structure"], clip["objects"]
    if structure in ("single", "count"):
        noun, verb = _clause(objs[0], rng, clip["count"])
        if rng is None:
            return f"{noun} {verb}"
        there = "there is" if clip["count"] == 1 else "there are"
        templates = [
            "{n} {v}",
            "on the screen, {n} {v}",
            "{n} {v} on a plain background",
            "in this clip {n} {v}",
            there + " {n} that {v}",
            "we see {n} that {v}",
        ]
        return templates[int(rng.integers(len(templates)))].format(n=noun, v=verb)
    first, second = (" ".join(_clause(o, rng)) for o in objs)
    if structure == "pair":
        if rng is None:
            return " while ".join(sorted([first, second]))
        if rng.random() < 0.5:
            first, second = second, first
        templates = ["{a} while {b}", "{a} and {b}", "at the same time, {a} and {b}", "{a}; meanwhile {b}"]
    else:  # sequence: the order of events matters, the order of words need not follow it
        if rng is None:
            return f"first {first}, then {second}"
        templates = [
            "first {a}, then {b}",
            "{a}, and after that {b}",
            "{a} before {b}",
            "after {a}, {b}",
            "{b} after {a}",
            "at first {a}; later {b}",
        ]
    return templates[int(rng.integers(len(templates)))].format(a=first, b=second)


def _captions(clip: dict, n: int, rng: np.random.Generator) -> list[str]:
    """n different paraphrases (fewer only if the templates run out)."""
    out: list[str] = []
    for _ in range(50 * n):
        caption = describe(clip, rng=rng)
        if caption not in out:
            out.append(caption)
        if len(out) == n:
            break
    return out
