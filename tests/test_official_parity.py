"""Official parity: from the same official-layout checkpoint and the same captions and videos, our pipeline gives the
numbers the official DRL code computes, to 1e-4, on CPU in fp32.

The reference below is an independent functional re-implementation of what the official code does (foolwood/DRL:
tvr/models/modeling.py, module_clip.py, module_cross.py, dataloaders/dataloader_retrieval.py), written with plain
torch ops straight from the raw state dict (one head at a time, no nn modules). It shares no code with tvr_demo; like
the official code it uses CLIP's simple_tokenizer BPE (open_clip's copy), decord and torchvision. Tolerance 1e-4: the small model's reference runs in float64 and the ViT-B/32 one in
fp32 (as the official code on CPU; float64 would take a minute on two cores); fp32 round-off on these random weights is
about 1e-6, so 1e-4 leaves room for summation order and nothing else.
"""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import build_model, save_official, small_clip_config, vit_b32_official_file
from open_clip.tokenizer import SimpleTokenizer, basic_clean, whitespace_clean
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from tvr_demo.data.video import FrameSampling, decode_videos, normalize_frames
from tvr_demo.models import ModelConfig, drl
from tvr_demo.models.backbone import get_tokenizer
from tvr_demo.models.checkpoints import load_checkpoint
from tvr_demo.retrieval.scoring import score_files

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REAL_CLIP = PROJECT_ROOT.parent / "shared" / "reference" / "msrvtt" / "video7500.mp4"
MAX_WORDS, MAX_FRAMES, FRAMERATE = 32, 12, 1  # the shipped MSR-VTT scripts

CAPTIONS = [
    "a red circle moves to the left",
    "A MAN   is  Cooking &amp; talking in a kitchen!!",
    "a very long caption about a group of people who are walking along a crowded street at night while it rains "
    "and cars drive past them with their lights on and music playing",  # more than 30 BPE tokens: truncated
    "what is this !?!!",  # BPE gives the id 0 ('!') inside the caption
    "dog",
]

# ---------------------------------------------------------------- tokenisation, as the official dataloader does it

_BPE = SimpleTokenizer()
SOT_ID, EOT_ID = 49406, 49407  # "<|startoftext|>", "<|endoftext|>" in CLIP's vocabulary


def official_tokenize(caption: str) -> tuple[list[int], list[int]]:
    """ClipTokenizer.tokenize (clean, lower, regex split, byte-level BPE), then SOT + first max_words-2 + EOT, ids
    via the encoder, mask 1 for every id before padding, padded with 0 to max_words."""
    text = whitespace_clean(basic_clean(caption)).lower()
    words = []
    for token in _BPE.pat.findall(text):  # the `regex` pattern of CLIP's simple_tokenizer
        token = "".join(_BPE.byte_encoder[b] for b in token.encode("utf-8"))
        words.extend(_BPE.bpe(token).split(" "))
    ids = [SOT_ID] + [_BPE.encoder[w] for w in words][: MAX_WORDS - 2] + [EOT_ID]
    mask = [1] * len(ids)
    return ids + [0] * (MAX_WORDS - len(ids)), mask + [0] * (MAX_WORDS - len(mask))


