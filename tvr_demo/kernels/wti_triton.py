"""The Triton path of the fused WTI / TI scorer (CUDA; also runs on CPU tensors under TRITON_INTERPRET=1).

A program scores BLOCK_A queries against BLOCK_B videos one frame at a time. For frame v it multiplies the BLOCK_B
videos' v-th frames (BLOCK_B, D) by the queries' tokens (BLOCK_A * TP, D) on the tensor cores with fp32 sums, giving
a (BLOCK_B, BLOCK_A * TP) tile of cosines; frame v's max over tokens is a row reduction of that tile (per query),
and the max over frames of every token is an element-wise running max over v. Both maxima reduce 2-D tiles, the
cosines never reach global memory, and the videos' features are read once per program.

The grid is one axis of (video block, query block) tiles, walked with a stride by each program, so that any A x B
launches within CUDA's grid limits (`launch_geometry`); offsets are 64-bit, so a gallery past 2**31 elements
(about 350,000 clips of 12 x 512) is addressed correctly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tvr_demo.kernels.geometry import GRID_X_LIMIT, KernelConfig, default_config, launch_geometry


# Sizes that vary between calls are not specialised on (Triton would compile again when one becomes a multiple of 16),
# so the variants compiled by the self-check serve every gallery of the same feature width.
@triton.jit(do_not_specialize=["A", "B", "T", "V", "clamp", "n_tiles", "a_blocks", "s_ta", "s_mb", "s_wb", "s_oa"])
def _wti_kernel(q_ptr, tw_ptr, f_ptr, vm_ptr, vw_ptr, out_ptr, A, B, T, V, D, clamp, n_tiles, a_blocks,
                s_qa, s_qt, s_ta, s_fb, s_fv, s_mb, s_wb, s_oa,
                BLOCK_A: tl.constexpr, TP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """q (A, T, D) with masked tokens zeroed, tw (A, T); f (B, V, D), vm / vw (B, V) float32; out (A, B) float32.
    clamp = 1 when positions masked for every query were dropped from q: their s = 0 then joins each max over
    tokens, so the TP - T padded columns (also 0) may too; else padding is kept out of that max."""
    cols = tl.arange(0, BLOCK_A * TP)  # column c = (query c // TP, token c % TP)
    col_a = cols // TP
    col_t = cols % TP
    col_real = (col_t < T) | (clamp != 0)
    q_off = col_a * s_qa + col_t * s_qt  # (BLOCK_A * TP,) offsets of each token's first channel in a query block
    b_loc = tl.arange(0, BLOCK_B)
    d_idx = tl.arange(0, BLOCK_D)
    for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        b0 = (tile // a_blocks).to(tl.int64) * BLOCK_B  # 64-bit tile origins, 32-bit offsets inside a tile
        a0 = (tile % a_blocks).to(tl.int64) * BLOCK_A
        f_tile = f_ptr + b0 * s_fb
        q_tile = q_ptr + a0 * s_qa
        b_in = b_loc < tl.minimum(B - b0, BLOCK_B).to(tl.int32)
        a_in = tl.arange(0, BLOCK_A) < tl.minimum(A - a0, BLOCK_A).to(tl.int32)
        q_in = (col_a < tl.minimum(A - a0, BLOCK_A).to(tl.int32)) & (col_t < T)
        tw = tl.load(tw_ptr + a0 * s_ta + col_a * s_ta + col_t, mask=q_in, other=0.0)
        token_max = tl.full((BLOCK_B, BLOCK_A * TP), float("-inf"), tl.float32)
        v2t = tl.zeros((BLOCK_B, BLOCK_A), tl.float32)
        for v in range(V):
            f_off = b_loc * s_fb + v * s_fv  # (BLOCK_B,) offsets of frame v of each video in the tile
            s = tl.zeros((BLOCK_B, BLOCK_A * TP), tl.float32)
            for d0 in range(0, D, BLOCK_D):
                d = d0 + d_idx
                f = tl.load(f_tile + f_off[:, None] + d[None, :], mask=b_in[:, None] & (d[None, :] < D), other=0.0)
                q = tl.load(q_tile + q_off[:, None] + d[None, :], mask=q_in[:, None] & (d[None, :] < D), other=0.0)
                s = tl.dot(f, tl.trans(q), s, input_precision="tf32")  # fp32 operands as tf32; others as given
            vm = tl.load(vm_ptr + b0 * s_mb + b_loc * s_mb + v, mask=b_in, other=0.0)
            vw = tl.load(vw_ptr + b0 * s_wb + b_loc * s_wb + v, mask=b_in, other=0.0)
            s = s * vm[:, None]  # masked frames: s = 0, as in the official code
            token_max = tl.maximum(token_max, s)
            s = tl.where(col_real[None, :], s, float("-inf"))
            if BLOCK_A == 1:
                frame_max = tl.max(s, axis=1)[:, None]  # (BLOCK_B, 1)
            else:
                frame_max = tl.max(tl.reshape(s, (BLOCK_B, BLOCK_A, TP)), axis=2)  # (BLOCK_B, BLOCK_A)
            v2t += frame_max * vw[:, None]
        weighted = token_max * tw[None, :]  # padded and masked tokens have weight 0 (and a finite max)
        if BLOCK_A == 1:
            t2v = tl.sum(weighted, axis=1)[:, None]
        else:
            t2v = tl.sum(tl.reshape(weighted, (BLOCK_B, BLOCK_A, TP)), axis=2)
        out_tile = out_ptr + a0 * s_oa + b0
        tl.store(out_tile + tl.arange(0, BLOCK_A)[None, :] * s_oa + b_loc[:, None], (t2v + v2t) * 0.5,
                 mask=b_in[:, None] & a_in[None, :])


def _pow2(n: int, low: int) -> int:
    return max(low, triton.next_power_of_2(n))


SHORT_TOKENS = 16  # queries whose valid tokens all lie in the first 16 positions (most captions) launch apart


def wti_scores_triton(text: torch.Tensor, text_mask: torch.Tensor, text_weights: torch.Tensor, video: torch.Tensor,
                      video_mask: torch.Tensor, video_weights: torch.Tensor, config: KernelConfig | None = None,
                      max_programs: int = GRID_X_LIMIT) -> torch.Tensor:
    """drl.wti_similarity by the kernel: text (A, T, D), video (B, V, D) L2-normalised -> (A, B) float32.

    The queries are multiplied in the videos' dtype on the tensor cores with fp32 sums: fp32 as tf32 (10-bit
    mantissas: about 1e-5 on a cosine of unit vectors of width 512), fp16 / bf16 as they are (exact products).
    Queries whose tokens all lie in the first 16 positions launch apart from the longer ones, so that their tiles
    are 16 tokens wide, not 32."""
    config = config or default_config(text.shape[0])
    positions = torch.arange(text_mask.shape[1], device=text_mask.device)
    short = torch.where(text_mask.bool(), positions, -1).amax(1) < SHORT_TOKENS
    if bool(short.all()) or not bool(short.any()):
        return _launch(text, text_mask, text_weights, video, video_mask, video_weights, config, max_programs)
    out = torch.empty(text.shape[0], video.shape[0], dtype=torch.float32, device=text.device)
    for rows in (short.nonzero().flatten(), (~short).nonzero().flatten()):
        out[rows] = _launch(text[rows], text_mask[rows], text_weights[rows], video, video_mask, video_weights,
                            config, max_programs)
    return out


def _launch(text: torch.Tensor, text_mask: torch.Tensor, text_weights: torch.Tensor, video: torch.Tensor,
            video_mask: torch.Tensor, video_weights: torch.Tensor, config: KernelConfig, max_programs: int
            ) -> torch.Tensor:
    """One launch: positions masked for every query dropped, the rest padded to a power of two (TP)."""
    a_n, _, dim = text.shape
    b_n, v_n, _ = video.shape
    tmask = text_mask.bool()
    keep = tmask.any(0)  # positions masked for every query only ever gave s = 0: drop them, clamp the max at 0
    f = video.contiguous()
    q = (text.to(f.dtype) * tmask[..., None].to(f.dtype))[:, keep].contiguous()
    tw = text_weights[:, keep].float().contiguous()
    t_k = q.shape[1]
    vm = video_mask.float().contiguous()
    vw = video_weights.float().contiguous()
    out = torch.empty(a_n, b_n, dtype=torch.float32, device=text.device)
    geometry = launch_geometry(a_n, b_n, config.block_a, config.block_b, max_programs)
    _wti_kernel[geometry.grid](
        q, tw, f, vm, vw, out, a_n, b_n, t_k, v_n, dim, int(not bool(keep.all())), geometry.tiles,
        geometry.a_blocks, q.stride(0), q.stride(1), tw.stride(0), f.stride(0), f.stride(1), vm.stride(0),
        vw.stride(0), out.stride(0), BLOCK_A=config.block_a, TP=_pow2(t_k, 16), BLOCK_B=config.block_b,
        BLOCK_D=min(config.block_d, _pow2(dim, 16)), num_warps=config.num_warps, num_stages=config.num_stages)
    return out
