"""A typed query as the model will see it, checked and cleaned in one place for every request that takes text."""

from __future__ import annotations

from dataclasses import dataclass

from tvr_demo.errors import QueryError
from tvr_demo.models.backbone import get_tokenizer

MAX_QUERY_CHARS = 1000  # read no further: the model sees max_words - 2 BPE tokens, far fewer characters than this


@dataclass(frozen=True)
class Query:
    text: str  # what the model reads: the query, or as many of its first words as fit in its tokens
    notice: str | None = None  # what was cut, in words; None when the model reads the whole query


def clean_query(text: str | None, max_words: int) -> Query:
    """The query stripped and cut to the words the model reads, saying what was cut; an empty one is refused. Every
    request that echoes, edits or scores a query takes this text, so none works on words the model never sees."""
    text = (text or "").strip()
    if not text:
        raise QueryError("the query is empty: type a description of a video")
    tokenizer = get_tokenizer()

    def fits(candidate: str) -> bool:
        return not tokenizer([candidate], max_words).truncated[0]

    if len(text) <= MAX_QUERY_CHARS and fits(text):
        return Query(text)
    words = text[:MAX_QUERY_CHARS].split()
    fitting, too_many = 0, len(words) + 1  # the longest prefix of words that fits (token counts grow with words)
    while too_many - fitting > 1:
        middle = (fitting + too_many) // 2
        if fits(" ".join(words[:middle])):
            fitting = middle
        else:
            too_many = middle
    if fitting == 0:  # one word longer than the model reads: its first tokens are what it sees
        return Query(words[0][:MAX_QUERY_CHARS], f"query truncated to the model's {max_words - 2} tokens: only the "
                                                 "start of its first word is seen")
    return Query(" ".join(words[:fitting]), f"query truncated to the model's {max_words - 2} tokens: its first "
                                             f"{fitting} words are read, the rest is not seen")
