"""`python -m tvr_demo train`: DRL's training recipe for every configuration; runs unchanged under torchrun (DDP).

The official recipe (the DRL repository, foolwood/DRL): CLIP's weights from a local file, DRL's
initialisation of the modules it adds, an epoch over every (video, caption) pair, symmetric InfoNCE on S scaled by
exp(logit_scale) (capped at 100), BertAdam with warmup_cosine (tvr_demo.training.optimization), features gathered over ranks
with DRL's backward, bf16 autocast on GPU, a checkpoint every epoch in our format, and resumption after the last
finished epoch. A run config names every departure from the recipe and why (`RunConfig.departures`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from tvr_demo.data import load_benchmark
from tvr_demo.data.video import normalize_frames
from tvr_demo.errors import TVRError
from tvr_demo.models import ModelConfig, TVRModel
from tvr_demo.models.backbone import clip_config, get_tokenizer, load_pretrained_clip
from tvr_demo.models.checkpoints import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    bundled_registry,
    load_our_format,
    save_checkpoint,
    sha256_of,
)
from tvr_demo.models.unify import bag_of_words, lexicon_similarity
from tvr_demo.paths import ASSETS_DIR, BUNDLED_CHECKPOINT_DIR, default_dataset_dir
from tvr_demo.training.framecache import cached_frames
from tvr_demo.training.objective import training_loss
from tvr_demo.training.optimization import build_bert_adam

TRAIN_CONFIG_DIR = ASSETS_DIR / "train_configs"


@dataclass
class TrainConfig:
    """The optimisation; every default is DRL's paper row (official `scripts/msrvtt.sh` and `main.py`)."""

    epochs: int = 5  # DRL: 5 epochs, each over every (video, caption) pair of the training split
    batch_size: int = 128  # DRL: the global batch, all ranks together (each takes batch_size / world_size)
    lr: float = 1e-4  # DRL: the modules DRL adds (temporal module, weight heads) and UNIFY's lexicon heads
    coef_lr: float = 1e-3  # DRL: parameters named `clip.` train at lr * coef_lr (the towers start pretrained)
    weight_head_lr_scale: float = 1.0  # DRL: the WTI weight heads train at lr, like the other modules DRL adds
    lexicon_head_lr_scale: float = 1.0  # UNIFY's lexicon heads train at lr, like the modules DRL adds
    weight_decay: float = 0.2  # DRL prep_optimizer
    warmup_proportion: float = 0.1  # DRL warmup_cosine: linear warm-up over the first 10% of all steps
    grad_clip: float = 1.0  # DRL: all gradients together to this norm, before BertAdam's per-tensor clip
    seed: int = 0
    val_split: str = "val"


@dataclass
class RunConfig:
    """A named training recipe: the model and the optimisation, stored as JSON in assets/train_configs, with the
    reason for every train field that departs from DRL's recipe."""

    name: str
    description: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    departures: dict[str, str] = field(default_factory=dict)  # train field or clip_from -> why it departs from DRL
    clip_from: str | None = None  # a bundled checkpoint whose CLIP towers start the run (when no --clip-weights)

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
            raise TVRError(f"{path.name}: unknown train fields {sorted(unknown)}")
        train = TrainConfig(**raw.get("train", {}))
        departures = dict(raw.get("departures", {}))
        changed = [f.name for f in fields(TrainConfig) if f.name not in ("seed", "val_split")
                   and getattr(train, f.name) != f.default]
        clip_from = raw.get("clip_from")
        if clip_from is not None:
            changed.append("clip_from")  # DRL starts from OpenAI's CLIP; any other start needs its reason
        undocumented = [name for name in changed if name not in departures]
        if undocumented:
            raise TVRError(f"{path.name}: {undocumented} depart from DRL's recipe without a reason "
                           "under \"departures\"")
        return cls(raw.get("name", path.stem), raw.get("description", ""), ModelConfig.from_dict(model), train,
                   departures, clip_from)


# ---------------------------------------------------------------- distributed helpers


