"""A typed query as the model will see it, checked and cleaned in one place for every request that takes text."""

from __future__ import annotations

from dataclasses import dataclass

from tvr_demo.errors import QueryError
from tvr_demo.models.backbone import get_tokenizer

MAX_QUERY_CHARS = 1000  # read no further: the model sees max_words - 2 BPE tokens, far fewer characters than this


@dataclass(frozen=True)
class Query:
    text: str  # what is encoded: stripped, at most MAX_QUERY_CHARS
    notice: str | None = None  # what was cut, in words; None when the model sees the whole query


def clean_query(text: str | None, max_words: int) -> Query:
    """The query stripped and capped, with a notice when the model cannot see all of it; an empty one is refused."""
    text = (text or "").strip()
    if not text:
        raise QueryError("the query is empty: type a description of a video")
    notice = None
    if len(text) > MAX_QUERY_CHARS:
        text, notice = text[:MAX_QUERY_CHARS], f"query cut to its first {MAX_QUERY_CHARS} characters"
    if get_tokenizer()([text], max_words).truncated[0]:
        notice = f"query truncated to the model's {max_words - 2} tokens: the rest is not seen"
    return Query(text, notice)
