"""DRL's optimiser and schedule (official `tvr/models/optimization.py` and `main.py` `prep_optimizer`): BertAdam,
`warmup_cosine` over the whole run, and the four parameter groups."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")  # DRL prep_optimizer: matched as substrings of the name
CLIP_PREFIX = "clip."  # DRL: names containing it get lr * coef_lr ("transformerClip." does not: capital C)
WEIGHT_HEADS = ("text_weight_fc.", "video_weight_fc.")  # WTI's weight heads: at lr in DRL, like every module it adds
LEXICON_HEADS = ("text_lexicon_head.", "video_lexicon_head.")  # UNIFY's lexicon heads: at lr, as modules DRL's code adds


def warmup_cosine(progress: float, warmup: float) -> float:
    """DRL's schedule factor at progress x = step / t_total: x / warmup during warm-up, then 0.5 (1 + cos(pi x)),
    the cosine of the whole run (not re-normalised after warm-up, so the peak is just under 1)."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class BertAdam(torch.optim.Optimizer):
    """DRL's BertAdam without its built-in schedule (a LambdaLR drives `lr`): Adam moments with no bias correction,
    weight decay added to the update before the learning rate, and each tensor's gradient clipped to norm
    `max_grad_norm` on its own before the moments see it."""

    def __init__(self, params: Iterable, lr: float, b1: float = 0.9, b2: float = 0.98, e: float = 1e-6,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0) -> None:
        super().__init__(params, {"lr": lr, "b1": b1, "b2": b2, "e": e, "weight_decay": weight_decay,
                                  "max_grad_norm": max_grad_norm})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's signature)
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                if group["max_grad_norm"] > 0:
                    nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                grad = p.grad
                m, v = state["next_m"], state["next_v"]
                m.mul_(group["b1"]).add_(grad, alpha=1 - group["b1"])
                v.mul_(group["b2"]).addcmul_(grad, grad, value=1 - group["b2"])
                update = m / (v.sqrt() + group["e"])
                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, lr: float, coef_lr: float, weight_decay: float,
                     weight_head_lr_scale: float = 1.0, lexicon_head_lr_scale: float = 1.0) -> list[dict]:
    """DRL's four groups: (CLIP or not) x (decayed or not), in prep_optimizer's order. Empty groups are dropped.

    A head scale != 1 (a departure from DRL) moves those heads out of the non-CLIP groups into two of their own,
    appended (decayed, then not), at lr * scale: the WTI weight heads first, then UNIFY's lexicon heads. Their tied
    projection is CLIP's token embedding and stays in CLIP's group."""
    named = list(model.named_parameters())
    own_rates = {"weight_heads": (WEIGHT_HEADS, weight_head_lr_scale),
                 "lexicon_heads": (LEXICON_HEADS, lexicon_head_lr_scale)}
    rates = {"clip": lr * coef_lr, "added": lr} | {k: lr * scale for k, (_, scale) in own_rates.items()}

    def kind(name: str) -> str:
        for head_kind, (prefixes, scale) in own_rates.items():
            if scale != 1.0 and any(prefix in name for prefix in prefixes):  # "module." under DDP
                return head_kind
        return "clip" if CLIP_PREFIX in name else "added"

    def decayed(name: str) -> bool:
        return not any(nd in name for nd in NO_DECAY)

    labelled = [(kind(n), decayed(n), p) for n, p in named]  # each name read once, not once per group
    groups = []
    order = [("clip", True), ("added", True), ("clip", False), ("added", False)]  # prep_optimizer's
    order += [(head_kind, decay) for head_kind in own_rates for decay in (True, False)]
    for group_kind, decay in order:
        params = [p for k, d, p in labelled if k == group_kind and d == decay]
        if params:
            groups.append({"params": params, "lr": rates[group_kind], "weight_decay": weight_decay if decay else 0.0})
    return groups


def build_bert_adam(model: nn.Module, lr: float, coef_lr: float, weight_decay: float, warmup: float,
                    total_steps: int, weight_head_lr_scale: float = 1.0,
                    lexicon_head_lr_scale: float = 1.0) -> tuple[BertAdam, LambdaLR]:
    """DRL's optimiser (b1 0.9, b2 0.98, eps 1e-6, per-tensor clip 1.0) and its warmup_cosine over total_steps."""
    groups = parameter_groups(model, lr, coef_lr, weight_decay, weight_head_lr_scale, lexicon_head_lr_scale)
    optimizer = BertAdam(groups, lr=lr)
    scheduler = LambdaLR(optimizer, lambda step: warmup_cosine(step / max(1, total_steps), warmup))
    return optimizer, scheduler
