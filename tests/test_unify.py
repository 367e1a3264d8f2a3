"""UNIFY's lexicon branch: vocabulary mask, tied head, pooling, sparsification, the lexicon score and its pieces,
fusion, and the grounding / sparsity / distillation losses, each against a straightforward computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import build_model, tiny_config

from tvr_demo.models import UnifyConfig
from tvr_demo.models.backbone import get_tokenizer
from tvr_demo.models.losses import bag_of_words_loss, flops_regularizer, self_distillation
from tvr_demo.models.unify import (
    LexiconHead,
    bag_of_words,
    lexicon_activation,
    lexicon_logits,
    lexicon_similarity,
    overlap,
    top_words,
    topk_sparsify,
    vocabulary_mask,
    vocabulary_words,
)
from tvr_demo.retrieval.scoring import fuse_scores

VOCAB = 49408


def token_id(word: str) -> int:
    return get_tokenizer().bpe.encoder[word]


# ---------------------------------------------------------------- vocabulary


def test_vocabulary_mask_drops_special_punctuation_and_stop_words():
    """Special tokens, punctuation, digits, word pieces and stop words are never activated."""
    mask = vocabulary_mask()
    assert mask.shape == (VOCAB,) and mask.dtype == torch.bool
    tok = get_tokenizer()
    for idx in (tok.sot, tok.eot, 0):
        assert not mask[idx]
    for word in (
        ".</w>",
        ",</w>",
        "!</w>",
        "3</w>",
        "the</w>",
        "a</w>",
        "and</w>",
        "of</w>",
        "is</w>",
        "ing",
        "x</w>",
    ):
        assert not mask[token_id(word)], word


def test_vocabulary_mask_keeps_content_words():
    """Content words, including direction words, keep their dimension."""
    mask = vocabulary_mask()
    for word in ("red", "circle", "left", "dog", "running", "kitchen", "up"):
        assert mask[token_id(word + "</w>")], word


def test_vocabulary_words_name_every_dimension():
    """Dimension j's word is the BPE entry j without its end-of-word marker."""
    words = vocabulary_words()
    assert len(words) == VOCAB
    assert words[token_id("circle</w>")] == "circle"


# ---------------------------------------------------------------- the head and pooling


@pytest.fixture(scope="module")
def tiny_unify():
    """tvr-tiny with UNIFY (latent dp), random weights."""
    return build_model(tiny_config(interaction="dp", unify=UnifyConfig(latent="dp")), seed=4)


def test_lexicon_head_formula():
    """head(h) = LayerNorm(GELU(dense(h))) @ E^T + bias, with E the token embedding passed in."""
    torch.manual_seed(0)
    head = LexiconHead(6, 4, 10)
    with torch.no_grad():
        head.bias.copy_(torch.randn(10))
    h, emb = torch.randn(2, 6), torch.randn(10, 4)
    with torch.no_grad():
        got = head(h, emb).tolist()
    w, b = head.dense.weight.tolist(), head.dense.bias.tolist()
    gamma, beta, bias = head.norm.weight.tolist(), head.norm.bias.tolist(), head.bias.tolist()
    for i in range(2):
        x = [sum(w[o][k] * float(h[i, k]) for k in range(6)) + b[o] for o in range(4)]
        x = [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x]
        mean = sum(x) / 4
        var = sum((v - mean) ** 2 for v in x) / 4
        x = [(v - mean) / math.sqrt(var + head.norm.eps) * gamma[o] + beta[o] for o, v in enumerate(x)]
        for j in range(10):
            expected = sum(x[o] * float(emb[j, o]) for o in range(4)) + bias[j]
            assert got[i][j] == pytest.approx(expected, abs=1e-5)


def test_lexicon_heads_are_tied_to_the_token_embedding(tiny_unify):
    """No separate vocabulary x width matrix is stored, and changing the token embedding changes both lexicons."""
    sd = tiny_unify.state_dict()
    big = [k for k, v in sd.items() if v.ndim == 2 and VOCAB in v.shape]
    assert big == ["clip.token_embedding.weight"]
    assert sd["text_lexicon_head.bias"].shape == sd["video_lexicon_head.bias"].shape == (VOCAB,)
    tok = get_tokenizer()(["a red circle"], 32)
    frames, vmask = torch.randn(1, 2, 3, 48, 48), torch.ones(1, 2, dtype=torch.long)
    with torch.no_grad():
        text, video = tiny_unify(tok.ids, tok.mask, frames, vmask)
        saved = tiny_unify.clip.token_embedding.weight.clone()
        try:
            # rows the caption does not use: the text tower's input is unchanged, only the tied projection moves
            rows = token_id("circle</w>") + 1 + torch.arange(100)
            tiny_unify.clip.token_embedding.weight[rows] += 1.0
            text2, video2 = tiny_unify(tok.ids, tok.mask, frames, vmask)
        finally:
            tiny_unify.clip.token_embedding.weight.copy_(saved)
    torch.testing.assert_close(text2.tokens, text.tokens)
    changed = vocabulary_mask()[rows]
    assert not torch.allclose(text2.lexicon_logits[0, rows[changed]], text.lexicon_logits[0, rows[changed]])
    assert not torch.allclose(video2.lexicon_logits[0, rows[changed]], video.lexicon_logits[0, rows[changed]])


