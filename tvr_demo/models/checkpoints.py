"""Checkpoints: our format (safetensors + JSON config), the official DRL format, and the registry of named models.

Everything loads strictly, from safetensors or `torch.load(weights_only=True)`: a wrong prefix or architecture fails
loudly with the missing and unexpected keys, instead of silently giving plain CLIP as the official loader does.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tvr_demo.errors import CheckpointError
from tvr_demo.models import ModelConfig, TVRModel
from tvr_demo.models.backbone import clip_config_from_state_dict
from tvr_demo.paths import BUNDLED_CHECKPOINT_DIR

FORMAT = "tvr_demo/1"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
REGISTRY_FILE = BUNDLED_CHECKPOINT_DIR / "registry.json"


@dataclass
class Checkpoint:
    """A loaded model with where it came from and what is known of it (training provenance, test metrics)."""

    model: TVRModel
    name: str
    source: str  # "bundled", "user", "path" or "official"
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.model.config


# ---------------------------------------------------------------- our format


def save_checkpoint(model: TVRModel, out_dir: Path, meta: dict[str, Any] | None = None,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Write model.safetensors (atomically) and config.json (model config + provenance) into out_dir."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    tmp = out_dir / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, out_dir / WEIGHTS_FILE)
    config = {"format": FORMAT, "model": model.config.to_dict(), **(meta or {})}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def _load_strict(model: TVRModel, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model its config describes: {len(missing)} missing keys "
            f"{missing[:6]}{' ...' if len(missing) > 6 else ''}, {len(unexpected)} unexpected keys "
            f"{unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
    for key, value in model.state_dict().items():
        if state_dict[key].shape != value.shape:
            raise CheckpointError(f"{path}: tensor {key} has shape {tuple(state_dict[key].shape)}, "
                                  f"the architecture needs {tuple(value.shape)}")
    model.load_state_dict(state_dict, strict=True)


def load_our_format(path: Path) -> tuple[TVRModel, dict[str, Any]]:
    """A directory (or its model.safetensors) in our format."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = path if path.is_dir() else path.parent
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{directory} is not a tvr_demo checkpoint: expected {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        meta = json.loads(config_path.read_text())
        config = ModelConfig.from_dict(meta["model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path} is not a valid tvr_demo config: {err}") from err
    try:
        state_dict = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file (truncated?): {err}") from err
    model = TVRModel(config)
    _load_strict(model, {k: v.float() for k, v in state_dict.items()}, weights_path)
    return model.eval(), meta


# ---------------------------------------------------------------- the official DRL format


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True; a pickle that would run code is refused with a clear message."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"refused to load {path}: it is not a plain tensor file (weights_only loading "
                              f"rejected it, so it may contain code). Re-save it as a state dict. ({err})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj


def official_config(state_dict: dict[str, torch.Tensor], interaction: str | None = None) -> ModelConfig:
    """Infer DRL's configuration from an official state dict's key names and tensor shapes."""
    clip_sd = {k.removeprefix("clip."): v for k, v in state_dict.items() if k.startswith("clip.")}
    try:
        clip = clip_config_from_state_dict(clip_sd)
    except KeyError as err:
        raise CheckpointError(f"not an official DRL checkpoint: no CLIP tensor {err} under 'clip.'") from err
    temporal_layers = len({k.split(".")[2] for k in state_dict if k.startswith("transformerClip.resblocks.")})
    if any(k.startswith("lstm_visual.") for k in state_dict):
        raise CheckpointError("DRL checkpoints with agg_module seqLSTM are not supported (seqTransf and meanP are)")
    fc_linears = [k for k in state_dict if k.startswith("text_weight_fc") and k.endswith("weight")]
    inferred = "wti" if fc_linears else "dp"
    return ModelConfig(
        clip_name="official-drl", clip=clip, temporal="seqTransf" if temporal_layers else "meanP",
        temporal_layers=temporal_layers or 4, interaction=interaction or inferred,
        wti_arch=len(fc_linears) or 2)


def load_official_drl(path: Path, interaction: str | None = None) -> TVRModel:
    """`pytorch_model.bin[.N]` as the official code saves it (keys under clip., transformerClip., ...; fp16 CLIP)."""
    state_dict = read_torch_state_dict(path)
    if any(k.startswith("module.") for k in state_dict):  # saved from a DataParallel/DDP wrapper
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    config = official_config(state_dict, interaction)
    if interaction in ("ti", "dp") and config.interaction != interaction:
        config.interaction = interaction
    model = TVRModel(config)
    if config.interaction != "wti":  # the weight heads are unused by TI / DP: drop them rather than fail
        state_dict = {k: v for k, v in state_dict.items() if "_weight_fc" not in k}
    _load_strict(model, {k: v.float() for k, v in state_dict.items()}, path)
    return model.eval()


# ---------------------------------------------------------------- the registry


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundled_registry() -> dict[str, dict[str, Any]]:
    """name -> entry of checkpoints/registry.json (path, sha256, description, provenance, metrics)."""
    if not REGISTRY_FILE.is_file():
        return {}
    return json.loads(REGISTRY_FILE.read_text())


def user_checkpoint_dirs() -> list[Path]:
    """Directories in our format under $TVR_DEMO_CHECKPOINTS (a user's own collection)."""
    root = os.environ.get("TVR_DEMO_CHECKPOINTS")
    if not root or not Path(root).is_dir():
        return []
    return sorted(p for p in Path(root).iterdir() if (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file())


def list_checkpoints() -> list[dict[str, Any]]:
    """Every named checkpoint: the bundled ones, then the user's."""
    entries = [{"name": name, "source": "bundled", **entry} for name, entry in bundled_registry().items()]
    for d in user_checkpoint_dirs():
        meta = json.loads((d / CONFIG_FILE).read_text())
        entries.append({"name": d.name, "source": "user", "path": str(d), "model": meta.get("model", {}),
                        "description": meta.get("description", ""), "metrics": meta.get("metrics", {})})
    return entries


def load_checkpoint(spec: str | Path, device: str | torch.device = "cpu", interaction: str | None = None
                    ) -> Checkpoint:
    """Load by registry name, our directory/file, or an official `pytorch_model.bin[.N]` file."""
    spec_str = str(spec)
    registry = bundled_registry()
    if spec_str in registry:
        entry = registry[spec_str]
        directory = BUNDLED_CHECKPOINT_DIR / entry["path"]
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"bundled checkpoint {spec_str!r} is missing its weights at {weights}")
        if entry.get("sha256") and sha256_of(weights) != entry["sha256"]:
            raise CheckpointError(f"bundled checkpoint {spec_str!r} failed its sha256 check: {weights} is "
                                  "corrupt or was changed; restore it with git checkout")
        model, meta = load_our_format(directory)
        checkpoint = Checkpoint(model, spec_str, "bundled", directory, {**meta, **entry})
    else:
        user = {d.name: d for d in user_checkpoint_dirs()}
        path = user.get(spec_str, Path(spec_str))
        if not path.exists():
            known = sorted(registry) + sorted(user)
            raise CheckpointError(f"checkpoint {spec_str!r} not found: not a registry name ({', '.join(known)}) "
                                  "nor an existing path")
        if path.is_dir() or path.suffix == ".safetensors":
            model, meta = load_our_format(path)
            checkpoint = Checkpoint(model, path.name if path.is_dir() else path.parent.name,
                                    "user" if spec_str in user else "path", path, meta)
        else:
            model = load_official_drl(path, interaction)
            checkpoint = Checkpoint(model, path.name, "official", path, {"model": model.config.to_dict()})
    if interaction is not None and checkpoint.source != "official":
        if interaction == "wti" and not hasattr(checkpoint.model, "text_weight_fc"):
            raise CheckpointError(f"{spec_str} has no WTI weight heads; use --interaction ti or dp")
        checkpoint.model.config.interaction = interaction
    checkpoint.model.to(device)
    return checkpoint
