"""DRL's optimiser and schedule (official `tvr/models/optimization.py` and `main.py` `prep_optimizer`): BertAdam,
`warmup_cosine` over the whole run, and the four parameter groups."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")  # DRL prep_optimizer: matched as substrings of the name
CLIP_PREFIX = "clip."  # DRL: names containing it get lr * coef_lr ("transformerClip." does not: capital C)
HEADS = {  # heads a departure may train at a rate of their own; at lr in DRL, like every module it adds
    "weight_heads": ("text_weight_fc.", "video_weight_fc."),  # WTI's weight heads
    "lexicon_heads": ("text_lexicon_head.", "video_lexicon_head."),  # UNIFY's (their tied projection is CLIP's)
}


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
                     head_lr_scales: Mapping[str, float] | None = None) -> list[dict]:
    """DRL's four groups: (CLIP or not) x (decayed or not), in prep_optimizer's order. Empty groups are dropped.

    A scale != 1 in `head_lr_scales` (keyed as HEADS; a departure from DRL) moves those heads out of the non-CLIP
    groups into two of their own, appended in HEADS' order (decayed, then not), at lr * scale."""
    named = list(model.named_parameters())
    scales = {head: 1.0 for head in HEADS} | dict(head_lr_scales or {})
    if unknown := set(scales) - set(HEADS):
        raise ValueError(f"no heads named {sorted(unknown)}; known: {sorted(HEADS)}")
    rates = {"clip": lr * coef_lr, "added": lr} | {head: lr * scale for head, scale in scales.items()}

    def kind(name: str) -> str:
        for head, prefixes in HEADS.items():
            if scales[head] != 1.0 and any(prefix in name for prefix in prefixes):  # "module." under DDP
                return head
        return "clip" if CLIP_PREFIX in name else "added"

    def decayed(name: str) -> bool:
        return not any(nd in name for nd in NO_DECAY)

    labelled = [(kind(n), decayed(n), p) for n, p in named]  # each name read once, not once per group
    groups = []
    order = [("clip", True), ("added", True), ("clip", False), ("added", False)]  # prep_optimizer's
    order += [(head, decay) for head in HEADS for decay in (True, False)]
    for group_kind, decay in order:
        params = [p for k, d, p in labelled if k == group_kind and d == decay]
        if params:
            groups.append({"params": params, "lr": rates[group_kind], "weight_decay": weight_decay if decay else 0.0})
    return groups


def build_bert_adam(model: nn.Module, lr: float, coef_lr: float, weight_decay: float, warmup: float,
                    total_steps: int, head_lr_scales: Mapping[str, float] | None = None
                    ) -> tuple[BertAdam, LambdaLR]:
    """DRL's optimiser (b1 0.9, b2 0.98, eps 1e-6, per-tensor clip 1.0) and its warmup_cosine over total_steps."""
    groups = parameter_groups(model, lr, coef_lr, weight_decay, head_lr_scales)
    optimizer = BertAdam(groups, lr=lr)
    scheduler = LambdaLR(optimizer, lambda step: warmup_cosine(step / max(1, total_steps), warmup))
    return optimizer, scheduler
