"""Starting a model from CLIP's weights as DRL does: an OpenAI JIT archive or an open_clip state dict, loaded strictly
after an architecture check, then the temporal module and its positions copied from the text tower."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tvr_demo.errors import CheckpointError, TVRError
from tvr_demo.models.backbone import build_clip, clip_config, load_pretrained_clip
from tvr_demo.models.checkpoints import WEIGHTS_FILE, save_checkpoint
from tvr_demo.training.train import RunConfig, build_model, clip_provenance, clip_start

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vit_b32_files(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path, Path]:
    """A random open_clip ViT-B/32 (QuickGELU, as OpenAI's) saved as a traced TorchScript archive, the way OpenAI
    ships ViT-B-32.pt, and as a plain state dict. Tracing runs the text tower only (cheap); the archive still
    holds every tensor of the model."""
    torch.manual_seed(0)
    clip = build_clip(clip_config("ViT-B-32")).eval()
    with torch.no_grad():
        clip.ln_final.bias.normal_()  # CLIP's init leaves these at 0 / 1: make a skipped tensor visible
        clip.visual.ln_post.weight.normal_()
    out = tmp_path_factory.mktemp("clip")
    text = torch.zeros(1, 77, dtype=torch.long)
    archive = torch.jit.trace_module(clip, {"encode_text": text}, check_trace=False)
    archive.save(str(out / "ViT-B-32.pt"))
    state = {k: v.clone() for k, v in clip.state_dict().items()}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, out / "open_clip.pt")
    return state, out / "ViT-B-32.pt", out / "open_clip.pt"


def test_jit_archive_and_state_dict_initialise_the_same_model(vit_b32_files):
    """Both files give CLIP's tensors exactly; the temporal module is CLIP's text blocks 0-3 and its positions the
    text positional embedding (DRL's init); the weight heads keep DRL's N(0, 0.02) init."""
    state, archive, state_dict = vit_b32_files
    run = RunConfig.load("paper-vitb32-wti")
    torch.manual_seed(1)
    from_jit = build_model(run, archive)
    torch.manual_seed(1)
    from_sd = build_model(run, state_dict)
    jit_sd, sd_sd = from_jit.state_dict(), from_sd.state_dict()
    assert jit_sd.keys() == sd_sd.keys()
    for key in jit_sd:
        assert torch.equal(jit_sd[key], sd_sd[key]), key
    for key, value in state.items():
        assert torch.equal(jit_sd[f"clip.{key}"], value), key
    assert torch.equal(jit_sd["frame_position_embeddings.weight"], state["positional_embedding"])
    for i in range(4):
        for name in ("attn.in_proj_weight", "ln_1.bias", "mlp.c_proj.weight"):
            assert torch.equal(jit_sd[f"transformerClip.resblocks.{i}.{name}"],
                               state[f"transformer.resblocks.{i}.{name}"])
    assert float(jit_sd["text_weight_fc.0.weight"].std()) == pytest.approx(0.02, rel=0.05)


def test_wrong_architecture_names_the_tensor_and_both_shapes(vit_b32_files, tmp_path):
    """A ViT-B/16-sized positional embedding in a ViT-B/32 config is refused with the tensor and both shapes."""
    state, _, _ = vit_b32_files
    wrong = dict(state)
    wrong["visual.positional_embedding"] = torch.zeros(197, 768)
    torch.save(wrong, tmp_path / "b16ish.pt")
    clip = build_clip(clip_config("ViT-B-32"))
    with pytest.raises(CheckpointError, match=r"tensor visual\.positional_embedding has shape \[197, 768\] in the "
                                              r"file, \[50, 768\] in the config"):
        load_pretrained_clip(clip, tmp_path / "b16ish.pt", "ViT-B-32")
    del wrong["logit_scale"]
    wrong["visual.positional_embedding"] = state["visual.positional_embedding"]
    torch.save(wrong, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match=r"missing tensors \['logit_scale'\]"):
        load_pretrained_clip(clip, tmp_path / "short.pt", "ViT-B-32")


def test_cli_refuses_a_mismatched_clip_file_in_one_line(tmp_path):
    """`train --clip-weights` with a tiny CLIP's weights for a ViT-B/32 config exits non-zero with one line naming
    the first mismatched tensor, before any data is read."""
    tiny = build_clip(clip_config("tvr-tiny"))
    torch.save(tiny.state_dict(), tmp_path / "tiny.pt")
    result = subprocess.run([sys.executable, "-m", "tvr_demo", "train", "--config", "paper-vitb32-wti",
                             "--clip-weights", str(tmp_path / "tiny.pt"), "--dataset", str(tmp_path),
                             "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "tiny.pt does not match architecture ViT-B-32: tensor" in result.stderr
    assert "Traceback" not in result.stderr
    assert str(tmp_path) not in result.stderr


def test_a_checkpoint_of_ours_starts_clip_from_its_towers(tmp_path):
    """`--clip-weights` given one of our checkpoints takes its `clip.` tensors (read here straight from the file),
    and DRL's init then copies the temporal module from that text tower; the rest of the checkpoint is ignored."""
    run = RunConfig.load("drl-wti")
    torch.manual_seed(2)
    source = build_model(run)
    save_checkpoint(source, tmp_path / "source", dtype=torch.float16)
    stored = load_file(str(tmp_path / "source" / WEIGHTS_FILE))
    torch.manual_seed(3)
    model = build_model(run, tmp_path / "source" / WEIGHTS_FILE)
    started = model.state_dict()
    towers = [k for k in stored if k.startswith("clip.")]
    assert len(towers) == len(model.clip.state_dict())
    for key in towers:
        assert torch.equal(started[key], stored[key].float()), key
    assert torch.equal(started["transformerClip.resblocks.0.attn.in_proj_weight"],
                       stored["clip.transformer.resblocks.0.attn.in_proj_weight"].float())
    assert not torch.equal(started["text_weight_fc.0.weight"], stored["text_weight_fc.0.weight"].float())
    digest = hashlib.sha256((tmp_path / "source" / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert clip_provenance(run, tmp_path / "source" / WEIGHTS_FILE) == f"{WEIGHTS_FILE} (sha256 {digest})"


def test_clip_from_needs_a_reason_and_a_trained_checkpoint(tmp_path):
    """A config that starts CLIP anywhere but from OpenAI's weights says why, and names a checkpoint that exists."""
    raw = {"name": "x", "model": {"clip_name": "tvr-tiny", "temporal": "seqTransf", "interaction": "wti"},
           "clip_from": "drl-ti"}
    (tmp_path / "x.json").write_text(json.dumps(raw))
    with pytest.raises(TVRError, match=r"\['clip_from'\] depart from DRL's recipe without a reason"):
        RunConfig.load(str(tmp_path / "x.json"))
    raw["departures"] = {"clip_from": "a stand-in for CLIP"}
    raw["clip_from"] = "no-such-model"
    (tmp_path / "x.json").write_text(json.dumps(raw))
    with pytest.raises(TVRError, match="bundled checkpoint 'no-such-model', which the registry does not list"):
        clip_start(RunConfig.load(str(tmp_path / "x.json")))


def test_a_corrupt_safetensors_file_is_refused_in_one_message(tmp_path):
    """A damaged .safetensors start file is a CheckpointError naming the file, not a library's deserialising error."""
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors header")
    with pytest.raises(CheckpointError, match="broken.safetensors is not a readable safetensors file"):
        load_pretrained_clip(build_clip(clip_config("tvr-tiny")), tmp_path / "broken.safetensors")
