"""The Triton path of the fused WTI / TI scorer (CUDA; also runs on CPU tensors under TRITON_INTERPRET=1).

One program scores BLOCK_A queries against BLOCK_B videos: it accumulates the (BLOCK_A * T, BLOCK_B * V) cosines
over D in registers, takes both masked maxima and both weighted sums, and writes BLOCK_A x BLOCK_B scores: the
cosines never reach global memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _wti_kernel(q_ptr, tw_ptr, f_ptr, vm_ptr, vw_ptr, out_ptr, A, B, T, V, D,
                s_qa, s_qt, s_ta, s_fb, s_fv, s_mb, s_wb, s_oa,
                CLAMP_FRAME_MAX: tl.constexpr, BLOCK_A: tl.constexpr, TP: tl.constexpr, BLOCK_B: tl.constexpr,
                VP: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """q (A, T, D) with masked tokens zeroed, tw (A, T); f (B, V, D), vm / vw (B, V); out (A, B) float32."""
    pid_a = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = tl.arange(0, BLOCK_A * TP)  # row r = (query r // TP, token r % TP)
    cols = tl.arange(0, BLOCK_B * VP)  # column c = (video c // VP, frame c % VP)
    qa = pid_a * BLOCK_A + rows // TP
    qt = rows % TP
    fb = pid_b * BLOCK_B + cols // VP
    fv = cols % VP
    row_ok = (qa < A) & (qt < T)
    col_ok = (fb < B) & (fv < V)
    acc = tl.zeros((BLOCK_A * TP, BLOCK_B * VP), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        q = tl.load(q_ptr + qa[:, None] * s_qa + qt[:, None] * s_qt + d[None, :],
                    mask=row_ok[:, None] & (d[None, :] < D), other=0.0)
        f = tl.load(f_ptr + fb[:, None] * s_fb + fv[:, None] * s_fv + d[None, :],
                    mask=col_ok[:, None] & (d[None, :] < D), other=0.0)
        acc = tl.dot(q, tl.trans(f), acc, input_precision=PRECISION)
    a_idx = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
    t_idx = tl.arange(0, TP)
    b_idx = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    v_idx = tl.arange(0, VP)
    frame_in = (b_idx[:, None] < B) & (v_idx[None, :] < V)  # (BLOCK_B, VP)
    vm = tl.load(vm_ptr + b_idx[:, None] * s_mb + v_idx[None, :], mask=frame_in, other=0.0)
    vw = tl.load(vw_ptr + b_idx[:, None] * s_wb + v_idx[None, :], mask=frame_in, other=0.0)
    tw = tl.load(tw_ptr + a_idx[:, None] * s_ta + t_idx[None, :],
                 mask=(a_idx[:, None] < A) & (t_idx[None, :] < T), other=0.0)  # (BLOCK_A, TP)
    s = tl.reshape(acc, (BLOCK_A, TP, BLOCK_B, VP)) * vm[None, None, :, :]  # masked frames: s = 0 (official)
    t_real = (t_idx < T)[None, :, None, None]
    v_real = (v_idx < V)[None, None, None, :]
    s = tl.where(t_real & v_real, s, float("-inf"))  # block padding (not masking) never wins a max
    token_max = tl.max(s, axis=3)  # (BLOCK_A, TP, BLOCK_B)
    token_max = tl.where((t_idx < T)[None, :, None], token_max, 0.0)
    frame_max = tl.max(s, axis=1)  # (BLOCK_A, BLOCK_B, VP)
    if CLAMP_FRAME_MAX:
        frame_max = tl.maximum(frame_max, 0.0)  # dropped (masked) token positions had s = 0
    frame_max = tl.where((v_idx < V)[None, None, :], frame_max, 0.0)
    t2v = tl.sum(token_max * tw[:, :, None], axis=1)  # (BLOCK_A, BLOCK_B)
    v2t = tl.sum(frame_max * vw[None, :, :], axis=2)
    score = (t2v + v2t) * 0.5
    tl.store(out_ptr + a_idx[:, None] * s_oa + b_idx[None, :], score,
             mask=(a_idx[:, None] < A) & (b_idx[None, :] < B))


def _pow2(n: int, low: int) -> int:
    return max(low, triton.next_power_of_2(n))


def wti_scores_triton(text: torch.Tensor, text_mask: torch.Tensor, text_weights: torch.Tensor, video: torch.Tensor,
                      video_mask: torch.Tensor, video_weights: torch.Tensor) -> torch.Tensor:
    """drl.wti_similarity in one kernel launch: text (A, T, D), video (B, V, D) L2-normalised -> (A, B) float32.

    fp32 inputs are multiplied in full fp32 ("ieee"); fp16 / bf16 inputs on the tensor cores with fp32 sums."""
    a_n, _, dim = text.shape
    b_n, v_n, _ = video.shape
    tmask = text_mask.bool()
    keep = tmask.any(0)  # positions masked for every query only ever gave s = 0: drop them, clamp the max at 0
    q = (text * tmask[..., None].to(text.dtype))[:, keep].contiguous()
    tw = text_weights[:, keep].float().contiguous()
    t_k = q.shape[1]
    f = video.to(q.dtype).contiguous()
    vm = video_mask.float().contiguous()
    vw = video_weights.float().contiguous()
    out = torch.empty(a_n, b_n, dtype=torch.float32, device=text.device)
    tp, vp = _pow2(t_k, 16), _pow2(v_n, 1)
    block_a = max(1, min(4, 128 // tp, triton.next_power_of_2(a_n)))  # 4 queries x 32 tokens = 128 rows
    block_b = max(1, 128 // vp)  # 8 videos x 16 frames = 128 columns
    grid = (triton.cdiv(a_n, block_a), triton.cdiv(b_n, block_b))
    _wti_kernel[grid](q, tw, f, vm, vw, out, a_n, b_n, t_k, v_n, dim,
                      q.stride(0), q.stride(1), tw.stride(0), f.stride(0), f.stride(1), vm.stride(0), vw.stride(0),
                      out.stride(0), CLAMP_FRAME_MAX=not bool(keep.all()), BLOCK_A=block_a, TP=tp, BLOCK_B=block_b,
                      VP=vp, BLOCK_D=min(64, _pow2(dim, 16)),
                      PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    return out
