"""Inputs a hostile client sends, through gradio_client against a live app: a query of 10,000 characters is cut to
what the model reads before any work grows with it (explain echoes that part and says the rest is cut; which word
decides edits only those words), every count field follows one rule, and a branch the model lacks is refused."""

from __future__ import annotations

import json

import gradio_client
import pytest
from app_support import launched, tiny_session
from gradio_client.exceptions import AppError
from open_clip.tokenizer import SimpleTokenizer

LONG_QUERY = " ".join(f"a red circle number {i} moves slowly to the left of the blue square" for i in range(160))
FIGURE_LIMIT = 2 * 2**20  # bytes of a figure's JSON a client may be sent


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    session = tiny_session(tmp_path_factory.mktemp("inputs"))
    with launched(session) as url:
        yield session, gradio_client.Client(url, verbose=False)


def _ctx(session, model: str = "drl-wti") -> tuple[str, str, str]:
    return model, session.dataset, "test"


def _refusal(client, *args, api_name: str) -> str:
    with pytest.raises(AppError) as info:
        client.submit(*args, api_name=api_name).result(timeout=120)
    return str(info.value)


def _bpe_count(text: str) -> int:
    """BPE tokens of a text by open_clip's own tokenizer (lower-cased, as CLIP reads it), not the app's."""
    return len(SimpleTokenizer().encode(text))


def test_explain_echoes_the_words_the_model_reads_and_says_the_rest_is_cut(served):
    session, client = served
    assert len(LONG_QUERY) > 10_000
    markdown_a = client.predict(LONG_QUERY, "", "", "", *_ctx(session), api_name="/explain")[0]
    echoed = markdown_a.split("Query “", 1)[1].split("”", 1)[0]
    words = LONG_QUERY.split()
    n = len(echoed.split())
    assert echoed == " ".join(words[:n]), "the echo is not the start of the query"
    assert _bpe_count(echoed) <= 30 < _bpe_count(" ".join(words[:n + 1])), "not the longest start the model reads"
    assert "truncated" in markdown_a and "not seen" in markdown_a
    assert len(markdown_a) < 2_000


def test_which_word_decides_edits_only_the_words_the_model_reads(served):
    session, client = served
    figure, summary = client.predict(LONG_QUERY, "", "auto", *_ctx(session), api_name="/counterfactual")
    n_edits = int(summary.split(" one-word edits scored")[0].rsplit(";", 1)[1].strip())
    assert _bpe_count(LONG_QUERY) > 30  # longer than the model reads: the edits must be bounded by what it reads
    assert 0 < n_edits <= 30 * 9, n_edits  # at most one removal and 8 replacements per word read
    assert "truncated" in summary
    assert len(json.dumps(figure)) < FIGURE_LIMIT


@pytest.mark.parametrize("k", ["1_0", 2.7, "50.9", "1e1", True])
def test_every_count_follows_one_rule(served, k):
    """'1_0' (Python reads it as 10), 2.7 (gradio rounded it) and '50.9' (refused) were three answers to one question."""
    session, client = served
    message = _refusal(client, "a red circle", k, "auto", *_ctx(session), api_name="/search")
    assert f"top k must be a number from 1 to 50, a whole one, not {str(k)!r}" in message, message


@pytest.mark.parametrize("k", ["10", 10.0, " 7 "])
def test_a_whole_count_in_any_form_is_taken(served, k):
    session, client = served
    table = client.predict("a red circle", k, "auto", *_ctx(session), api_name="/search")[2]
    assert len(table["data"]) == min(int(float(k)), 12)


def test_failures_refuses_a_branch_the_model_lacks(served):
    session, client = served
    message = _refusal(client, "t2v", "lexicon", "rank", "(all)", 100, *_ctx(session), api_name="/failures")
    search = _refusal(client, "a red circle", 5, "lexicon", *_ctx(session), api_name="/search")
    assert "branch 'lexicon' is not available for this model" in message and message == search
