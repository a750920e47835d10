"""`wan_vae::rms_norm`: the Wan RMS norm (optional bias add first, optional SiLU after) of x written into `out`.

One custom op, so that FakeTensorMode, the GPU cost model and `torch.compile` see one op where the torch code is a
chain of 7-8 kernels per band. On CUDA it runs the Triton kernel (kernels/triton_norm.py); on the CPU, without
Triton, or after a kernel failed once on this process (logged once, never a failed decode) it runs `rms_norm_torch`,
the numbers of diffusers' `F.normalize(x, dim=1) * sqrt(C) * gamma` computed in fp32 and rounded once into `out`.
"""

from __future__ import annotations

import logging
import torch
import torch.nn.functional as F

log = logging.getLogger("wan_vae")

EPS = 1e-12  # F.normalize's
# fp32 scratch of the torch path for half-precision tensors, per band: small on the CPU (it stays in cache),
# large on a GPU where every band is a few kernel launches
SLICE_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 24}

_triton = None  # the kernel module once imported; False when Triton is missing or a kernel failed


def triton_kernels():
    """kernels/triton_norm.py, or None where Triton cannot run (not installed, or a kernel failed before)."""
    global _triton
    if _triton is None:
        try:
            from . import triton_norm
        except Exception as error:  # ImportError, or a Triton too old for its language: the torch path serves
            log.info("Triton is not usable here (%s): the RMS norm runs in torch", error)
            _triton = False
        else:
            _triton = triton_norm
    return _triton or None


def kernel_for(x: torch.Tensor, out: torch.Tensor):
    """The Triton kernel module for this call, or None: CUDA tensors [B, C, ...] whose positions flatten to one
    stride, at most MAX_CHANNELS channels, where Triton runs."""
    kernels = triton_kernels() if x.is_cuda else None
    if kernels is None or x.shape != out.shape or x.dim() < 3 or x.shape[1] > kernels.MAX_CHANNELS:
        return None
    try:
        x.view(*x.shape[:2], -1), out.view(*out.shape[:2], -1)
    except RuntimeError:
        return None
    return kernels


def _register() -> torch.library.Library | None:
    """Define `wan_vae::rms_norm` once per process (a second copy of this module, as the tests import it, finds it
    defined), its body for every device and its fake implementation (no values: nothing to do).

    torch.library's lower-level API rather than `torch.library.custom_op`: measured on the CPU, custom_op's eager
    wrapper made a full-size temporary per call for the mutated `out` (peak RSS +145 MB in a 240x416 decode)."""
    try:
        torch.ops.wan_vae.rms_norm.default
        return None
    except (AttributeError, RuntimeError):
        pass
    library = torch.library.Library("wan_vae", "DEF")  # kept alive by the module: the registration lives as long
    library.define("rms_norm(Tensor x, Tensor gamma, Tensor? bias, Tensor(a!) out, float scale, bool silu) -> ()")
    library.impl("rms_norm", lambda *args: run_rms_norm(*args), "CompositeExplicitAutograd")
    torch.library.register_fake("wan_vae::rms_norm", lambda x, gamma, bias, out, scale, silu: None, lib=library)
    return library


def run_rms_norm(x: torch.Tensor, gamma: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, scale: float,
                 silu: bool) -> None:  # fmt: skip
    """The op's body: the Triton kernel where it runs, else (and for good after a kernel failed) the torch path."""
    global _triton
    kernels = kernel_for(x, out)
    if kernels is not None:
        try:
            kernels.rms_norm(x, gamma, bias, out, scale, silu, EPS)
            return
        except Exception as error:  # a kernel that fails to compile or launch: the torch path serves from now on
            log.warning("The fused RMS norm kernel failed (%s: %s); the decode goes on with the torch norm.",
                        type(error).__name__, error)  # fmt: skip
            _triton = False
    rms_norm_torch(x, gamma, bias, out, scale, silu)


def rms_norm_torch(x: torch.Tensor, gamma: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, scale: float,
                   silu: bool) -> torch.Tensor:  # fmt: skip
    """The norm in torch. fp32 (or float64) x into a like `out` directly; half precision in fp32 bands, rounded once
    into `out` (an fp16 zero vector would give 0/0 = NaN, and mixed-dtype elementwise ops on the CPU go through
    full-size fp32 temporaries: measured 241 ms vs 16 ms in fp32 for [1, 96, 4, 240, 416])."""
    gamma = gamma.reshape(1, -1, *([1] * (x.dim() - 2)))
    if bias is not None:
        bias = bias.reshape(gamma.shape)
    if x.dtype == out.dtype and x.dtype in (torch.float32, torch.float64):
        return _normalize(x if bias is None else x + bias.to(x.dtype), out, gamma, scale, silu)
    slice_elements = SLICE_ELEMENTS.get(x.device.type, SLICE_ELEMENTS["cuda"])
    c = x.shape[1]
    if x.dim() == 5 and x.stride(1) == out.stride(1) == 1:
        # NDHWC: every pixel is a row of C channels; bands of rows through one scratch buffer
        rows_in, rows_out = x.permute(0, 2, 3, 4, 1).reshape(-1, c), out.permute(0, 2, 3, 4, 1).reshape(-1, c)
        rows = max(1, min(slice_elements // c, rows_in.shape[0]))
        scratch = torch.empty(rows, c, dtype=torch.float32, device=x.device)
        g = gamma.reshape(1, c)
        for y in range(0, rows_in.shape[0], rows):
            n = min(rows, rows_in.shape[0] - y)
            band = scratch[:n]
            band.copy_(rows_in[y : y + n])
            if bias is not None:
                band.add_(bias.reshape(1, c))
            norm = torch.linalg.vector_norm(band, dim=1, keepdim=True)
            band.div_(norm.clamp_min_(EPS)).mul_(g.float() * scale)
            rows_out[y : y + n].copy_(F.silu(band, inplace=True) if silu else band)
        return out
    frames = [(x, out)] if x.dim() == 4 else [(x[:, :, t], out[:, :, t]) for t in range(x.shape[2])]
    g4 = gamma.reshape(1, c, 1, 1)
    b4 = None if bias is None else bias.reshape(1, c, 1, 1)
    for xf, of in frames:  # [B, C, H, W] each (NCDHW memory), processed in bands of rows
        rows = max(1, slice_elements // (xf[0, :, 0].numel()))
        for y in range(0, xf.shape[2], rows):
            band = xf[:, :, y : y + rows]
            src = band.float() if b4 is None else band.float() + b4
            of[:, :, y : y + rows].copy_(_normalize(src, torch.empty_like(src) if src is band else src, g4, scale, silu))
    return out


def _normalize(x: torch.Tensor, out: torch.Tensor, gamma: torch.Tensor, scale: float, silu: bool) -> torch.Tensor:
    """The norm of fp32 x into fp32 `out` (which may be x)."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    torch.div(x, norm.clamp_min_(EPS), out=out)
    out.mul_(gamma.to(x.dtype) * scale)
    return F.silu(out, inplace=True) if silu else out


_library = _register()  # out = silu?((x + bias) / max(||x + bias||_C, eps) * gamma * scale), channels on dim 1
