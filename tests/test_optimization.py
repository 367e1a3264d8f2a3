"""DRL's optimiser and schedule: `build_optimizer` against a re-implementation of the official BertAdam,
warmup_cosine and prep_optimizer written here from the official DRL code (its training loop and optimization.py)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import tiny_config
from tvr_demo.models import TVRModel, UnifyConfig
from tvr_demo.training.train import TrainConfig, build_optimizer

STEPS = 20


def _official_warmup_cosine(x: float, warmup: float) -> float:
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


class _OfficialBertAdam:
    """The official optimiser as a loop over parameters: per-parameter step counter, schedule inside, per-tensor
    clip, no bias correction, decay added to the update before the lr."""

    def __init__(self, groups: list[dict], warmup: float, t_total: int) -> None:
        self.groups, self.warmup, self.t_total = groups, warmup, t_total
        self.state: dict[int, dict] = {}

    def lr_at(self, group: dict, step: int) -> float:
        return group["lr"] * _official_warmup_cosine(step / self.t_total, self.warmup)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.groups:
            for p in group["params"]:
                st = self.state.setdefault(id(p), {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
                norm = float(p.grad.norm())
                if norm > 1.0:
                    p.grad.mul_(1.0 / (norm + 1e-6))
                g = p.grad
                st["m"] = 0.9 * st["m"] + 0.1 * g
                st["v"] = 0.98 * st["v"] + 0.02 * g * g
                update = st["m"] / (st["v"].sqrt() + 1e-6)
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p
                p -= self.lr_at(group, st["step"]) * update
                st["step"] += 1


def _official_groups(model: torch.nn.Module, lr: float, coef_lr: float, weight_decay: float) -> list[dict]:
    no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    named = list(model.named_parameters())
    decay = [(n, p) for n, p in named if not any(nd in n for nd in no_decay)]
    no_dec = [(n, p) for n, p in named if any(nd in n for nd in no_decay)]
    return [
        {"params": [p for n, p in decay if "clip." in n], "weight_decay": weight_decay, "lr": lr * coef_lr},
        {"params": [p for n, p in decay if "clip." not in n], "weight_decay": weight_decay, "lr": lr},
        {"params": [p for n, p in no_dec if "clip." in n], "weight_decay": 0.0, "lr": lr * coef_lr},
        {"params": [p for n, p in no_dec if "clip." not in n], "weight_decay": 0.0, "lr": lr},
    ]


def _two_models() -> tuple[TVRModel, TVRModel]:
    torch.manual_seed(0)
    ours = TVRModel(tiny_config(interaction="wti"))
    ref = TVRModel(tiny_config(interaction="wti"))
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_twenty_steps_match_the_official_bertadam_and_schedule():
    """Same gradients for 20 steps (some tensors above norm 1, so the per-tensor clip acts) give the same weights,
    and the learning rate follows warmup_cosine over the whole run."""
    cfg = TrainConfig(lr=1e-3, coef_lr=0.1, weight_decay=0.2, warmup_proportion=0.1)
    ours, ref = _two_models()
    optimizer, scheduler = build_optimizer(ours, cfg, STEPS)
    official = _OfficialBertAdam(_official_groups(ref, cfg.lr, cfg.coef_lr, cfg.weight_decay), 0.1, STEPS)
    gen = torch.Generator().manual_seed(1)
    lrs: list[list[float]] = []
    for _ in range(STEPS):
        for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
            scale = 3.0 if "weight_fc" in name else 0.01  # heads: clipped per tensor; the rest: not
            p.grad = torch.randn(p.shape, generator=gen) * scale
            q.grad = p.grad.clone()
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
        official.step()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6, rtol=0), name
    clip_lr = cfg.lr * cfg.coef_lr
    # hand-computed factors: 0 at step 0; 0.5 (1 + cos(0.1 pi)) once warm-up ends at step 2; 0.5 (1 + cos(0.95 pi))
    for step, factor in ((0, 0.0), (2, 0.9755282581), (19, 0.0061558297)):
        assert max(lrs[step]) == pytest.approx(cfg.lr * factor, rel=1e-6, abs=1e-12)
        assert min(lrs[step]) == pytest.approx(clip_lr * factor, rel=1e-6, abs=1e-12)
    assert lrs[1][0] == pytest.approx(clip_lr * 0.5)  # halfway through warm-up


def test_weights_moved_and_the_clip_towers_moved_less():
    """The comparison above is not vacuous: training moved every group, CLIP's at lr * coef_lr."""
    cfg = TrainConfig(lr=1e-3, coef_lr=0.1)
    ours, _ = _two_models()
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    optimizer, scheduler = build_optimizer(ours, cfg, STEPS)
    for _ in range(5):
        for p in ours.parameters():
            p.grad = torch.ones_like(p) * 0.01
        optimizer.step()
        scheduler.step()
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in ours.named_parameters()}
    assert moved["text_weight_fc.2.bias"] > 5 * moved["clip.ln_final.bias"] > 0


