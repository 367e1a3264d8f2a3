"""Checkpoints: the official DRL format at ViT-B/32 dimensions (key names, fp16, inferred architecture, round trip),
our own format, and every way a file can be wrong (truncated, other architecture, prefixed, partial, unsafe)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from helpers import (
    build_model,
    official_keys,
    official_state_dict,
    save_official,
    small_official_config,
    tiny_config,
    vit_b32_official_file,
)

from tvr_demo.errors import CheckpointError
from tvr_demo.models.checkpoints import load_checkpoint, official_config, save_checkpoint

# ---------------------------------------------------------------- ViT-B/32 in the official layout


@pytest.fixture(scope="module")
def b32_file(tmp_path_factory) -> Path:
    """A random DRL WTI + seqTransf model at ViT-B/32 dimensions, saved as the official code saves it."""
    return vit_b32_official_file(tmp_path_factory)


@pytest.fixture(scope="module")
def b32_state_dict(b32_file):
    return torch.load(b32_file, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def b32_checkpoint(b32_file):
    return load_checkpoint(b32_file)


def test_vit_b32_has_official_key_names_and_shapes(b32_state_dict):
    """The file holds exactly the official key names, unprefixed, with the official ViT-B/32 shapes."""
    assert set(b32_state_dict) == official_keys(
        text_layers=12, vision_layers=12, temporal_layers=4, wti_arch=2
    )
    shapes = {
        "frame_position_embeddings.weight": (77, 512),
        "clip.positional_embedding": (77, 512),
        "clip.token_embedding.weight": (49408, 512),
        "clip.text_projection": (512, 512),
        "clip.visual.conv1.weight": (768, 3, 32, 32),
        "clip.visual.positional_embedding": (50, 768),
        "clip.visual.class_embedding": (768,),
        "clip.visual.proj": (768, 512),
        "clip.transformer.resblocks.11.attn.in_proj_weight": (1536, 512),
        "clip.visual.transformer.resblocks.11.mlp.c_fc.weight": (3072, 768),
        "transformerClip.resblocks.3.attn.in_proj_weight": (1536, 512),
        "transformerClip.resblocks.3.mlp.c_proj.weight": (512, 2048),
        "text_weight_fc.0.weight": (512, 512),
        "text_weight_fc.2.weight": (1, 512),
        "video_weight_fc.2.bias": (1,),
        "clip.logit_scale": (),
    }
    for key, shape in shapes.items():
        assert tuple(b32_state_dict[key].shape) == shape, key


def test_vit_b32_file_stores_clip_linear_and_conv_in_fp16(b32_state_dict):
    """As after official GPU training: CLIP conv/linear/projection tensors fp16, the rest fp32."""
    for key in (
        "clip.visual.conv1.weight",
        "clip.text_projection",
        "clip.visual.proj",
        "clip.transformer.resblocks.0.attn.in_proj_weight",
        "clip.visual.transformer.resblocks.3.mlp.c_fc.bias",
    ):
        assert b32_state_dict[key].dtype == torch.float16, key
    for key in (
        "clip.token_embedding.weight",
        "clip.ln_final.weight",
        "clip.visual.positional_embedding",
        "transformerClip.resblocks.0.attn.in_proj_weight",
        "text_weight_fc.0.weight",
        "clip.logit_scale",
    ):
        assert b32_state_dict[key].dtype == torch.float32, key


def test_vit_b32_architecture_inferred(b32_checkpoint):
    """load_checkpoint infers ViT-B/32, the 12 x 512 text tower, seqTransf with 4 blocks and WTI wti_arch 2."""
    config = b32_checkpoint.config
    assert b32_checkpoint.source == "official"
    vision, text = config.clip["vision_cfg"], config.clip["text_cfg"]
    assert (vision["patch_size"], vision["image_size"], vision["width"], vision["layers"]) == (
        32,
        224,
        768,
        12,
    )
    assert (text["width"], text["layers"], text["heads"], text["context_length"]) == (512, 12, 8, 77)
    assert config.clip["embed_dim"] == 512 and config.clip["quick_gelu"] is True
    assert (config.temporal, config.temporal_layers, config.interaction, config.wti_arch) == (
        "seqTransf",
        4,
        "wti",
        2,
    )
    assert (config.max_words, config.max_frames, config.framerate) == (32, 12, 1.0)
    assert not b32_checkpoint.model.training


def test_vit_b32_weights_round_trip(b32_checkpoint, b32_state_dict):
    """Every tensor comes back exactly (fp16 ones widened to fp32), under the same name."""
    loaded = b32_checkpoint.model.state_dict()
    assert set(loaded) == set(b32_state_dict)
    for key, value in b32_state_dict.items():
        assert loaded[key].dtype == torch.float32, key
        assert torch.equal(loaded[key], value.float()), key


def test_vit_b16_inferred_from_conv_and_positions(b32_state_dict):
    """conv1 16x16 with 197 positions is ViT-B/16 at 224 px; 32x32 with 50 is ViT-B/32."""
    assert official_config(b32_state_dict).clip["vision_cfg"]["patch_size"] == 32
    b16 = dict(b32_state_dict)
    b16["clip.visual.conv1.weight"] = torch.zeros(768, 3, 16, 16, dtype=torch.float16)
    b16["clip.visual.positional_embedding"] = torch.zeros(197, 768)
    vision = official_config(b16).clip["vision_cfg"]
    assert (vision["patch_size"], vision["image_size"], vision["width"]) == (16, 224, 768)


# ---------------------------------------------------------------- variants on a small official-layout architecture


@pytest.mark.parametrize("arch", [1, 2, 3])
def test_wti_arch_inferred_from_fc_keys(tmp_path, arch):
    """wti_arch 1, 2 or 3 is read from the number of Linear layers in text_weight_fc, and the weights load."""
    model = build_model(small_official_config(interaction="wti", wti_arch=arch), seed=arch)
    path = save_official(model.state_dict(), tmp_path)
    loaded = load_checkpoint(path).model
    assert (loaded.config.interaction, loaded.config.wti_arch) == ("wti", arch)
    for key, value in official_state_dict(model.state_dict()).items():
        assert torch.equal(loaded.state_dict()[key], value.float()), key


@pytest.mark.parametrize(
    ("temporal", "interaction"), [("seqTransf", "dp"), ("meanP", "wti"), ("meanP", "dp")]
)
def test_temporal_and_interaction_inferred(tmp_path, temporal, interaction):
    """No transformerClip keys means meanP; no weight fcs means dp (TI checkpoints need --interaction ti)."""
    model = build_model(small_official_config(temporal=temporal, interaction=interaction))
    keys = official_keys(2, 2, 4 if temporal == "seqTransf" else 0, 2 if interaction == "wti" else None)
    assert set(model.state_dict()) == keys
    config = load_checkpoint(save_official(model.state_dict(), tmp_path)).config
    assert (config.temporal, config.interaction) == (temporal, interaction)


def test_interaction_override(tmp_path):
    """A WTI file can be scored as TI or DP (the weight heads are dropped); asking WTI of a DP file fails clearly."""
    (tmp_path / "wti").mkdir(), (tmp_path / "dp").mkdir()
    wti = save_official(build_model(small_official_config(interaction="wti")).state_dict(), tmp_path / "wti")
    for interaction in ("ti", "dp"):
        model = load_checkpoint(wti, interaction=interaction).model
        assert model.config.interaction == interaction and not hasattr(model, "text_weight_fc")
    dp = save_official(build_model(small_official_config(interaction="dp")).state_dict(), tmp_path / "dp")
    with pytest.raises(CheckpointError, match="missing keys.*text_weight_fc"):
        load_checkpoint(dp, interaction="wti")


def test_module_prefix_loads(tmp_path):
    """A state dict saved from a DataParallel/DDP wrapper (`module.` prefix) loads with the right weights."""
    model = build_model(small_official_config(interaction="wti"))
    sd = official_state_dict(model.state_dict())
    path = tmp_path / "pytorch_model.bin.2"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    loaded = load_checkpoint(path).model.state_dict()
    assert set(loaded) == set(sd)
    for key, value in sd.items():
        assert torch.equal(loaded[key], value.float()), key


# ---------------------------------------------------------------- bad files


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    model = build_model(small_official_config(interaction="wti"))
    return save_official(model.state_dict(), tmp_path_factory.mktemp("small"))


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.001])
def test_truncated_file_is_refused(tmp_path, small_file, keep):
    """A cut-off download gives a CheckpointError that names the file and says it is truncated or corrupt."""
    data = small_file.read_bytes()
    path = tmp_path / "pytorch_model.bin.1"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_empty_file_is_refused(tmp_path):
    """A 0-byte file gives a CheckpointError, not an EOFError."""
    path = tmp_path / "pytorch_model.bin.1"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_plain_clip_state_dict_is_refused(tmp_path, small_file):
    """A plain CLIP state dict (no `clip.` prefix) is refused, not silently loaded as plain CLIP."""
    # The official loader is non-strict: this file would give plain CLIP with random DRL heads there.
    sd = torch.load(small_file, weights_only=True)
    path = tmp_path / "ViT-B-32.pt"
    torch.save({k.removeprefix("clip."): v for k, v in sd.items() if k.startswith("clip.")}, path)
    with pytest.raises(CheckpointError, match="not an official DRL checkpoint"):
        load_checkpoint(path)


def test_inconsistent_architecture_is_refused(tmp_path, small_file):
    """Heads of another width than the CLIP towers: the error names the tensor and both shapes."""
    sd = torch.load(small_file, weights_only=True)
    sd["text_weight_fc.0.weight"] = torch.zeros(256, 256)
    path = tmp_path / "pytorch_model.bin.1"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"text_weight_fc\.0\.weight.*\(256, 256\).*\(128, 128\)"):
        load_checkpoint(path)


def test_our_format_with_weights_of_another_architecture_is_refused(tmp_path):
    """Our directory whose config.json describes another model than its weights fails with a clear message."""
    save_checkpoint(build_model(tiny_config(interaction="wti")), tmp_path / "a")
    save_checkpoint(build_model(tiny_config(interaction="dp", temporal="meanP")), tmp_path / "b")
    os.replace(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match.*missing keys"):
        load_checkpoint(tmp_path / "a")


def test_missing_and_unexpected_keys_are_listed(tmp_path, small_file):
    """A partial file's error lists the missing and the unexpected keys by name, with their counts."""
    sd = torch.load(small_file, weights_only=True)
    del sd["clip.ln_final.bias"], sd["transformerClip.resblocks.1.mlp.c_fc.bias"]
    sd["extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "pytorch_model.bin.1"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "2 missing keys" in message and "1 unexpected keys" in message
    for key in ("clip.ln_final.bias", "transformerClip.resblocks.1.mlp.c_fc.bias", "extra_head.weight"):
        assert key in message


class _RunsCode:
    """Unpickling this would call os.system: a stand-in for a malicious checkpoint. It is never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused(tmp_path, writer):
    """A file whose unpickling would run code is refused with a message saying so, and the code never runs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin.1"
    payload = {"clip.logit_scale": torch.ones(()), "evil": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused to load.*may contain code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_path_is_reported(tmp_path):
    """A path that does not exist (and is no registry name) gives a CheckpointError saying not found."""
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.bin")


# ---------------------------------------------------------------- our format


def test_our_format_round_trip(tmp_path):
    """save_checkpoint then load_checkpoint gives the same config and the same tensors."""
    model = build_model(tiny_config(interaction="wti", wti_arch=3, temporal="seqTransf"), seed=5)
    save_checkpoint(model, tmp_path / "ckpt", meta={"description": "test"})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.to_dict() == model.config.to_dict()
    assert loaded.meta["description"] == "test"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_our_format_truncated_weights_are_refused(tmp_path):
    """A cut-off model.safetensors gives a CheckpointError that says it is unreadable (truncated?)."""
    directory = save_checkpoint(build_model(tiny_config(interaction="dp")), tmp_path / "ckpt")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(directory)
