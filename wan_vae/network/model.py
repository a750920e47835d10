"""The whole Wan VAE network (`WanVAEModel`: encoder, quant convs, decoder) and its precision rules.

State-dict keys are the original Wan names (encoder., conv1., conv2., decoder.). `set_precision` puts the
heavy convs in fp16/bf16 and keeps everything else in fp32; `precision` reads back what it chose.
"""

from __future__ import annotations

import torch
from torch import nn

from ..device.gpu import gpu_shaped
from ..files.config import WanVAEConfig
from .blocks import CausalConv3d, DownStage, ResidualBlock, Resample
from .decoder import Decoder
from .encoder import Encoder


class WanVAEModel(nn.Module):
    """The whole network; its state-dict keys are the original Wan names (encoder., conv1., conv2., decoder.)."""

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        self.config = cfg
        if cfg.has_encoder:  # a decoder-only file (a decoder fine-tune) has neither
            self.encoder = Encoder(cfg)
            self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)  # "quant conv": encoder output -> mean, logvar
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)  # "post-quant conv": latent -> decoder input
        self.decoder = Decoder(cfg)


def half_precision_blocks(model: WanVAEModel) -> list[ResidualBlock]:
    """The residual blocks at the encoder's and the decoder's two highest resolutions.

    Their 3x3x3 convs are most of the work: 72% of the Wan 2.1 decoder's multiply-adds, 70% of 2.2's.
    Measured with random real-size weights, rounding one conv of the decoder to bf16 (input, weight
    and output) adds 1.3e-3 to 5e-3 relative L2 at the output, evenly spread, and the errors add in
    quadrature; keeping the other 28% of the work in fp32 takes the total from 1.5e-2 to 8e-3.
    """
    decoder = [b for stage in model.decoder.stages[-2:] for layer in stage for b in layer.modules() if isinstance(b, ResidualBlock)]
    encoder, stages = [], 0
    for layer in model.encoder.downsamples if model.config.has_encoder else ():  # Wan 2.1: blocks and Resamples in one list; 2.2: DownStages
        encoder += [b for b in layer.modules() if isinstance(b, ResidualBlock)]
        stages += isinstance(layer, (Resample, DownStage))
        if stages == 2:
            break
    return encoder + decoder


def set_precision(model: WanVAEModel, dtype: torch.dtype, mixed: bool = True) -> None:
    """fp32 everywhere; or half precision (fp16/bf16) in the convs of `half_precision_blocks` with everything else in
    fp32 (`mixed`, within 1% of fp32), or in every conv but the two heads (`mixed=False`: the GPU default, all tensor
    cores, activations in half precision between layers); float64 makes everything float64 (for checking numerics:
    several times slower than fp32, twice the memory).

    Mixed keeps the residual sums, norms, attention, up/downsampling, the entry and exit convs and the low-resolution
    stages in fp32: in half precision they would double the error for little time on a CPU (pure bf16 measured 2.4e-2
    relative L2 against fp32 on the decoder benchmark). Their weights keep the precision they were loaded in and are
    cast to fp32 as they are used, so a bf16 file takes no more memory than in pure bf16 (Wan 2.2: 1.4 GB, not 2.7).
    Each conv casts its input to its compute dtype when filling its input buffer, so the boundaries need no other code.
    The norms compute in fp32 at every precision and round once (kernels/norm.py).
    """
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"dtype must be float32, bfloat16, float16 or float64, not {dtype}")
    full = torch.float64 if dtype == torch.float64 else torch.float32
    if mixed or dtype == full:
        half = {conv for block in half_precision_blocks(model) for conv in (block.residual[2], block.residual[6])}
    else:  # every conv but the quant convs (1x1x1 at latent size) and the heads, which make latents and pixels
        encoder = (model.conv1, model.encoder.head[2]) if model.config.has_encoder else ()
        keep = {model.conv2, model.decoder.head[2], *encoder}
        half = {m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Conv3d) and m not in keep}
    for module in model.modules():
        if isinstance(module, CausalConv3d):
            module.compute_dtype = dtype if module in half else full
    if dtype == full:
        model.to(dtype)
        return
    for conv in half:
        conv.to(dtype)


def lay_out_weights(model: nn.Module) -> None:
    """Conv weights in channels-last memory on the GPU path (the activations' layout: no cuDNN copy of the weights per
    call), in the default layout elsewhere. Done in place wherever the weights move (WanVAE.to, its replicas)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d):
            weight = module.weight
            fmt = torch.contiguous_format
            if gpu_shaped(weight):
                fmt = torch.channels_last_3d if weight.dim() == 5 else torch.channels_last
            if not weight.is_contiguous(memory_format=fmt):
                weight.data = weight.data.contiguous(memory_format=fmt)


def precision(model: WanVAEModel) -> torch.dtype:
    """The dtype `set_precision` gave the model (its half-precision convs' dtype)."""
    return half_precision_blocks(model)[-1].residual[6].compute_dtype


def is_mixed(model: WanVAEModel) -> bool:
    """Whether a half-precision model keeps its convs outside `half_precision_blocks` in fp32 (set_precision)."""
    return model.decoder.conv1.compute_dtype != precision(model)


def full_precision(model: WanVAEModel) -> torch.dtype:
    """What the model computes in outside its half-precision convs: float32, or float64 for a float64 model."""
    return model.conv2.compute_dtype

