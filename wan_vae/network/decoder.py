"""The Wan VAE decoder: latents [B, z_dim, T, h, w] (after the post-quant conv) -> [B, 3*p*p, F, 8h, 8w] in
[-1, 1] before the clamp, F = 1 + 4(T - 1) at the start of a video, 4T after (Wan 2.2: blocks.unpatchify
makes the pixels).

`middle_pass` sees the whole latent frame; `up_pass` is local and runs on tiles (`receptive_radii` says how
far each tile looks). run/decode.py drives both.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..files.config import WanVAEConfig
from .blocks import AttentionBlock, ResidualBlock, Resample, UpStage, conv3x3, head_layers
from .stream import StreamState


class Decoder(nn.Module):
    """Latent [B, z_dim, T, h, w] -> [B, 3*p*p, 1 + 4(T-1), 8h, 8w] at the start of a video, 4T later.

    Two passes per chunk of latent frames: `middle_pass` (entry conv and middle block, whose attention
    sees the whole frame, at latent resolution) and `up_pass` (the upsampling stages and the head).
    Every spatial op of `up_pass` is a 3x3 (or 1x1) conv, a per-pixel norm or a nearest upsample, so
    a tile of its output depends only on a bounded window of the middle output (`receptive_radii`):
    `up_pass` can run on one tile's window (`tiling.Window`) and give exactly the untiled pixels.

    `up_pass` yields the output in consecutive time pieces: after each stage the frames are split into
    pieces of at most `max_frames` that run through the rest of the network one after the other.
    Smaller pieces bound the memory of the full-resolution stages; larger ones give bigger, faster
    convolutions. Both give the same numbers (every later layer is causal and keeps its history).
    """

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        dims, t = cfg.decoder_dims, cfg.time_kernel
        self.conv1 = conv3x3(cfg.z_dim, dims[0], t)
        self.middle = nn.ModuleList([ResidualBlock(dims[0], dims[0], t), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0], t)])
        last = len(cfg.dim_mult) - 1
        blocks: list[nn.Module] = []
        self.stages: list[list[nn.Module]] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and cfg.temporal_upsample[i]
            if cfg.is_residual:
                blocks.append(UpStage(in_dim, out_dim, cfg.num_res_blocks, temporal, up=i < last, t=t))
                self.stages.append([blocks[-1]])
                continue
            stage = [ResidualBlock((in_dim // 2 if i > 0 else in_dim) if j == 0 else out_dim, out_dim, t)
                     for j in range(cfg.num_res_blocks + 1)]  # fmt: skip
            if i < last:
                stage.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim // 2, t))
            blocks.extend(stage)
            self.stages.append(stage)
        self.upsamples = nn.ModuleList(blocks)
        self.head = head_layers(dims[-1], cfg.decoder_out_channels, t)

    @property
    def stage_scales(self) -> list[int]:
        """Spatial upsampling factor of each stage of `up_pass` (2, or 1 for the last)."""
        return [2 if any(isinstance(m, Resample) for layer in stage for m in layer.modules()) else 1 for stage in self.stages]

    def receptive_radii(self) -> list[int]:
        """How far, in pixels of each stage's input, the output of `up_pass` looks: one radius per stage, then 0.

        Walked backwards from the head over the modules themselves: a conv with spatial padding p widens
        the window by p; a nearest x2 upsample followed by its conv halves it (rounded up). For Wan 2.1
        and 2.2 this gives 13 latent cells at the middle block's output.
        """
        radius = self.head[2].padding[-1]
        radii = [0]
        for stage in reversed(self.stages):
            for layer in reversed(stage):
                radius = _radius_before(layer, radius)
            radii.append(radius)
        return radii[::-1]

    def middle_pass(self, z: torch.Tensor, state: StreamState, final: bool = False) -> torch.Tensor:
        """Entry conv and middle block for one chunk of latent frames, always on the whole frame."""
        state.final = final
        x = self.conv1(z, state)
        for layer in self.middle:
            x = layer(x, state)
        return x

    def up_pass(self, x: torch.Tensor, state: StreamState, window=None, max_frames: int | None = None,
                final: bool = False) -> Iterator[torch.Tensor]:  # fmt: skip
        """The upsampling stages and head for one chunk of `middle_pass` output; `final` if no chunk follows
        (layers then keep no history). With a `window` (tiling.Window), x covers `window.regions[0]` and
        each stage runs on the part of its input that the tile's output needs; the output is the tile."""
        yield from self._run_stages(0, x, state, window, max_frames, final)

    def _run_stages(self, i: int, x: torch.Tensor, state: StreamState, window, max_frames: int | None,
                    final: bool) -> Iterator[torch.Tensor]:  # fmt: skip
        state.final = final  # set before this call's layers run; pieces below set their own
        state.workspace.clear()
        if window is not None and 0 < i < len(self.stages):
            x = window.crop(i, x)
        if i == len(self.stages):
            norm, _, conv = self.head
            act = state.workspace.take(x, x.shape, conv.compute_dtype)  # the norm rounds once, into the head's precision
            out = conv.run_taps(norm(x, out=act, silu=True), state)
            del x
            state.workspace.give(act)
            yield out if window is None else window.crop(i, out)  # the head ran on the last stage's window
            return
        for layer in self.stages[i]:
            x = layer(x, state)
        # The final chunk runs whole: splitting it would only build history for its own later pieces.
        pieces = list(x.split(max_frames, dim=2)) if max_frames and not final else [x]
        del x
        while pieces:
            # pop: once handed down, a piece is referenced only by the stage using it, so it is freed there.
            last = len(pieces) == 1
            yield from self._run_stages(i + 1, pieces.pop(0), state, window, max_frames, final and last)


def _radius_before(layer: nn.Module, radius: int) -> int:
    """The window radius at `layer`'s input that its output needs within `radius` (pixels of each side)."""
    if isinstance(layer, UpStage):  # its DupUp3D shortcut is per pixel: the main path is the wider one
        for block in reversed(layer.upsamples):
            radius = _radius_before(block, radius)
        return radius
    if isinstance(layer, ResidualBlock):
        return radius + layer.residual[6].padding[-1] + layer.residual[2].padding[-1]
    if isinstance(layer, Resample) and layer.mode.startswith("upsample"):
        return -(-(radius + layer.resample[1].padding[-1]) // 2)  # the conv runs on the x2 image
    raise TypeError(f"no receptive field rule for {type(layer).__name__}")

