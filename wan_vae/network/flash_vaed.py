"""Flash-VAED's Wan 2.1 decoder (Aoko955/Flash-VAED, `models/wan/model_hybrid_aggressive.py`, read at 9ed87ee): the
Wan 2.1 decoder distilled into a smaller one, paired with the stock encoder.

Its layout, as its `HybridDecoder3d` builds it (widths read from the file's tensors: 384 / 192 / 24 / 12 in the release):
  - entry conv (causal 3x3x3) and a middle of two "fast" residual blocks around the per-frame attention;
  - fast residual blocks: RMS norm, SiLU and a depthwise-separable causal conv (a 3x3x3 depthwise conv, then a
    1x1x1 pointwise one), twice; the shortcut is a depthwise-separable 1x1x1 conv when widths differ;
  - two temporal x2 upsamples (Wan's time conv, then a nearest x2 and a 3x3 conv to a new width) at latent and
    twice latent resolution, then 2-D residual blocks per frame (2-D convs, a 1x1 conv shortcut always) around a
    spatial x2 upsample;
  - a head of RMS norm, SiLU and a causal 3x3x3 conv to RGB.
Every layer is the reference's in numbers; the causal history rides on `StreamState` as in the Wan decoder, so the
frames of any chunking are those of its frame-by-frame decode. (Its own decode also clears its cache after latent
frame 20, which restarts the history mid-video for longer ones; this continues it, as a causal decoder must.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .blocks import AttentionBlock, CausalConv3d, Resample, RMSNorm, head_layers
from .stream import StreamState, from_frames, to_frames

MARKER = "decoder.middle.0.residual.2.depthwise_conv.weight"  # what no other Wan-family file has


class SeparableConv3d(nn.Module):
    """A causal depthwise k x k x k conv (groups = channels), then a pointwise 1x1x1 conv."""

    def __init__(self, in_dim: int, out_dim: int, k: int) -> None:
        super().__init__()
        self.depthwise_conv = CausalConv3d(in_dim, in_dim, k, padding=k // 2, groups=in_dim)
        self.pointwise_conv = CausalConv3d(in_dim, out_dim, 1)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x, state), state)


class FastBlock(nn.Module):
    """RMS norm, SiLU, separable conv, RMS norm, SiLU, separable conv, plus the shortcut (indices as the file's)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.ModuleList([RMSNorm(in_dim), nn.SiLU(), SeparableConv3d(in_dim, out_dim, 3), RMSNorm(out_dim), nn.SiLU(),
                                       nn.Identity(), SeparableConv3d(out_dim, out_dim, 3)])  # fmt: skip
        self.shortcut = SeparableConv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        h = conv2(norm2(conv1(norm1(x, silu=True), state), silu=True), state)
        return h.add_(x if self.shortcut is None else self.shortcut(x, state))


class PlanarBlock(nn.Module):
    """A 2-D residual block run on each frame: norm, SiLU, 3x3 conv, twice; a 1x1 conv shortcut."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.ModuleList([RMSNorm(in_dim, images=True), nn.SiLU(), nn.Conv2d(in_dim, out_dim, 3, padding=1),
                                       RMSNorm(out_dim, images=True), nn.SiLU(), nn.Identity(), nn.Conv2d(out_dim, out_dim, 3, padding=1)])  # fmt: skip
        self.shortcut = nn.Conv2d(in_dim, out_dim, 1)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        frames = to_frames(x)
        h = conv2(norm2(conv1(norm1(frames, silu=True)), silu=True))
        return from_frames(h.add_(self.shortcut(frames)), x.shape[0])


class FlashDecoder(nn.Module):
    """z [B, z_dim, T, h, w] (after the post-quant conv) -> [B, 3, F, 8h, 8w] in [-1, 1] before the clamp."""

    def __init__(self, z_dim: int, d0: int, d1: int, d2: int, d3: int) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(z_dim, d0, 3, padding=1)
        self.middle = nn.ModuleList([FastBlock(d0, d0), AttentionBlock(d0), FastBlock(d0, d0)])
        self.upsamples = nn.ModuleList([
            FastBlock(d0, d0), FastBlock(d0, d0), FastBlock(d0, d0), Resample(d0, "upsample3d", d1),
            FastBlock(d1, d0), FastBlock(d0, d0), FastBlock(d0, d0), Resample(d0, "upsample3d", d2),
            PlanarBlock(d2, d2), PlanarBlock(d2, d2), PlanarBlock(d2, d2), Resample(d2, "upsample2d", d3),
            PlanarBlock(d3, d3), PlanarBlock(d3, d3), PlanarBlock(d3, d3),
        ])  # fmt: skip
        self.head = head_layers(d3, 3)

    def middle_pass(self, z: torch.Tensor, state: StreamState) -> torch.Tensor:
        x = self.conv1(z, state)
        for layer in self.middle:
            x = layer(x, state)
        return x

    def up_pass(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        for layer in self.upsamples:
            x = layer(x, state)
        norm, _, conv = self.head
        return conv(norm(x, silu=True), state)


class FlashModel(nn.Module):
    """The file's modules: the quant convs (`conv1` unused: the encoder is the stock one) and the decoder."""

    def __init__(self, z_dim: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = FlashDecoder(z_dim, *widths)


def is_flash_vaed(sd: Mapping[str, object]) -> bool:
    return MARKER in sd


def widths(sd: Mapping[str, torch.Tensor]) -> tuple[int, tuple[int, int, int, int]]:
    """(z_dim, the four widths) read from the tensors; KeyError names a tensor that is missing."""
    z_dim = sd["decoder.conv1.weight"].shape[1]
    return z_dim, (sd["decoder.conv1.weight"].shape[0], sd["decoder.upsamples.3.resample.1.weight"].shape[0],
                   sd["decoder.upsamples.7.resample.1.weight"].shape[0], sd["decoder.upsamples.11.resample.1.weight"].shape[0])  # fmt: skip
