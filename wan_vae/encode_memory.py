"""Peak-memory and work estimates of an encode, and the tile grid `tiling="auto"` picks for it (memory.py's mirror).

An encode holds, besides the weights and the caller's video:
  - the causal history: the last two input frames of every causal conv of the down path, at its stage's
    resolution, and one frame of each temporal downsample's input; `encode_video` runs one tile at a
    time through all of time (one tile's history alive), `encode_stream` every tile at once. The middle
    block and head keep theirs over the whole latent frame;
  - transients of the chunk being encoded, mostly full-resolution activations: measured as peak RSS
    minus everything else, per input pixel and video frame of a chunk, on the CPU (fp32, real-size
    Wan 2.1, 240x416 and 480x832, 1 and 2 latent frames per chunk: 1,560-1,820 B), linear in the area.
    Half precision and Wan 2.2 were not measured and take the same figure (2.2's first stage is 160
    channels at half the resolution after its 2x2 patches, so fewer bytes per input pixel);
  - for a tiled `encode_video`, the down path's output of every frame (gathered before the middle
    block runs), and the latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .memory import FIXED_OVERHEAD, SAFETY, AutoPlan, cheapest_grid, history_bytes
from .network import CausalConv3d, Resample
from .tiling import axis_spans

# bytes per input pixel and video frame of a chunk (a chunk of k latent frames holds 4k video frames)
TRANSIENT_BYTES_PER_PIXEL = 1500


@dataclass(frozen=True)
class EncoderFigures:
    """What one encoder costs per pixel of each stage's input, read off its modules at its precision."""

    stage_history: tuple[int, ...]  # bytes
    stage_work: tuple[int, ...]  # multiply-adds per video frame
    middle_history: int  # bytes per latent cell (middle block and head, whole frame)
    down_channels: int  # channels of the down path's output (what a tiled encode gathers)
    patch: int  # input pixels per stage-0 pixel along an axis (Wan 2.2: 2)


def figures(vae) -> EncoderFigures:
    encoder = vae.model.encoder
    history, work = [], []
    for stage in encoder.stages:
        modules = [m for layer in stage for m in layer.modules()]
        times = [m for m in modules if isinstance(m, Resample) and m.time_conv is not None]
        # the temporal downsample keeps one frame of its input, at the stage's output resolution (1/4 the pixels)
        history.append(history_bytes(stage) + sum(m.time_conv.in_channels * 4 // 4 for m in times))
        # 3-D convs run on every pixel and frame; the stride-2 conv2d and the temporal downsample on a quarter of them
        work.append(sum(m.weight.numel() for m in modules if isinstance(m, CausalConv3d))
                    + sum(m.weight.numel() // 4 for m in modules if type(m) is torch.nn.Conv2d)
                    + sum(m.time_conv.weight.numel() // 8 for m in times))  # fmt: skip
    return EncoderFigures(tuple(history), tuple(work), history_bytes([*encoder.middle, encoder.head]),
                          vae.config.encoder_dims[-1], vae.config.patch_size)  # fmt: skip


def _extents(vae, length: int, count: int) -> list[list[int]]:
    """Per stage, the window size along one axis of each of `count` tiles (Encoder.stage_intervals)."""
    per_tile = [vae.model.encoder.stage_intervals(a, b, length) for a, b in axis_spans(length, count)]
    return [[b - a for a, b in (tile[i] for tile in per_tile)] for i in range(len(per_tile[0]) - 1)]


def estimate(vae, h: int, w: int, rows: int = 1, cols: int = 1, frames_per_chunk: int = 1, streaming: bool = False,
             latent_frames: int | None = None, video_bytes: int = 0, fig: EncoderFigures | None = None) -> tuple[int, int]:  # fmt: skip
    """(estimated peak bytes, multiply-adds per video frame of the down path) of encoding an h x w cell
    video in rows x cols tiles, weights and the caller's `video_bytes` included.

    streaming: `encode_stream` (every tile's history alive) rather than `encode_video`; `latent_frames`
    sizes what a tiled `encode_video` gathers and the latents (None: streamed, a chunk at a time).
    """
    fig = fig or figures(vae)
    ys, xs = _extents(vae, h, rows), _extents(vae, w, cols)
    history_max = sum(b * max(y) * max(x) for b, y, x in zip(fig.stage_history, ys, xs))
    history_sum = sum(b * sum(y) * sum(x) for b, y, x in zip(fig.stage_history, ys, xs))
    history = fig.middle_history * h * w + (history_sum if streaming else history_max)
    if latent_frames is not None:  # a short video never builds a long one's history (the last chunk keeps none)
        history *= 0 if latent_frames == 1 else 0.5 if latent_frames - 1 <= frames_per_chunk else 1
    pixels = max(ys[0]) * max(xs[0]) * fig.patch**2
    transient = TRANSIENT_BYTES_PER_PIXEL * pixels * 4 * frames_per_chunk
    t = latent_frames or frames_per_chunk
    kept = vae.latent_channels * 4 * h * w * t
    if rows * cols > 1:
        kept += fig.down_channels * 4 * h * w * t
    weights = sum(p.numel() * p.element_size() for p in vae.model.parameters())
    work = sum(m * sum(y) * sum(x) for m, y, x in zip(fig.stage_work, ys, xs))
    return int(weights + FIXED_OVERHEAD + video_bytes + SAFETY * (history + transient + kept)), work


def plan_for_budget(vae, h: int, w: int, frames_per_chunk: int, budget: int, streaming: bool = False,
                    latent_frames: int | None = None, min_tiles: int = 1, video_bytes: int = 0) -> AutoPlan:  # fmt: skip
    """The encode's tile grid with the least work whose estimated peak fits `budget` bytes (memory.cheapest_grid)."""
    fig = figures(vae)
    return cheapest_grid(vae, h, w, frames_per_chunk, budget, min_tiles,
                         lambda rows, cols, fpc: estimate(vae, h, w, rows, cols, fpc, streaming, latent_frames, video_bytes, fig),
                         "encode")  # fmt: skip


def estimate_peak_bytes(vae, height_px: int, width_px: int, frames_per_chunk: int = 1, tile_px: int | None = None) -> int:
    """`estimate` in pixels for tiles of at most `tile_px` (None: untiled), a short video."""
    s = vae.spatial_scale
    h, w = height_px // s, width_px // s
    tile = max(h, w) if tile_px is None else max(tile_px // s, 1)
    return estimate(vae, h, w, math.ceil(h / tile), math.ceil(w / tile), frames_per_chunk)[0]