def official_text_inputs(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [official_tokenize(c) for c in captions]
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


# ---------------------------------------------------------------- video, as the official dataloader does it


def official_video_inputs(path: Path, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_get_rawvideo_dec`: decord at avg fps, stride round(fps / framerate), linspace to 12 when more, torchvision's
    Resize(BICUBIC) / CenterCrop / RGB / ToTensor / Normalize on PIL images, zero frames (mask 0) as padding."""
    from decord import VideoReader, cpu

    reader = VideoReader(str(path), ctx=cpu(0))
    fps = reader.get_avg_fps()
    f_end = int(min(1000000000, len(reader) - 1))
    stride = int(round(float(fps) / FRAMERATE))
    positions = list(range(0, f_end + 1, stride))
    if len(positions) > MAX_FRAMES:
        positions = [positions[i] for i in np.linspace(0, len(positions) - 1, num=MAX_FRAMES, dtype=int)]
    transform = Compose(
        [
            Resize(resolution, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(resolution),
            lambda image: image.convert("RGB"),
            ToTensor(),
            Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )
    frames = torch.stack([transform(Image.fromarray(f)) for f in reader.get_batch(positions).asnumpy()])
    video = torch.zeros(MAX_FRAMES, 3, resolution, resolution)
    mask = torch.zeros(MAX_FRAMES, dtype=torch.long)
    video[: len(frames)], mask[: len(frames)] = frames, 1
    return video, mask


# ---------------------------------------------------------------- the official model, functionally, in float64


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def attention(x, sd, p, heads, mask):
    """nn.MultiheadAttention on sequences (N, L, D): packed in-projection, per-head scaled dot product, out-proj.
    mask: additive, (L, L) or (N, L, L)."""
    d = x.shape[-1]
    dh = d // heads
    qkv = x @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
    q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
    out = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        logits = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(dh)
        if mask is not None:
            logits = logits + mask
        out.append(torch.softmax(logits, -1) @ v[..., sl])
    return torch.cat(out, -1) @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]


def residual_block(x, sd, p, heads, mask=None, eps=1e-5):
    """CLIP's ResidualAttentionBlock: pre-LN attention and a QuickGELU MLP, both residual."""
    x = x + attention(layer_norm(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps), sd, p, heads, mask)
    h = layer_norm(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps) @ sd[p + "mlp.c_fc.weight"].T
    h = h + sd[p + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]


def count_blocks(sd, prefix):
    return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})


def official_text_features(sd, ids):
    """encode_text(return_hidden=True)[1]: embeddings + positions, causal mask over the 32 positions, ln_final,
    @ text_projection at every position. (N, 32) -> (N, 32, D)."""
    heads = sd["clip.ln_final.weight"].shape[0] // 64
    layers = count_blocks(sd, "clip.transformer.resblocks.")
    length = ids.shape[1]
    causal = torch.full((length, length), float("-inf"), dtype=sd["clip.ln_final.weight"].dtype).triu_(1)
    x = sd["clip.token_embedding.weight"][ids] + sd["clip.positional_embedding"][:length]
    for i in range(layers):
        x = residual_block(x, sd, f"clip.transformer.resblocks.{i}.", heads, causal)
    x = layer_norm(x, sd["clip.ln_final.weight"], sd["clip.ln_final.bias"], 1e-5)
    return x @ sd["clip.text_projection"]


def official_frame_features(sd, frames):
    """encode_image: conv1 as patchify + matmul, class token, positions, ln_pre, blocks, ln_post, @ proj, CLS.
    (F, 3, R, R) -> (F, D)."""
    w = sd["clip.visual.conv1.weight"]
    width, patch = w.shape[0], w.shape[-1]
    heads = width // 64
    layers = count_blocks(sd, "clip.visual.transformer.resblocks.")
    n, grid = frames.shape[0], frames.shape[-1] // patch
    patches = frames.to(w.dtype).reshape(n, 3, grid, patch, grid, patch).permute(0, 2, 4, 1, 3, 5)
    x = patches.reshape(n, grid * grid, -1) @ w.reshape(width, -1).T  # (F, grid^2, width)
    cls = sd["clip.visual.class_embedding"].expand(n, 1, width)
    x = torch.cat([cls, x], 1) + sd["clip.visual.positional_embedding"]
    x = layer_norm(x, sd["clip.visual.ln_pre.weight"], sd["clip.visual.ln_pre.bias"], 1e-5)
    for i in range(layers):
        x = residual_block(x, sd, f"clip.visual.transformer.resblocks.{i}.", heads)
    x = layer_norm(x, sd["clip.visual.ln_post.weight"], sd["clip.visual.ln_post.bias"], 1e-5)
    return x[:, 0] @ sd["clip.visual.proj"]


def official_seq_transf(sd, feats, mask):
    """agg_video_feat('seqTransf'): + frame_position_embeddings, blocks with additive (1 - mask) * -1e6 over keys
    and TF-style LayerNorm (eps 1e-12), + the original features. feats (V, D), mask (V,)."""
    layers = count_blocks(sd, "transformerClip.resblocks.")
    if layers == 0:
        return feats
    heads = sd["clip.ln_final.weight"].shape[0] // 64
    additive = ((1.0 - mask.to(feats.dtype))[None, :] * -1000000.0).expand(len(mask), -1)
    x = feats + sd["frame_position_embeddings.weight"][: len(mask)]
    for i in range(layers):
        x = residual_block(x, sd, f"transformerClip.resblocks.{i}.", heads, additive, eps=1e-12)
    return x + feats


def weight_fc(sd, prefix, x):
    """text/video_weight_fc: Linear (-> ReLU -> Linear)*; the Linear layers are at indices 0, 2, 4 or unindexed."""
    if prefix + "weight" in sd:
        return x @ sd[prefix + "weight"].T + sd[prefix + "bias"]
    n = len([k for k in sd if k.startswith(prefix) and k.endswith("weight")])
    for i in range(n):
        x = x @ sd[f"{prefix}{2 * i}.weight"].T + sd[f"{prefix}{2 * i}.bias"]
        if i < n - 1:
            x = torch.relu(x)
    return x


def official_similarity(sd, text_feat, text_mask, video_feat, video_mask, interaction):
    """wti_interaction / dp_interaction in eval mode: the unscaled retrieve_logits (texts x videos)."""
    tmask, vmask = text_mask.to(text_feat.dtype), video_mask.to(text_feat.dtype)
    if interaction == "dp":
        t = text_feat[torch.arange(len(text_feat)), text_mask.sum(-1) - 1]
        t = t / t.norm(dim=-1, keepdim=True)
        v = video_feat / video_feat.norm(dim=-1, keepdim=True)
        v = (v * vmask[..., None]).sum(1) / vmask.sum(1, keepdim=True)
        v = v / v.norm(dim=-1, keepdim=True)
        return t @ v.T
    if interaction == "wti":
        tw = (
            weight_fc(sd, "text_weight_fc.", text_feat).squeeze(-1).masked_fill(text_mask == 0, float("-inf"))
        )
        vw = (
            weight_fc(sd, "video_weight_fc.", video_feat)
            .squeeze(-1)
            .masked_fill(video_mask == 0, float("-inf"))
        )
        tw, vw = tw.softmax(-1), vw.softmax(-1)
    t = text_feat / text_feat.norm(dim=-1, keepdim=True)
    v = video_feat / video_feat.norm(dim=-1, keepdim=True)
    s = torch.einsum("atd,bvd->abtv", t, v) * tmask[:, None, :, None] * vmask[None, :, None, :]
    if interaction == "ti":
        t2v = s.max(-1).values.sum(2) / tmask.sum(-1)[:, None]
        v2t = s.max(-2).values.sum(2) / vmask.sum(-1)[None, :]
    else:
        t2v = torch.einsum("abt,at->ab", s.max(-1).values, tw)
        v2t = torch.einsum("abv,bv->ab", s.max(-2).values, vw)
    return (t2v + v2t) / 2


def official_scores(sd, captions, videos, resolution, interactions=("wti",), dtype=torch.float64):
    """The whole official evaluation path; returns {interaction: S} and the intermediate features."""
    sd = {k: v.to(dtype) for k, v in sd.items()}
    ids, tmask = official_text_inputs(captions)
    text = official_text_features(sd, ids)
    frames, vmasks, feats = [], [], []
    for path in videos:
        video, vmask = official_video_inputs(path, resolution)
        frames.append(video)
        vmasks.append(vmask)
        feats.append(official_seq_transf(sd, official_frame_features(sd, video.to(dtype)), vmask))
    vmask, vfeat = torch.stack(vmasks), torch.stack(feats)
    sims = {i: official_similarity(sd, text, tmask, vfeat, vmask, i) for i in interactions}
    return sims, {
        "ids": ids,
        "tmask": tmask,
        "text": text,
        "frames": torch.stack(frames),
        "vmask": vmask,
        "video": vfeat,
    }


# ---------------------------------------------------------------- inputs


def write_clip(path: Path, size: tuple[int, int], fps: Fraction, num_frames: int) -> Path:
    """A small H.264 clip with smooth colour gradients and a moving square (so interpolation matters)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    for k in range(num_frames):
        frame = np.stack(
            [
                (xx * 255 // size[0] + 3 * k) % 256,
                (yy * 255 // size[1]) % 256,
                np.full_like(xx, (40 + 7 * k) % 256),
            ],
            -1,
        ).astype(np.uint8)
        x0, y0 = (k * 3) % (size[0] - 10), (k * 2) % (size[1] - 10)
        frame[y0 : y0 + 10, x0 : x0 + 10] = (250, 250, 30)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
    container.close()
    return path


@pytest.fixture(scope="module")
def small_videos(tmp_path_factory) -> list[Path]:
    """A 4.5 s landscape clip at 10 fps (5 frames: padded), a 20 s portrait clip at 7.5 fps (thinned by linspace),
    and the real MSR-VTT clip when the reference folder is there."""
    d = tmp_path_factory.mktemp("videos")
    videos = [
        write_clip(d / "landscape.mp4", (80, 60), Fraction(10), 45),
        write_clip(d / "portrait.mp4", (96, 160), Fraction(15, 2), 150),
    ]
    return videos + ([REAL_CLIP] if REAL_CLIP.exists() else [])


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """A small DRL (WTI + seqTransf, 4 temporal blocks) with random weights in the official layout, fp16 CLIP."""
    config = ModelConfig(clip_name="official-drl", clip=small_clip_config(patch_size=16), interaction="wti")
    return save_official(build_model(config, seed=21).state_dict(), tmp_path_factory.mktemp("small_drl"))


@pytest.fixture(scope="module")
def small_reference(small_checkpoint, small_videos):
    sd = torch.load(small_checkpoint, map_location="cpu", weights_only=True)
    return official_scores(sd, CAPTIONS, small_videos, resolution=64, interactions=("wti", "ti", "dp"))


# ---------------------------------------------------------------- tests


def test_tokenizer_matches_official_dataloader():
    """Ids and mask equal the official SOT + 30 BPE + EOT layout, mask 1 through EOT even for a BPE id 0."""
    ids, mask = official_text_inputs(CAPTIONS)
    tok = get_tokenizer()(CAPTIONS, MAX_WORDS)
    assert torch.equal(tok.ids, ids)
    assert torch.equal(tok.mask, mask)
    assert tok.truncated == [False, False, True, False, False]


def test_preprocessed_frames_match_official_transform(small_videos):
    """decode_videos + normalize_frames give the official dataloader's frames (same positions, same pixels)."""
    decoded = decode_videos(
        small_videos,
        FrameSampling(MAX_FRAMES, FRAMERATE),
        64,
        num_workers=0,
        progress=False,
        skip_errors=False,
    )
    for i, path in enumerate(small_videos):
        video, mask = official_video_inputs(path, 64)
        assert torch.equal(decoded.masks[i], mask), path.name
        valid = mask.bool()
        torch.testing.assert_close(
            normalize_frames(decoded.videos[i])[valid], video[valid], atol=1e-5, rtol=0
        )


def test_small_features_match_official(small_checkpoint, small_reference):
    """Per-token text features and per-frame features after seqTransf equal the official ones at valid positions."""
    _, ref = small_reference
    model = load_checkpoint(small_checkpoint).model
    with torch.no_grad():
        text = model.encode_text(ref["ids"], ref["tmask"])
        video = model.encode_video(ref["frames"], ref["vmask"])
    tvalid, vvalid = ref["tmask"].bool(), ref["vmask"].bool()
    torch.testing.assert_close(text.tokens[tvalid].double(), ref["text"][tvalid], atol=1e-4, rtol=0)
    torch.testing.assert_close(video.frames[vvalid].double(), ref["video"][vvalid], atol=1e-4, rtol=0)


def test_seq_transf_matches_official_on_low_variance_frames(small_checkpoint):
    """seqTransf equals the official one on frames of variance ~1e-8, where LayerNorm's epsilon decides."""
    # DRL's TF-style LayerNorm has eps 1e-12; CLIP's 1e-5 here would change the result by order 1.
    sd = torch.load(small_checkpoint, map_location="cpu", weights_only=True)
    sd = {k: v.double() for k, v in sd.items()}
    sd["frame_position_embeddings.weight"] = sd["frame_position_embeddings.weight"] * 1e-4
    feats = (
        torch.randn(2, MAX_FRAMES, 128, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        * 1e-4
    )
    mask = torch.zeros(2, MAX_FRAMES, dtype=torch.long)
    mask[0], mask[1, :5] = 1, 1
    model = load_checkpoint(small_checkpoint).model
    positions = torch.nn.Embedding.from_pretrained(sd["frame_position_embeddings.weight"].float())
    with torch.no_grad():
        got = drl.seq_transf(feats.float(), mask, positions, model.transformerClip)
    for i in range(2):
        expected = official_seq_transf(sd, feats[i], mask[i])
        valid = mask[i].bool()
        torch.testing.assert_close(got[i][valid].double(), expected[valid], atol=1e-4, rtol=0)


@pytest.mark.parametrize("interaction", ["wti", "ti", "dp"])
def test_small_scores_match_official(small_checkpoint, small_videos, small_reference, interaction):
    """score_files on the official-layout file equals the official similarity matrix to 1e-4 (WTI, TI and DP)."""
    sims, _ = small_reference
    got = score_files(
        str(small_checkpoint),
        CAPTIONS,
        small_videos,
        device="cpu",
        interaction=None if interaction == "wti" else interaction,
        num_workers=0,
    )
    assert got.shape == (len(CAPTIONS), len(small_videos))
    np.testing.assert_allclose(got, sims[interaction].numpy(), atol=1e-4, rtol=0)


def test_vit_b32_cli_score_matches_official_on_real_clip(msrvtt_reference, tmp_path_factory, tmp_path):
    """`python -m tvr_demo score` on a ViT-B/32 official file and video7500.mp4 gives the official WTI scores."""
    clip = msrvtt_reference / "video7500.mp4"
    if not clip.exists():
        pytest.skip(f"{clip} not found")
    checkpoint = vit_b32_official_file(tmp_path_factory)
    captions = CAPTIONS[:2]
    (tmp_path / "captions.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    out = tmp_path / "x.npy"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tvr_demo",
            "score",
            "--checkpoint",
            str(checkpoint),
            "--captions",
            str(tmp_path / "captions.txt"),
            "--videos",
            str(clip),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--workers",
            "0",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = np.load(out)
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    sims, ref = official_scores(sd, captions, [clip], resolution=224, dtype=torch.float32)
    assert int(ref["vmask"].sum()) == 12
    assert got.shape == (2, 1)
    np.testing.assert_allclose(got, sims["wti"].numpy(), atol=1e-4, rtol=0)
