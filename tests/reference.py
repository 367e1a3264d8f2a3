"""Independent references for the tests, written from the official DRL code and docs/unify-design.md (never calling tvr_demo's
formulas): plain loops over tokens and frames, and numpy float64 versions of the same definitions for sizes where a
Python loop is too slow."""

from __future__ import annotations

import math

import numpy as np
import torch


def loop_dot(x: torch.Tensor, y: torch.Tensor) -> float:
    return sum(float(a) * float(b) for a, b in zip(x.tolist(), y.tolist(), strict=True))


def loop_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each row (last axis) divided by its Euclidean norm, row by row."""
    flat = x.reshape(-1, x.shape[-1])
    rows = [r / math.sqrt(loop_dot(r, r)) for r in flat]
    return torch.stack(rows).reshape(x.shape)


def loop_cosine(text, tmask, video, vmask):
    """s[a][b][t][v] = <t_at, v_bv> if both valid else 0.0 (masked entries are 0, not -inf, as the official code)."""
    a_n, t_n = tmask.shape
    b_n, v_n = vmask.shape
    s = torch.zeros(a_n, b_n, t_n, v_n, dtype=torch.float64)
    for a in range(a_n):
        for b in range(b_n):
            for t in range(t_n):
                for v in range(v_n):
                    if tmask[a, t] and vmask[b, v]:
                        s[a, b, t, v] = loop_dot(text[a, t], video[b, v])
    return s


def loop_softmax_weights(logits, mask):
    """softmax over valid positions only; padded positions get weight 0."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for i in range(mask.shape[0]):
        valid = [j for j in range(mask.shape[1]) if mask[i, j]]
        m = max(float(logits[i, j]) for j in valid)
        z = sum(math.exp(float(logits[i, j]) - m) for j in valid)
        for j in valid:
            out[i, j] = math.exp(float(logits[i, j]) - m) / z
    return out


def loop_wti(text, tmask, tw, video, vmask, vw):
    """(t2v, v2t, token argmax, frame argmax) from the official definition, with first-max argmax."""
    s = loop_cosine(text, tmask, video, vmask)
    a_n, b_n, t_n, v_n = s.shape
    t2v = torch.zeros(a_n, b_n, dtype=torch.float64)
    v2t = torch.zeros(a_n, b_n, dtype=torch.float64)
    t_arg = torch.zeros(a_n, b_n, t_n, dtype=torch.long)
    v_arg = torch.zeros(a_n, b_n, v_n, dtype=torch.long)
    for a in range(a_n):
        for b in range(b_n):
            for t in range(t_n):
                row = [float(s[a, b, t, v]) for v in range(v_n)]
                t_arg[a, b, t] = row.index(max(row))
                t2v[a, b] += float(tw[a, t]) * max(row)
            for v in range(v_n):
                col = [float(s[a, b, t, v]) for t in range(t_n)]
                v_arg[a, b, v] = col.index(max(col))
                v2t[a, b] += float(vw[b, v]) * max(col)
    return t2v, v2t, t_arg, v_arg


def random_masks(n: int, length: int, lengths: list[int]) -> torch.Tensor:
    mask = torch.zeros(n, length, dtype=torch.long)
    for i, k in enumerate(lengths):
        mask[i, :k] = 1
    return mask




def loop_similarity(tokens, tmask, frames, vmask, interaction, t_logits=None, v_logits=None) -> torch.Tensor:
    """S (A, B) of unnormalised features as the official DRL code computes it: DP = cos(EOT, normalise(mean of normalised valid frames));
    WTI = (sum_t w_t max_v s + sum_v w_v max_t s) / 2 with softmax weights over valid positions; TI the same with
    uniform weights."""
    tn, vn = loop_normalize(tokens), loop_normalize(frames)
    a_n, b_n = tmask.shape[0], vmask.shape[0]
    if interaction == "dp":
        out = torch.zeros(a_n, b_n, dtype=torch.float64)
        for a in range(a_n):
            eot = loop_normalize(tokens[a, int(sum(tmask[a].tolist())) - 1])
            for b in range(b_n):
                valid = [vn[b, v] for v in range(vmask.shape[1]) if vmask[b, v]]
                out[a, b] = loop_dot(eot, loop_normalize(sum(valid) / len(valid)))
        return out
    if interaction == "wti":
        tw, vw = loop_softmax_weights(t_logits, tmask), loop_softmax_weights(v_logits, vmask)
    else:
        tw = tmask.double() / tmask.double().sum(1, keepdim=True)
        vw = vmask.double() / vmask.double().sum(1, keepdim=True)
    t2v, v2t, *_ = loop_wti(tn, tmask, tw, vn, vmask, vw)
    return (t2v + v2t) / 2


def np_wti(text, tmask, tw, video, vmask, vw) -> np.ndarray:
    """WTI / TI (A, B) in float64 numpy from the definition, for inputs already L2-normalised and weighted:
    s = <t, v> on valid pairs and 0 on masked ones (0, not -inf, takes part in the max, as the official code);
    S = (sum_t w_t max_v s + sum_v w_v max_t s) / 2."""
    t, v = (np.asarray(x, dtype=np.float64) for x in (text, video))
    tm, vm = (np.asarray(x, dtype=np.float64) for x in (tmask, vmask))
    s = np.einsum("atd,bvd->abtv", t, v) * tm[:, None, :, None] * vm[None, :, None, :]
    t2v = (s.max(axis=3) * np.asarray(tw, dtype=np.float64)[:, None, :]).sum(-1)
    v2t = (s.max(axis=2) * np.asarray(vw, dtype=np.float64)[None, :, :]).sum(-1)
    return (t2v + v2t) / 2


def np_softmax_weights(logits, mask) -> np.ndarray:
    """softmax over the valid positions of each row, 0 on padding (float64)."""
    x = np.where(np.asarray(mask) > 0, np.asarray(logits, dtype=np.float64), -np.inf)
    x = np.exp(x - x.max(-1, keepdims=True))
    return x / x.sum(-1, keepdims=True)


def np_uniform_weights(mask) -> np.ndarray:
    m = np.asarray(mask, dtype=np.float64)
    return m / m.sum(-1, keepdims=True)


def loop_pessimistic_rank(scores, gt: list[int]) -> int:
    """The number of non-ground-truth items scoring at least the best ground truth (a tie counts against it)."""
    best = max(float(scores[g]) for g in gt)
    return sum(1 for i, s in enumerate(scores) if i not in gt and float(s) >= best)


def loop_zscore(row) -> list[float]:
    """(x - mean) / population std, 0 for a constant row."""
    xs = [float(x) for x in row]
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    return [(x - mean) / std if std > 0 else 0.0 for x in xs]
