"""The Wan VAE encoder: video [B, 3*p*p, F, H, W] in [-1, 1] (Wan 2.2: 2x2 patches folded into channels,
blocks.patchify) -> [B, 2*z_dim, T, H/8, W/8], mean and log-variance, T = 1 + (F - 1) / 4, chunk by chunk.

`down_pass` is local and runs on tiles (`stage_intervals` says what each tile reads); `middle_pass` sees
the whole latent frame (run/encode.py drives both).
"""

from __future__ import annotations

import torch
from torch import nn

from ..files.config import WanVAEConfig
from .blocks import AttentionBlock, CausalConv3d, DownStage, ResidualBlock, Resample, conv3x3, head_layers, norm_silu_conv
from .stream import StreamState


class Encoder(nn.Module):
    """Video [B, 3*p*p, F, H, W] -> [B, 2*z_dim, T, H/8, W/8] (mean and log-variance), streaming over time.

    Two passes per chunk of frames, the decoder's mirror: `down_pass` (the entry conv and the downsampling
    stages) is local, every spatial op a 3x3 conv, a per-pixel norm or a stride-2 conv, so a tile of its
    output depends only on a bounded window of the input (`stage_intervals`) and it can run on that window
    alone (`tiling.Window`); `middle_pass` (the middle block, whose attention sees the whole frame, and the
    head) runs on the whole frame at latent resolution.
    """

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        dims, t = cfg.encoder_dims, cfg.time_kernel
        self.conv1 = conv3x3(cfg.encoder_in_channels, dims[0], t)
        last = len(cfg.dim_mult) - 1
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and cfg.temporal_downsample[i]
            if cfg.is_residual:
                layers.append(DownStage(in_dim, out_dim, cfg.num_res_blocks, temporal, down=i < last, t=t))
                continue
            layers += [ResidualBlock(in_dim if j == 0 else out_dim, out_dim, t) for j in range(cfg.num_res_blocks)]
            if i < last:
                layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d", t=t))
        self.downsamples = nn.ModuleList(layers)
        self.stages: list[list[nn.Module]] = [[self.conv1]]  # each ends in a x2 downsample, but the last
        for layer in layers:
            self.stages[-1].append(layer)
            if _halves(layer) and layer is not layers[-1]:
                self.stages.append([])
        self.middle = nn.ModuleList([ResidualBlock(dims[-1], dims[-1], t), AttentionBlock(dims[-1]), ResidualBlock(dims[-1], dims[-1], t)])
        self.head = head_layers(dims[-1], cfg.z_dim * 2, t)

    @property
    def stage_scales(self) -> list[int]:
        """Spatial downsampling factor of each stage of `down_pass` (2, or 1 for the last)."""
        return [2 if _halves(stage[-1]) else 1 for stage in self.stages]

    def stage_intervals(self, a: int, b: int, length: int, stages: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Along one axis: what `down_pass` over `stages` [first, last) (all of them by default) must see for
        its output cells [a, b) of a frame `length` cells long.

        One interval per stage input, in that stage's pixels, then [a, b) itself. Walked backwards over
        the modules (a conv with padding p widens by p; the stride-2 conv reads 2j .. 2j+2 for cell j),
        clipped to the frame, and widened to even bounds where the stage halves, so that the window's
        stride grid is the frame's.
        """
        first, last = stages or (0, len(self.stages))
        scales = self.stage_scales  # read off the modules: once, not per stage (the planner calls this per tile)
        intervals = [(a, b)]
        size = length
        for i in reversed(range(first, last)):
            for layer in reversed(self.stages[i]):
                a, b = _interval_before(layer, a, b)
            size *= scales[i]
            a, b = max(a, 0), min(b, size)
            if scales[i] == 2:
                a, b = a - a % 2, b + b % 2
            intervals.append((a, b))
        return intervals[::-1]

    def down_pass(self, x: torch.Tensor, state: StreamState, window=None, stages: tuple[int, int] | None = None) -> torch.Tensor:
        """Entry conv and downsampling stages for one chunk (or only `stages` [first, last), x being the input
        of stage `first`); with a `window`, x covers `window.regions[0]`, each stage runs on what the tile
        needs and the output is the tile's own cells."""
        first, last = stages or (0, len(self.stages))
        for i in range(first, last):
            if window is not None and i > first:
                x = window.crop(i - first, x)
            for layer in self.stages[i]:
                x = layer(x, state)
        return x if window is None else window.crop(last - first, x)

    def middle_pass(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        """Middle block and head for one chunk, always on the whole latent frame."""
        for layer in self.middle:
            x = layer(x, state)
        return norm_silu_conv(self.head[0], self.head[2], x, state)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        return self.middle_pass(self.down_pass(x, state), state)


def _halves(layer: nn.Module) -> bool:
    """Whether an encoder layer halves the frame (a stride-2 Resample, or a Wan 2.2 stage ending in one)."""
    return isinstance(layer, Resample) and layer.mode.startswith("downsample") or isinstance(layer, DownStage) and layer.factor_s == 2


def _interval_before(layer: nn.Module, a: int, b: int) -> tuple[int, int]:
    """The input interval (one axis) that an encoder layer's output cells [a, b) depend on."""
    if isinstance(layer, DownStage):  # its AvgDown3D shortcut reads 2j .. 2j+1: the main path is the wider one
        for block in reversed(layer.downsamples):
            a, b = _interval_before(block, a, b)
        return a, b
    if isinstance(layer, ResidualBlock):
        pad = layer.residual[2].padding[-1] + layer.residual[6].padding[-1]
        return a - pad, b + pad
    if isinstance(layer, Resample) and layer.mode.startswith("downsample"):
        return 2 * a, 2 * b + 1  # zero pad right/bottom by one, then a 3x3 conv of stride 2
    if isinstance(layer, CausalConv3d):
        return a - layer.padding[-1], b + layer.padding[-1]
    raise TypeError(f"no receptive field rule for {type(layer).__name__}")

