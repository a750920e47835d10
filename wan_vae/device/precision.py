"""Which precision suits a device: the default, and a warning where half precision would crawl."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("wan_vae")


def default_dtype(device) -> torch.dtype:
    """bf16 on CUDA GPUs that support it (faster and smaller, within 1% of fp32); fp32, the reference, elsewhere."""
    device = torch.device(device)
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def default_mixed(device) -> bool:
    """Whether half precision stays in the heavy convs (within 1% of fp32; the CPU's choice, where the other convs
    would gain little) or takes every conv (CUDA: tensor cores throughout, half the activation traffic; within 2%)."""
    return torch.device(device).type != "cuda"


def warn_if_slow_on_cpu(device, dtype: torch.dtype) -> None:
    """Half-precision convs on a CPU without native support run a fallback kernel (fp16 on this
    project's AVX-512 CPU: 4 GFLOP/s against 245 in fp32): say so rather than look hung.

    Checked when work starts, not at load: the nodes keep a GPU's VAE on the CPU between runs."""
    check = {torch.float16: "_is_mkldnn_fp16_supported", torch.bfloat16: "_is_mkldnn_bf16_supported"}.get(dtype)
    if torch.device(device).type != "cpu" or check is None:  # fp32 and float64 have no slow path to warn of
        return
    try:
        supported = getattr(torch.ops.mkldnn, check)()
    except (AttributeError, RuntimeError):  # not a oneDNN build: nothing known
        return
    if not supported:
        name = str(dtype).removeprefix("torch.")
        log.warning("This CPU has no fast %s convolutions: decoding in %s will be many times slower than in fp32. "
                    "Use fp32 (or bf16 where supported) on the CPU.", name, name)  # fmt: skip