@pytest.mark.parametrize(("name", "decayed", "clip"), [
    ("clip.ln_final.weight", True, True),  # CLIP's LayerNorms are named ln_*: DRL decays them
    ("clip.logit_scale", True, True),
    ("clip.token_embedding.weight", True, True),
    ("clip.transformer.resblocks.0.attn.in_proj_bias", False, True),
    ("transformerClip.resblocks.0.ln_1.weight", True, False),  # capital C: not a `clip.` name
    ("text_weight_fc.0.bias", False, False),
    ("frame_position_embeddings.weight", True, False),
])
def test_parameter_groups_follow_prep_optimizer(name, decayed, clip):
    cfg = TrainConfig(lr=1e-4, coef_lr=1e-3, weight_decay=0.2)
    model, _ = _two_models()
    optimizer, _ = build_optimizer(model, cfg, STEPS)
    param = dict(model.named_parameters())[name]
    group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
    assert group["weight_decay"] == (0.2 if decayed else 0.0)
    assert group["initial_lr"] == pytest.approx(1e-7 if clip else 1e-4)


def _assert_group(model: TVRModel, cfg: TrainConfig, name: str, lr: float, decayed: bool) -> None:
    """Every parameter sits in exactly one group, and `name`'s group has the given rate and decay."""
    optimizer, _ = build_optimizer(model, cfg, STEPS)
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    param = dict(model.named_parameters())[name]
    group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
    assert group["initial_lr"] == pytest.approx(lr)
    assert group["weight_decay"] == (0.2 if decayed else 0.0)


@pytest.mark.parametrize(("name", "lr", "decayed"), [
    ("text_weight_fc.0.weight", 2.5e-5, True),  # the weight heads: lr * weight_head_lr_scale
    ("text_weight_fc.2.bias", 2.5e-5, False),
    ("video_weight_fc.0.weight", 2.5e-5, True),
    ("transformerClip.resblocks.0.ln_1.weight", 1e-4, True),  # every other module keeps DRL's group
    ("clip.ln_final.weight", 1e-7, True),
    ("clip.transformer.resblocks.0.attn.in_proj_bias", 1e-7, False),
])
def test_the_weight_head_departure_moves_only_the_heads(name, lr, decayed):
    """`weight_head_lr_scale` (a bundled departure) changes the WTI heads' rate and nothing else, and every
    parameter stays in exactly one group."""
    cfg = TrainConfig(lr=1e-4, coef_lr=1e-3, weight_decay=0.2, weight_head_lr_scale=0.25)
    _assert_group(_two_models()[0], cfg, name, lr, decayed)


@pytest.mark.parametrize(("name", "lr", "decayed"), [
    ("text_lexicon_head.dense.weight", 1e-3, True),  # the lexicon heads: lr * lexicon_head_lr_scale
    ("video_lexicon_head.norm.weight", 1e-3, True),  # a LayerNorm not named "LayerNorm": decayed, as DRL's rule says
    ("text_lexicon_head.bias", 1e-3, False),
    ("video_lexicon_head.dense.bias", 1e-3, False),
    ("clip.token_embedding.weight", 5e-4, True),  # the heads' tied projection stays CLIP's
    ("transformerClip.resblocks.0.ln_1.weight", 1e-4, True),  # every other module keeps DRL's group
    ("clip.transformer.resblocks.0.attn.in_proj_bias", 5e-4, False),
])
def test_the_lexicon_head_departure_moves_only_the_lexicon_heads(name, lr, decayed):
    """`lexicon_head_lr_scale` (the bundled UNIFY's departure) changes UNIFY's lexicon heads' rate and nothing else,
    and every parameter stays in exactly one group."""
    cfg = TrainConfig(lr=1e-4, coef_lr=5.0, weight_decay=0.2, lexicon_head_lr_scale=10.0)
    _assert_group(TVRModel(tiny_config(interaction="dp", unify=UnifyConfig(latent="dp"))), cfg, name, lr, decayed)
