"""The Triton kernel of the fused RMS norm: optional bias add, norm over channels, gamma, optional SiLU, one pass.

Imported only where Triton is (kernels/norm.py decides). Takes any strided [B, S, C] view of x and out (C the
channels, S the positions: NDHWC and NCDHW memory both are such views), reads x once and writes out once; all
arithmetic in fp32, rounded once on the store, in the reference's order (shared/reference/wan_reference.md 1.3):
(x + bias) / max(||x + bias||, eps) * (gamma * scale), then x * sigmoid(x). Only the fp32 sum order of the norm
differs from torch's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_CHANNELS = 4096  # one program holds a row of channels in registers
TILE_ELEMENTS = 4096  # rows x channels per program


@triton.jit
def _rms_norm_kernel(x_ptr, out_ptr, gamma_ptr, bias_ptr, positions, channels,
                     sxb, sxs, sxc, sob, sos, soc, scale, eps,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    b = tl.program_id(1).to(tl.int64)
    s = (tl.program_id(0).to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S))[:, None]
    c = tl.arange(0, BLOCK_C)[None, :]
    in_channels = c < channels
    mask = (s < positions) & in_channels
    v = tl.load(x_ptr + b * sxb + s * sxs + c * sxc, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(bias_ptr + c, mask=in_channels, other=0.0).to(tl.float32)
    norm = tl.sqrt(tl.sum(v * v, axis=1))[:, None]
    g = tl.load(gamma_ptr + c, mask=in_channels, other=0.0).to(tl.float32) * scale
    y = v / tl.maximum(norm, eps) * g
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(out_ptr + b * sob + s * sos + c * soc, y.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, gamma: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, scale: float,
             silu: bool, eps: float = 1e-12) -> None:  # fmt: skip
    """Launch the kernel on x and out, [B, C, ...] of one shape (any strides that flatten to [B, C, S])."""
    b, c = x.shape[:2]
    xs, os_ = _positions_view(x), _positions_view(out)
    positions = xs.shape[1]
    block_c = triton.next_power_of_2(c)
    block_s = max(1, min(TILE_ELEMENTS // block_c, triton.next_power_of_2(positions)))
    grid = (triton.cdiv(positions, block_s), b)
    _rms_norm_kernel[grid](
        xs, os_, gamma.reshape(-1), bias if bias is not None else gamma, positions, c,
        *xs.stride(), *os_.stride(), scale, eps,
        HAS_BIAS=bias is not None, SILU=silu, BLOCK_S=block_s, BLOCK_C=block_c,
    )  # fmt: skip


def _positions_view(t: torch.Tensor) -> torch.Tensor:
    """[B, C, *spatial] -> a [B, S, C] view (never a copy: kernels/norm.py only sends tensors that flatten)."""
    return t.view(*t.shape[:2], -1).transpose(1, 2)
