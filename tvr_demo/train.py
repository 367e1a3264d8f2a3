"""`python -m tvr_demo train`: one training loop for every configuration; runs unchanged under torchrun (DDP).

Symmetric InfoNCE with the learnable logit scale (clamped at 100), DRL's optimiser split (a lower learning rate for
the CLIP towers), warm-up then cosine decay, gradient clipping, bf16 autocast on GPU, a checkpoint every epoch in our
format, and resumption from the last finished epoch.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from tvr_demo.checkpoints import CONFIG_FILE, WEIGHTS_FILE, load_our_format, save_checkpoint
from tvr_demo.data import load_benchmark
from tvr_demo.errors import TVRError
from tvr_demo.framecache import cached_frames
from tvr_demo.models import ModelConfig, TVRModel
from tvr_demo.models.backbone import clip_config, get_tokenizer
from tvr_demo.models.unify import bag_of_words
from tvr_demo.objective import training_loss
from tvr_demo.paths import ASSETS_DIR, default_dataset_dir
from tvr_demo.video import normalize_frames

TRAIN_CONFIG_DIR = ASSETS_DIR / "train_configs"


@dataclass
class TrainConfig:
    epochs: int = 32  # the tiny model still improves at 16 (val R@1 +9 over epochs 10-16); see cycles
    cycles: int = 2  # cosine cycles with warm restarts (SGDR), each with its own warm-up; epochs divide evenly, so
    #                  a run of `epochs` continues one of epochs / cycles exactly (the bundled models: 2 x 16)
    batch_size: int = 64  # per process
    lr: float = 1e-3  # new modules (temporal, weight heads, lexicon heads)
    clip_lr_scale: float = 0.5  # DRL's coef_lr (1e-3) assumes pretrained CLIP; our towers start from scratch
    weight_decay: float = 0.2  # CLIP / DRL
    warmup_fraction: float = 0.1  # DRL: linear warm-up over the first 10% of steps, then cosine
    grad_clip: float = 1.0
    seed: int = 0
    val_split: str = "val"


@dataclass
class RunConfig:
    """A named training recipe: the model and the optimisation, stored as JSON in assets/train_configs."""

    name: str
    description: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def load(cls, name_or_path: str) -> RunConfig:
        path = Path(name_or_path)
        if not path.is_file():
            path = TRAIN_CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            known = sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.json"))
            raise TVRError(f"training config {name_or_path!r} not found; known: {', '.join(known)} or a JSON file")
        raw = json.loads(path.read_text())
        model = dict(raw.get("model", {}))
        model.setdefault("clip", clip_config(model.get("clip_name", "tvr-tiny")))
        train_fields = {f.name for f in fields(TrainConfig)}
        unknown = set(raw.get("train", {})) - train_fields
        if unknown:
            raise TVRError(f"{path}: unknown train fields {sorted(unknown)}")
        return cls(raw.get("name", path.stem), raw.get("description", ""), ModelConfig.from_dict(model),
                   TrainConfig(**raw.get("train", {})))


# ---------------------------------------------------------------- distributed helpers


def _dist_info() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _setup_distributed(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over ranks, keeping gradients for the local slice (the global in-batch negatives)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


def _gather_features(feats):
    return type(feats)(**{k: None if v is None else gather_batch(v) for k, v in feats.__dict__.items()})


# ---------------------------------------------------------------- data


@dataclass
class TrainData:
    frames: np.ndarray  # (N, V, 3, R, R) uint8
    masks: np.ndarray  # (N, V)
    caption_ids: torch.Tensor  # (C, T)
    caption_mask: torch.Tensor  # (C, T)
    captions_of: list[list[int]]  # video -> caption rows
    video_words: list[torch.Tensor]  # video -> BPE ids of all its captions (UNIFY grounding targets)


def prepare_data(root: Path, split: str, config: ModelConfig, progress: bool) -> TrainData:
    bench = load_benchmark(root, split)
    frames, masks = cached_frames(bench, config, progress=progress)
    tok = get_tokenizer()(bench.captions, config.max_words)
    captions_of = [bench.captions_of(v) for v in range(len(bench.video_ids))]
    words = [torch.unique(tok.ids[rows]) for rows in captions_of]
    return TrainData(frames, masks, tok.ids, tok.mask, captions_of, words)


# ---------------------------------------------------------------- the loop


def _param_groups(model: TVRModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        is_clip = name.startswith("clip.")
        decay = p.ndim >= 2 and "embedding" not in name
        groups.setdefault((is_clip, decay), []).append(p)
    return [{"params": ps, "lr": cfg.lr * (cfg.clip_lr_scale if is_clip else 1.0),
             "weight_decay": cfg.weight_decay if decay else 0.0} for (is_clip, decay), ps in groups.items()]


def _schedule(step: int, cycle_steps: int, warmup_fraction: float) -> float:
    """Learning-rate factor: linear warm-up then cosine decay, restarted every cycle_steps steps."""
    step %= cycle_steps
    warmup = max(1, int(cycle_steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cycle_steps - warmup)))


@torch.no_grad()
def validate(model: TVRModel, data: TrainData) -> dict[str, float]:
    """Text-to-video R@1 on the validation split (first caption of each video), per branch for UNIFY."""
    from tvr_demo.metrics import evaluate_similarity
    from tvr_demo.scoring import (
        encode_video_frames,
        fuse_scores,
        lexicon_matrix,
        similarity_matrix,
        text_bank,
    )

    model.eval()
    narrowed, model.lexicon_vocab = model.lexicon_vocab, None  # validate on the whole vocabulary, as inference
    rows = [c[0] for c in data.captions_of]
    texts = text_bank(model, model.encode_text(data.caption_ids[rows].to(model.device),
                                               data.caption_mask[rows].to(model.device)))
    videos = encode_video_frames(model, torch.from_numpy(np.array(data.frames)),
                                 torch.from_numpy(np.ascontiguousarray(data.masks)))
    latent = similarity_matrix(texts, videos, model.config.latent_interaction).cpu().numpy()
    gt = np.arange(len(rows))
    out = {"R@1": evaluate_similarity(latent, gt)["t2v"]["R@1"]}
    if model.config.unify is not None:
        lex = lexicon_matrix(texts, videos, model.config.unify.top_k).cpu().numpy()
        out["lexicon_R@1"] = evaluate_similarity(lex, gt)["t2v"]["R@1"]
        out["latent_R@1"] = out["R@1"]
        fused = fuse_scores(latent, lex, model.config.unify.fusion_lambda)
        out["R@1"] = evaluate_similarity(fused, gt)["t2v"]["R@1"]
        out["_sims"] = (latent, lex)  # type: ignore[assignment]
    model.train()
    model.lexicon_vocab = narrowed
    return out


def choose_fusion_lambda(latent: np.ndarray, lexicon: np.ndarray) -> float:
    """UNIFY's fusion weight, picked on the validation split by t2v + v2t R@1 over a small grid."""
    from tvr_demo.metrics import evaluate_similarity
    from tvr_demo.scoring import fuse_scores

    gt = np.arange(latent.shape[0])
    grid = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    scores = []
    for lam in grid:
        t2v = evaluate_similarity(fuse_scores(latent, lexicon, lam), gt)["t2v"]["R@1"]
        v2t = evaluate_similarity(fuse_scores(latent, lexicon, lam, query_axis=1), gt)["v2t"]["R@1"]
        scores.append(t2v + v2t)
    return grid[int(np.argmax(scores))]