def _dist_info() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _setup_distributed(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


class AllGather(torch.autograd.Function):
    """DRL's AllGather (official `tvr/models/until_module.py`): concatenate over ranks; the backward returns only
    this rank's slice of the incoming gradient (no sum over ranks; DDP then averages the parameter gradients)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 (autograd's signature)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.batch = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return grad[ctx.batch * ctx.rank : ctx.batch * (ctx.rank + 1)]


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """The batch of every rank, concatenated (the global in-batch negatives), with DRL's backward."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    return AllGather.apply(x)


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
    video_of: np.ndarray  # (C,) caption row -> video
    video_words: list[torch.Tensor]  # video -> BPE ids of all its captions (UNIFY grounding targets)


def prepare_data(root: Path, split: str, config: ModelConfig, progress: bool) -> TrainData:
    bench = load_benchmark(root, split)
    frames, masks = cached_frames(bench, config, progress=progress)
    tok = get_tokenizer()(bench.captions, config.max_words)
    captions_of = [bench.captions_of(v) for v in range(len(bench.video_ids))]
    video_of = np.zeros(len(bench.captions), dtype=np.int64)
    for v, rows in enumerate(captions_of):
        video_of[rows] = v
    words = [torch.unique(tok.ids[rows]) for rows in captions_of]
    return TrainData(frames, masks, tok.ids, tok.mask, captions_of, video_of, words)


def video_batch(data: TrainData, videos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised frames (B, V, 3, R, R) with padded frames at zero in normalised space, as DRL pads, and masks."""
    masks = torch.from_numpy(np.ascontiguousarray(data.masks[videos]))
    return normalize_frames(torch.from_numpy(np.array(data.frames[videos])), masks), masks


# ---------------------------------------------------------------- model and optimiser


def clip_start(run: RunConfig, clip_weights: Path | None = None) -> Path | None:
    """The file CLIP's weights come from: --clip-weights, else the towers of the config's `clip_from` bundled
    checkpoint, else none (open_clip's random init)."""
    if clip_weights is not None or run.clip_from is None:
        return clip_weights
    entry = bundled_registry().get(run.clip_from)
    if entry is None:
        raise TVRError(f"{run.name} starts CLIP from the bundled checkpoint {run.clip_from!r}, which the registry "
                       f"does not list; train it first (scripts/train_bundled.py --names {run.clip_from})")
    return BUNDLED_CHECKPOINT_DIR / entry["path"] / WEIGHTS_FILE


def clip_provenance(run: RunConfig, clip_weights: Path | None = None) -> str | None:
    """What a checkpoint records of its start: the file's name and sha256, or the bundled checkpoint's."""
    path = clip_start(run, clip_weights)
    if path is None:
        return None
    origin = f"bundled {run.clip_from}" if clip_weights is None else Path(path).name
    return f"{origin} (sha256 {sha256_of(path)})"


def build_model(run: RunConfig, clip_weights: Path | None = None) -> TVRModel:
    """DRL's order: its init of every module it adds, CLIP's weights over CLIP (when given; otherwise open_clip's
    random init), then the temporal module copied from CLIP's text tower."""
    model = TVRModel(run.model)
    model.init_drl_modules()
    clip_weights = clip_start(run, clip_weights)
    if clip_weights is not None:
        load_pretrained_clip(model.clip, clip_weights, run.model.clip_name)
    model.init_from_clip_text()
    return model


def build_optimizer(model: TVRModel, train_config: TrainConfig, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """DRL's BertAdam over prep_optimizer's four groups and warmup_cosine over total_steps; step the scheduler once
    after every optimiser step."""
    c = train_config
    return build_bert_adam(model, c.lr, c.coef_lr, c.weight_decay, c.warmup_proportion, total_steps,
                           {"weight_heads": c.weight_head_lr_scale, "lexicon_heads": c.lexicon_head_lr_scale})


# ---------------------------------------------------------------- validation


@torch.no_grad()
def validate(model: TVRModel, data: TrainData) -> dict[str, float]:
    """Text-to-video R@1 on the validation split (first caption of each video), per branch for UNIFY."""
    from tvr_demo.evaluation.metrics import evaluate_similarity
    from tvr_demo.retrieval.scoring import (
        encode_video_frames,
        fuse_scores,
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
    if model.config.latent_interaction == "wti":  # where the text weight goes (does it collapse onto <eot>?)
        from tvr_demo.evaluation.token_weights import text_weight_stats

        stats = text_weight_stats(model, data.caption_ids[rows], data.caption_mask[rows])
        out["median_eot"] = round(stats.median_eot, 4)
        out["content_over_fillers"] = round(stats.share_content_over_fillers, 1)
    if model.config.unify is not None:
        lex = lexicon_similarity(texts.lexicon, videos.lexicon).cpu().numpy()
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
    from tvr_demo.evaluation.metrics import evaluate_similarity
    from tvr_demo.retrieval.scoring import fuse_scores

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


# ---------------------------------------------------------------- the loop: set-up, one epoch, end of epoch


@dataclass
class TrainingRun:
    """Everything one training run holds between its steps."""

    run: RunConfig
    dataset: Path
    out: Path
    device: torch.device
    rank: int
    world: int
    epochs: int
    model: TVRModel
    ddp: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data: TrainData
    val_data: TrainData | None
    steps_per_epoch: int
    start_epoch: int
    step: int
    started: float
    clip_from: str | None  # where CLIP's weights came from (None: random init), for the checkpoint's provenance

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"

    @property
    def state_path(self) -> Path:
        return self.out / "train_state.pt"


def setup_run(run: RunConfig, dataset: Path, out: Path, epochs: int | None = None, resume: bool = False,
              device: str | None = None, clip_weights: Path | None = None) -> TrainingRun:
    """Devices and ranks, the model (or the last finished epoch's, resuming), the data, optimiser and schedule."""
    from tvr_demo.retrieval.scoring import default_device

    dev = default_device(device)
    _setup_distributed(dev)
    rank, world = _dist_info()
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    cfg = run.train
    if cfg.batch_size % world:
        raise TVRError(f"batch size {cfg.batch_size} does not split over {world} processes")
    epochs = epochs or cfg.epochs
    out = Path(out)
    torch.manual_seed(cfg.seed)
    model = build_model(run, clip_weights)
    start_epoch, state = 0, None
    state_path = out / "train_state.pt"
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        last, _ = load_our_format(out / "last")
        model.load_state_dict(last.state_dict())
        start_epoch = int(state["epoch"]) + 1
    model.to(dev)
    data = prepare_data(dataset, "train", run.model, progress=rank == 0)
    val_data = prepare_data(dataset, cfg.val_split, run.model, progress=rank == 0) if rank == 0 else None
    if run.model.unify is not None and run.model.unify.train_vocabulary == "captions":
        from tvr_demo.models.unify import vocabulary_mask

        words = torch.unique(data.caption_ids)
        model.lexicon_vocab = words[vocabulary_mask()[words]].to(dev)
    steps_per_epoch = max(1, len(data.video_of) // cfg.batch_size)  # DRL's loader drops the last partial batch
    optimizer, scheduler = build_optimizer(model, cfg, steps_per_epoch * epochs)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    started = time.time() - _logged_elapsed(out / "log.jsonl", start_epoch)
    return TrainingRun(run, Path(dataset), out, dev, rank, world, epochs, model, ddp, optimizer, scheduler, data,
                       val_data, steps_per_epoch, start_epoch, start_epoch * steps_per_epoch, started,
                       clip_provenance(run, clip_weights) if rank == 0 else None)  # only rank 0 saves


def train_epoch(tr: TrainingRun, epoch: int, max_steps: int | None = None) -> list[float]:
    """One pass over every (video, caption) pair, shuffled (the same permutation on every rank, then sharded); a
    video can appear twice in a batch, as in DRL. Returns the losses of its steps."""
    model, data, cfg = tr.model, tr.data, tr.run.train
    rng = np.random.default_rng(cfg.seed * 1000 + epoch)
    per_rank = cfg.batch_size // tr.world
    order = rng.permutation(len(data.video_of))[: tr.steps_per_epoch * cfg.batch_size]
    mine = order.reshape(tr.steps_per_epoch, tr.world, per_rank)[:, tr.rank]
    bar = tqdm(mine, desc=f"{tr.run.name} epoch {epoch + 1}/{tr.epochs}", disable=tr.rank != 0, leave=False)
    total_steps = tr.steps_per_epoch * tr.epochs
    losses = []
    for rows in bar:
        videos = data.video_of[rows]
        ids, tmask = data.caption_ids[rows].to(tr.device), data.caption_mask[rows].to(tr.device)
        frames, vmask = (t.to(tr.device) for t in video_batch(data, videos))
        words = None
        if tr.run.model.unify is not None:
            vocab = model.clip.token_embedding.num_embeddings
            words = torch.stack([bag_of_words(data.video_words[v][None], vocab)[0] for v in videos]).to(tr.device)
        with torch.autocast(tr.device.type, dtype=torch.bfloat16, enabled=tr.device.type == "cuda"):
            text, video = (tr.ddp or model)(ids, tmask, frames, vmask)
        text, video = _gather_features(text), _gather_features(video)
        if words is not None:
            words = gather_batch(words)
        terms = training_loss(model, text, video, words, progress=tr.step / total_steps)
        tr.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        tr.optimizer.step()
        tr.scheduler.step()
        model.clamp_logit_scale()
        losses.append(float(terms.total.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{float(model.logit_scale().detach()):.1f}")
        tr.step += 1
        if max_steps is not None and tr.step >= max_steps:
            break
    return losses


def end_epoch(tr: TrainingRun, epoch: int, losses: list[float]) -> None:
    """Check the ranks agree, validate, log, and save the epoch's checkpoint and the optimiser state (rank 0)."""
    model = tr.model
    checksum = torch.tensor([float(sum(p.detach().double().sum() for p in model.parameters()))])
    checksums = [checksum.clone() for _ in range(tr.world)]
    if tr.world > 1:
        dist.all_gather(checksums, checksum)  # every rank must hold the same weights after each epoch
    if tr.rank == 0:
        val = validate(model, tr.val_data)
        sims = val.pop("_sims", None)
        record = {"epoch": epoch + 1, "step": tr.step, "loss": float(np.mean(losses)),
                  "losses": [round(x, 4) for x in losses[:: max(1, len(losses) // 20)]] + [round(losses[-1], 4)],
                  "val": val, "elapsed_s": round(time.time() - tr.started, 1), "world_size": tr.world,
                  "param_checksums": [float(c) for c in checksums]}
        if sims is not None and epoch + 1 == tr.epochs:
            model.config.unify.fusion_lambda = choose_fusion_lambda(*sims)
            record["fusion_lambda"] = model.config.unify.fusion_lambda
        with open(tr.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        tqdm.write(json.dumps(record))
        meta = {"name": tr.run.name, "description": tr.run.description,
                "training": {"train": asdict(tr.run.train), "departures": tr.run.departures,
                             "clip_from": tr.clip_from, "epoch": epoch + 1,
                             "epochs": tr.epochs, "dataset": str(tr.dataset), "device": str(tr.device),
                             "world_size": tr.world, "val": val, "elapsed_s": record["elapsed_s"]}}
        save_checkpoint(model, tr.out / f"epoch_{epoch + 1}", meta)
        save_checkpoint(model, tr.out / "last", meta)
        tmp = tr.state_path.with_suffix(".tmp")
        torch.save({"epoch": epoch, "optimizer": tr.optimizer.state_dict(), "scheduler": tr.scheduler.state_dict()},
                   tmp)
        os.replace(tmp, tr.state_path)
    if dist.is_initialized():
        dist.barrier()


def train(run: RunConfig, dataset: Path, out: Path, epochs: int | None = None, resume: bool = False,
          device: str | None = None, max_steps: int | None = None, clip_weights: Path | None = None) -> Path:
    """Train `run` on the dataset's training split; returns the last checkpoint's folder."""
    tr = setup_run(run, dataset, out, epochs, resume, device, clip_weights)
    for epoch in range(tr.start_epoch, tr.epochs):
        losses = train_epoch(tr, epoch, max_steps)
        end_epoch(tr, epoch, losses)
        if max_steps is not None and tr.step >= max_steps:
            break
    if dist.is_initialized():
        dist.destroy_process_group()
    return tr.out / "last"


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
    clip_weights = Path(args.clip_weights) if args.clip_weights else None
    path = train(run, dataset, Path(args.out), args.epochs, args.resume, args.device, args.max_steps, clip_weights)
    assert (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file()
    print(json.dumps({"checkpoint": str(path)}))
