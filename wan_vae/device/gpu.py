"""Whether a decode takes the GPU-shaped path, and what of the GPU's software stack it must work around.

The GPU path (network/blocks.py) differs from the CPU's in how work is cut, never in what it computes: fused norm
kernels, phase kernels and weight casts made once per decode, the upsample's four phases in one convolution, more
frames per pass. It runs for tensors on CUDA devices; `shaped_for_gpu()` forces it elsewhere, for the cost model
(benchmarks/gpu_cost.py), which traces it under FakeTensorMode on a CPU-only torch, and for tests that compare it
with the CPU path on the CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging

import torch

log = logging.getLogger("wan_vae")

_forced: contextvars.ContextVar[bool | None] = contextvars.ContextVar("wan_vae_gpu_shaped", default=None)
_warned: set[str] = set()


def gpu_shaped(like: torch.Tensor | torch.device) -> bool:
    """True where work on `like` (a tensor or a device) takes the GPU-shaped path: CUDA, unless `shaped_for_gpu` says
    otherwise."""
    forced = _forced.get()
    device = like.device if isinstance(like, torch.Tensor) else torch.device(like)
    return device.type == "cuda" if forced is None else forced


@contextlib.contextmanager
def shaped_for_gpu(on: bool = True):
    """Within the block, every decode and encode takes the GPU-shaped path (on=True) or the CPU's (False)."""
    token = _forced.set(on)
    try:
        yield
    finally:
        _forced.reset(token)


def slow_cudnn_conv3d() -> bool:
    """torch 2.9 with a cuDNN older than 9.15 runs conv3d with about 3x the memory and half the speed (pytorch issue
    166643; ComfyUI PRs 10373 and 10398, WanVideoWrapper issue 1613). Says how to fix it, once per process."""
    if not torch.cuda.is_available() or not torch.backends.cudnn.is_available():
        return False
    version = torch.backends.cudnn.version() or 0
    slow = torch.__version__.startswith("2.9") and version < 91500
    if slow and "cudnn" not in _warned:
        _warned.add("cudnn")
        log.warning("torch %s with cuDNN %d runs 3-D convolutions with about 3x the memory (pytorch issue 166643): "
                    "decodes plan for it and take fewer frames per pass. To fix it, install cuDNN 9.15 or newer "
                    "(pip install 'nvidia-cudnn-cu12>=9.15' or 'nvidia-cudnn-cu13>=9.15', matching your torch's CUDA).",
                    torch.__version__, version)  # fmt: skip
    return slow