def _logged_elapsed(log_path: Path, epochs_done: int) -> float:
    """Training seconds spent on the finished epochs, from the log (a resumed run's time counts them)."""
    if epochs_done == 0 or not log_path.is_file():
        return 0.0
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return next((float(r["elapsed_s"]) for r in reversed(records) if r.get("epoch") == epochs_done), 0.0)


def train(run: RunConfig, dataset: Path, out: Path, epochs: int | None = None, resume: bool = False,
          device: str | None = None, max_steps: int | None = None) -> Path:
    from tvr_demo.scoring import default_device

    dev = default_device(device)
    _setup_distributed(dev)
    rank, world = _dist_info()
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    cfg = run.train
    epochs = epochs or cfg.epochs
    cycles = min(cfg.cycles, epochs)  # a short run (tests, smoke runs) is one cycle per epoch at most
    if epochs % cycles:
        raise TVRError(f"{epochs} epochs do not split into {cycles} equal learning-rate cycles")
    out = Path(out)
    torch.manual_seed(cfg.seed)

    model = TVRModel(run.model)
    model.init_from_clip_text()
    start_epoch, state = 0, None
    state_path = out / "train_state.pt"
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        last, _ = load_our_format(out / "last")
        model.load_state_dict(last.state_dict())
        start_epoch = int(state["epoch"]) + 1
    model.to(dev)
    train_data = prepare_data(dataset, "train", run.model, progress=rank == 0)
    val_data = prepare_data(dataset, cfg.val_split, run.model, progress=rank == 0) if rank == 0 else None

    if run.model.unify is not None and run.model.unify.train_vocabulary == "captions":
        from tvr_demo.models.unify import vocabulary_mask

        words = torch.unique(train_data.caption_ids)
        model.lexicon_vocab = words[vocabulary_mask()[words]].to(dev)
    n_videos = train_data.frames.shape[0]
    steps_per_epoch = max(1, n_videos // (cfg.batch_size * world))
    total_steps = steps_per_epoch * epochs
    cycle_steps = total_steps // cycles
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    log_path = out / "log.jsonl"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    step = start_epoch * steps_per_epoch
    started = time.time() - _logged_elapsed(log_path, start_epoch)
    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)  # same permutation on every rank, then sharded
        order = rng.permutation(n_videos)[: steps_per_epoch * cfg.batch_size * world]
        mine = order.reshape(steps_per_epoch, world, cfg.batch_size)[:, rank]
        bar = tqdm(mine, desc=f"{run.name} epoch {epoch + 1}/{epochs}", disable=rank != 0, leave=False)
        losses = []
        for batch in bar:
            batch = np.sort(batch)
            rows = [int(rng.choice(train_data.captions_of[v])) for v in batch]
            ids = train_data.caption_ids[rows].to(dev)
            tmask = train_data.caption_mask[rows].to(dev)
            frames = normalize_frames(torch.from_numpy(np.array(train_data.frames[batch]))).to(dev)
            vmask = torch.from_numpy(train_data.masks[batch]).to(dev)
            words = None
            if run.model.unify is not None:
                words = torch.stack([bag_of_words(train_data.video_words[v][None], model.clip.token_embedding.
                                                  num_embeddings)[0] for v in batch]).to(dev)
            for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
                g["lr"] = base * _schedule(step, cycle_steps, cfg.warmup_fraction)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                text, video = (ddp or model)(ids, tmask, frames, vmask)
            text, video = _gather_features(text), _gather_features(video)
            if words is not None:
                words = gather_batch(words)
            # UNIFY's two stages run over the first cycle; later cycles stay in stage 2
            terms = training_loss(model, text, video, words, progress=min(1.0, step / cycle_steps))
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            model.clip.logit_scale.data.clamp_(max=math.log(100))  # as CLIP/DRL: the scale never passes 100
            losses.append(float(terms.total))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{float(model.logit_scale()):.1f}")
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        checksum = torch.tensor([float(sum(p.double().sum() for p in model.parameters()))])
        checksums = [checksum.clone() for _ in range(world)]
        if world > 1:
            dist.all_gather(checksums, checksum)  # every rank must hold the same weights after each epoch
        if rank == 0:
            val = validate(model, val_data)
            sims = val.pop("_sims", None)
            record = {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)),
                      "losses": [round(x, 4) for x in losses[:: max(1, len(losses) // 20)]] + [round(losses[-1], 4)],
                      "val": val, "elapsed_s": round(time.time() - started, 1), "world_size": world,
                      "param_checksums": [float(c) for c in checksums]}
            if sims is not None and epoch + 1 == epochs:
                model.config.unify.fusion_lambda = choose_fusion_lambda(*sims)
                record["fusion_lambda"] = model.config.unify.fusion_lambda
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            tqdm.write(json.dumps(record))
            meta = {"name": run.name, "description": run.description,
                    "training": {"train": asdict(cfg), "epoch": epoch + 1, "epochs": epochs, "dataset": str(dataset),
                                 "device": str(dev), "world_size": world, "val": val,
                                 "elapsed_s": record["elapsed_s"]}}
            save_checkpoint(model, out / f"epoch_{epoch + 1}", meta)
            save_checkpoint(model, out / "last", meta)
            torch.save({"epoch": epoch, "optimizer": optimizer.state_dict()}, str(state_path) + ".tmp")
            os.replace(str(state_path) + ".tmp", state_path)
        if dist.is_initialized():
            dist.barrier()
        if max_steps is not None and step >= max_steps:
            break
    if dist.is_initialized():
        dist.destroy_process_group()
    return out / "last"


def train_from_args(args) -> None:
    from tvr_demo.data.synthetic import ensure_default_dataset

    run = RunConfig.load(args.config)
    if args.seed is not None:
        run.train.seed = args.seed
    if args.batch_size is not None:
        run.train.batch_size = args.batch_size
    dataset = Path(args.dataset) if args.dataset else default_dataset_dir()
    if dataset.resolve() == default_dataset_dir().resolve():  # the bundled benchmark renders these splits on first use
        dataset = ensure_default_dataset(splits=("train", run.train.val_split))
    if not dataset.exists():
        raise TVRError(f"dataset folder {dataset} not found (generate it with `python -m tvr_demo generate --out "
                       f"{dataset}`)")
    path = train(run, dataset, Path(args.out), args.epochs, args.resume, args.device, args.max_steps)
    assert (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file()
    print(json.dumps({"checkpoint": str(path)}))