def test_lexicon_logits_max_over_valid_positions_only():
    """Max-pooling ignores padded positions (even when they would win) and puts masked vocabulary dims at -inf."""
    torch.manual_seed(1)
    head = LexiconHead(5, 4, VOCAB)
    emb = torch.randn(VOCAB, 4)
    hidden = torch.randn(2, 4, 5)
    hidden[0, 2:] = 50.0  # padded positions of text 0: huge activations that must not leak into the max
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        got = lexicon_logits(head, hidden, mask, emb)
        full = head(hidden, emb)  # (2, 4, V): the plain formula at every position and word
    vocab_mask = vocabulary_mask()
    for i in range(2):
        valid = [p for p in range(4) if mask[i, p]]
        expected = torch.stack([full[i, p] for p in valid]).amax(0)
        torch.testing.assert_close(got[i, vocab_mask], expected[vocab_mask])
        assert torch.isneginf(got[i, ~vocab_mask]).all()
    assert torch.equal(lexicon_activation(got)[:, ~vocab_mask], torch.zeros(2, int((~vocab_mask).sum())))


def test_lexicon_activation_is_log1p_relu():
    """log(1 + max(0, x)) elementwise."""
    x = torch.tensor([-3.0, 0.0, 0.5, 10.0])
    expected = [math.log1p(max(0.0, v)) for v in x.tolist()]
    assert lexicon_activation(x).tolist() == pytest.approx(expected)


def test_model_lexicons_ignore_padding(tiny_unify):
    """Ids after EOT and pixels of padded frames do not change the text and video lexicon vectors."""
    tok = get_tokenizer()(["a red circle moves left", "a dog"], 32)
    frames = torch.randn(2, 3, 3, 48, 48)
    vmask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    noisy_ids, noisy_frames = tok.ids.clone(), frames.clone()
    noisy_ids[tok.mask == 0] = 4000
    noisy_frames[vmask == 0] = 30.0
    with torch.no_grad():
        text, video = tiny_unify(tok.ids, tok.mask, frames, vmask)
        text2, video2 = tiny_unify(noisy_ids, tok.mask, noisy_frames, vmask)
    torch.testing.assert_close(text2.lexicon_logits, text.lexicon_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(video2.lexicon_logits, video.lexicon_logits, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- sparse scoring and its explanation


def test_topk_sparsify_keeps_exactly_k_largest():
    """Exactly k non-zeros per row, the k largest, with their values unchanged."""
    x = torch.rand(3, 50, generator=torch.Generator().manual_seed(2)) + 0.01
    got = topk_sparsify(x, 5)
    for i in range(3):
        nonzero = [j for j in range(50) if got[i, j] != 0]
        assert len(nonzero) == 5
        assert sorted(nonzero) == sorted(sorted(range(50), key=lambda j: -float(x[i, j]))[:5])
        assert all(got[i, j] == x[i, j] for j in nonzero)
    assert torch.equal(topk_sparsify(x, 50), x)


def sparse_lexicons(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, VOCAB), dtype=np.float32)
    allowed = np.flatnonzero(vocabulary_mask().numpy())
    for i in range(n):
        out[i, rng.choice(allowed[:3000], 40, replace=False)] = rng.random(40).astype(np.float32) * 2
    return out


def test_lexicon_similarity_is_the_sum_of_overlap_contributions():
    """sum_j q_j v_j over the words active on both sides equals the lexicon score; overlap is sorted."""
    q, v = sparse_lexicons(2, 0), sparse_lexicons(3, 1)
    sim = lexicon_similarity(torch.from_numpy(q), torch.from_numpy(v)).numpy()
    for a in range(2):
        for b in range(3):
            words = overlap(q[a], v[b])
            total = sum(w.contribution for w in words)
            assert total == pytest.approx(float(sim[a, b]), rel=1e-5, abs=1e-6)
            loop = sum(float(q[a, j]) * float(v[b, j]) for j in np.flatnonzero(q[a]))
            assert total == pytest.approx(loop, rel=1e-5, abs=1e-6)
            assert [w.contribution for w in words] == sorted((w.contribution for w in words), reverse=True)


def test_top_words_are_the_largest_activations():
    """top_words lists the k most activated words, largest first, with their weights."""
    lex = np.zeros(VOCAB, dtype=np.float32)
    lex[token_id("red</w>")], lex[token_id("circle</w>")], lex[token_id("left</w>")] = 0.5, 2.0, 1.0
    assert top_words(lex, k=2) == [("circle", 2.0), ("left", 1.0)]


def test_fuse_scores_standardises_rows():
    """fused = z(latent) + lambda z(lexicon), z over the gallery of each query (population std)."""
    rng = np.random.default_rng(3)
    latent, lexicon = rng.normal(size=(3, 6)), rng.normal(size=(3, 6)) * 40 + 7
    got = fuse_scores(latent, lexicon, 0.5)

    def z(row):
        mean = sum(row) / len(row)
        std = math.sqrt(sum((x - mean) ** 2 for x in row) / len(row))
        return [(x - mean) / std for x in row]

    for i in range(3):
        expected = [a + 0.5 * b for a, b in zip(z(latent[i].tolist()), z(lexicon[i].tolist()), strict=True)]
        assert got[i].tolist() == pytest.approx(expected, abs=1e-5)
    shifted = fuse_scores(latent * 3 + np.arange(3)[:, None], lexicon * 0.01 - 5, 0.5)
    np.testing.assert_allclose(shifted, got, atol=1e-5)


def test_bag_of_words_marks_content_words_once():
    """(B, L) ids -> {0, 1} over the vocabulary: content words only, a repeated word once, no specials/padding."""
    tok = get_tokenizer()(["a red circle and a red square", "the dog"], 32)
    bow = bag_of_words(tok.ids, VOCAB)
    assert bow.shape == (2, VOCAB)
    assert {int(j) for j in torch.nonzero(bow[0])} == {
        token_id(w) for w in ("red</w>", "circle</w>", "square</w>")
    }
    assert {int(j) for j in torch.nonzero(bow[1])} == {token_id("dog</w>")}
    assert set(bow.unique().tolist()) == {0.0, 1.0}


# ---------------------------------------------------------------- losses


def test_flops_regularizer_matches_loop():
    """sum over dimensions of the squared batch-mean activation."""
    x = torch.rand(4, 9, generator=torch.Generator().manual_seed(4))
    expected = sum((sum(float(x[i, j]) for i in range(4)) / 4) ** 2 for j in range(9))
    assert float(flops_regularizer(x)) == pytest.approx(expected, rel=1e-5)


def test_bag_of_words_loss_matches_loop():
    """Balanced BCE over the vocabulary mask: mean over positives plus mean over negatives."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 6, generator=g)
    targets = torch.tensor([[1.0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1]])
    vmask = torch.tensor([True, True, True, True, False, True])
    pos, neg = [], []
    for i in range(2):
        for j in range(6):
            if vmask[j]:
                p = 1 / (1 + math.exp(-float(logits[i, j])))
                (pos if targets[i, j] else neg).append(-math.log(p) if targets[i, j] else -math.log(1 - p))
    expected = sum(pos) / len(pos) + sum(neg) / len(neg)
    assert float(bag_of_words_loss(logits, targets, vmask)) == pytest.approx(expected, rel=1e-5)


def test_self_distillation_zero_when_equal_positive_otherwise():
    """Identical latent and lexicon logits give 0; different ones a positive loss."""
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(6))
    assert float(self_distillation(a, a.clone(), 1.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(self_distillation(a, a.flip(0), 1.0)) > 0
    assert float(self_distillation(a, a.flip(0), 2.0)) > 0


def test_self_distillation_detaches_each_teacher():
    """Each side's gradient is that of KL(other side, detached || this side), in both retrieval directions."""
    # d/dz KL(q || softmax(z / tau)) = (softmax(z / tau) - q) / tau per row; batchmean over B rows, 2 directions.
    g = torch.Generator().manual_seed(7)
    latent = (torch.randn(4, 4, generator=g) * 2).requires_grad_()
    lexicon = (torch.randn(4, 4, generator=g) * 2).requires_grad_()
    tau = 1.5
    self_distillation(latent, lexicon, tau).backward()
    for student, teacher, grad in ((latent, lexicon, latent.grad), (lexicon, latent, lexicon.grad)):
        s, t = student.detach(), teacher.detach()
        expected = (
            F.softmax(s / tau, 1) - F.softmax(t / tau, 1) + F.softmax(s / tau, 0) - F.softmax(t / tau, 0)
        )
        torch.testing.assert_close(grad, expected / (tau * 4 * 2), atol=1e-6, rtol=1e-5)
