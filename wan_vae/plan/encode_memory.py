"""Peak-memory and work estimates of an encode, and the tile grid `tiling="auto"` picks for it (memory.py's mirror).

An encode holds, besides the weights and the caller's video:
  - the causal history: the last two input frames of every causal conv of the down path, at its stage's
    resolution, and one frame of each temporal downsample's input; `encode_video` runs one tile at a
    time through all of time (one tile's history alive), `encode_stream` every tile at once. The middle
    block and head keep theirs over the whole latent frame;
  - transients of the chunk being encoded, mostly the first stage's activations: measured as peak RSS
    minus everything else, per input pixel and video frame of a chunk, on the CPU (fp32, real-size
    Wan 2.1, 240x416 and 480x832, 1 and 2 latent frames per chunk: 1,560-1,820 B; 1,630 B at 480x832
    with every weight in memory, as in ComfyUI), linear in the area; kept here per channel of the first
    stage (1,650 B / 96), so that Wan 2.2 (160 channels on 2x2 patches: 40 per input pixel) and a later
    segment (its own channels, pixels and frames) scale from it. Half precision takes the fp32 figure;
  - for a tiled `encode_video`, the down path's output of every frame (gathered before the middle
    block runs), and the latents.

A tiled whole-video encode may be split (`best_split`): stages before the split run tile by tile over
the whole video and their output (the next stage's input, every frame) is kept, then the remaining
stages run tile by tile on it. Each tile then carries only its own segment's margin: unsplit, a tile
at full resolution carries the margin of the whole down path (61-68 px for Wan 2.1), where most of the
work is; split at stage 2, 14-18 px. The price is that intermediate, for Wan 2.1 at stage 2 twice the
video's own fp32 size, so the planner weighs it like any other memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..errors import SettingsError
from ..network.blocks import CausalConv3d, Resample
from .memory import FIXED_OVERHEAD, SAFETY, AutoPlan, cheapest_grid, history_bytes, too_small
from .tiling import axis_spans

# bytes per channel of a stage's activations, per pixel and frame of a chunk at that stage (a chunk of k
# latent frames holds 4k video frames)
TRANSIENT_BYTES_PER_CHANNEL = 1650 / 96
# what tiled encodes held beyond that linear model, measured at 832x480 (fp32, CPU, every weight in memory):
# 60-100 MB for 256-512 px tiles, split or not; handing freed memory back between tiles did not change it
ENCODE_OVERHEAD = 128 * 2**20


@dataclass(frozen=True)
class EncoderFigures:
    """What one encoder costs per pixel of each stage's input, read off its modules at its precision."""

    stage_history: tuple[int, ...]  # bytes
    stage_work: tuple[float, ...]  # multiply-adds per video frame (a stage after a temporal halving runs on half)
    stage_channels: tuple[int, ...]  # channels each stage works at (its output's)
    stage_halvings: tuple[int, ...]  # temporal halvings before each stage
    middle_history: int  # bytes per latent cell (middle block and head, whole frame)


def figures(vae) -> EncoderFigures:
    encoder = vae.model.encoder
    history, work, halvings = [], [], []
    for i, stage in enumerate(encoder.stages):
        modules = [m for layer in stage for m in layer.modules()]
        times = [m for m in modules if isinstance(m, Resample) and m.time_conv is not None]
        halvings.append(sum(vae.config.temporal_downsample[:i]))
        # the temporal downsample keeps one frame of its input, at the stage's output resolution (1/4 the pixels)
        history.append(history_bytes(stage) + sum(m.time_conv.in_channels * 4 // 4 for m in times))
        # 3-D convs run on every pixel and frame; the stride-2 conv2d and the temporal downsample on a quarter of them
        work.append((sum(m.weight.numel() for m in modules if isinstance(m, CausalConv3d))
                     + sum(m.weight.numel() // 4 for m in modules if type(m) is torch.nn.Conv2d)
                     + sum(m.time_conv.weight.numel() // 8 for m in times)) / 2 ** halvings[-1])  # fmt: skip
    dims = vae.config.encoder_dims
    return EncoderFigures(tuple(history), tuple(work), tuple(dims[1:]), tuple(halvings),
                          history_bytes([*encoder.middle, encoder.head]))  # fmt: skip


def _extents(vae, length: int, count: int, stages: tuple[int, int]) -> list[list[int]]:
    """Per stage of `stages`, the window size along one axis of each of `count` tiles of the stages' output,
    `length` of its pixels (Encoder.stage_intervals)."""
    per_tile = [vae.model.encoder.stage_intervals(a, b, length, stages) for a, b in axis_spans(length, count)]
    return [[b - a for a, b in (tile[i] for tile in per_tile)] for i in range(len(per_tile[0]) - 1)]


@dataclass(frozen=True)
class Split:
    """A tiled whole-video encode in two segments (see the module's doc)."""

    stage: int  # stages before it run first, tile by tile over the whole video; their output is kept
    rest_tiled: bool  # the stages from it on run in the same tiles (else on the whole frame, at their lower resolution)


def grids(stages: int, rows: int, cols: int, split: Split | None) -> list[tuple[int, int, int, int]]:
    """The segments of a down path of `stages` stages in rows x cols tiles: (first, last, rows, cols) each."""
    if split is None:
        return [(0, stages, rows, cols)]
    rest = (rows, cols) if split.rest_tiled else (1, 1)
    return [(0, split.stage, rows, cols), (split.stage, stages, *rest)]


def estimate(vae, h: int, w: int, rows: int = 1, cols: int = 1, frames_per_chunk: int = 1, streaming: bool = False,
             latent_frames: int | None = None, video_bytes: int = 0, fig: EncoderFigures | None = None,
             split: Split | None = None) -> tuple[int, int]:  # fmt: skip
    """(estimated peak bytes, multiply-adds per video frame of the down path) of encoding an h x w cell
    video in rows x cols tiles, weights and the caller's `video_bytes` included.

    streaming: `encode_stream` (every tile's history alive) rather than `encode_video`; `latent_frames`
    sizes what a tiled `encode_video` gathers and the latents (None: streamed, a chunk at a time).
    """
    fig = fig or figures(vae)
    wide = 2 if vae.full_dtype == torch.float64 else 1  # a float64 model's activations take twice the bytes
    n = len(fig.stage_work)
    tiled = rows * cols > 1
    split = split if tiled and not streaming and latent_frames is not None else None
    segments = []  # per segment: (history, transient, bytes of its output over the video)
    work = 0
    t = latent_frames or frames_per_chunk
    for first, last, r, c in grids(n, rows, cols, split):
        scale = math.prod(vae.model.encoder.stage_scales[last:])
        ys, xs = _extents(vae, h * scale, r, (first, last)), _extents(vae, w * scale, c, (first, last))
        stages = range(first, last)
        history = sum(fig.stage_history[i] * (sum if streaming else max)(y) * (sum if streaming else max)(x)
                      for i, y, x in zip(stages, ys, xs))  # fmt: skip
        frames_in_chunk = 4 * frames_per_chunk / 2 ** fig.stage_halvings[first]
        transient = wide * TRANSIENT_BYTES_PER_CHANNEL * fig.stage_channels[first] * max(ys[0]) * max(xs[0]) * frames_in_chunk
        frames = t if last == n else 1 + (4 * (t - 1) >> fig.stage_halvings[last])
        output = wide * vae.config.encoder_dims[last] * 4 * h * scale * w * scale * frames if tiled else 0
        segments.append((history, transient, output))
        work += sum(fig.stage_work[i] * sum(y) * sum(x) for i, y, x in zip(stages, ys, xs))
    if latent_frames is not None:  # a short video never builds a long one's history (the last chunk keeps none)
        short = 0 if latent_frames == 1 else 0.5 if latent_frames - 1 <= frames_per_chunk else 1
    else:
        short = 1
    latents = wide * vae.latent_channels * 4 * h * w * t
    middle = fig.middle_history * h * w * short
    if split is None:
        history, transient, output = segments[0]
        need = middle + history * short + transient + latents + output
    else:
        (history_a, transient_a, kept), (history_b, transient_b, down) = segments
        need = latents + max(history_a * short + transient_a + kept, kept + history_b * short + transient_b + down, down + middle)
    weights = sum(p.numel() * p.element_size() for p in vae.model.parameters())
    return int(weights + FIXED_OVERHEAD + video_bytes + SAFETY * (need + ENCODE_OVERHEAD)), int(work)


def splits(vae, tiled_video: bool, same_tiles: bool = False) -> list[Split | None]:
    """How the down path may be split: not at all, or (a whole video in tiles) before any stage but the
    first, the rest in the same tiles or (unless `same_tiles`) on the whole frame."""
    if not tiled_video:
        return [None]
    stages = range(1, len(vae.model.encoder.stages))
    return [None, *(Split(s, True) for s in stages), *(() if same_tiles else (Split(s, False) for s in stages))]


def best_split(vae, h: int, w: int, rows: int, cols: int, frames_per_chunk: int, budget: int,
               latent_frames: int | None, video_bytes: int = 0) -> Split | None:  # fmt: skip
    """For a whole video in rows x cols tiles (every segment in them): the split with the least work whose
    estimated peak fits `budget`, or the one with the least peak when none fits (see the module's doc)."""
    fig = figures(vae)
    costs = {s: estimate(vae, h, w, rows, cols, frames_per_chunk, False, latent_frames, video_bytes, fig, s)
             for s in splits(vae, latent_frames is not None and rows * cols > 1, same_tiles=True)}  # fmt: skip
    fitting = [s for s, (need, _) in costs.items() if need <= budget]
    if fitting:
        return min(fitting, key=lambda s: costs[s][1])
    return min(costs, key=lambda s: costs[s][0])


def plan_for_budget(vae, h: int, w: int, frames_per_chunk: int, budget: int, streaming: bool = False,
                    latent_frames: int | None = None, min_tiles: int = 1, video_bytes: int = 0,
                    longer: int | None = None) -> AutoPlan:  # fmt: skip
    """The encode's tile grid and split with the least work whose estimated peak fits `budget` bytes
    (memory.cheapest_grid for each split; `longer` chunks untiled first, as for the decode)."""
    fig = figures(vae)
    best, smallest = None, []
    for split in splits(vae, not streaming and latent_frames is not None):
        try:
            plan = cheapest_grid(vae, h, w, frames_per_chunk, budget, min_tiles,
                                 lambda rows, cols, fpc: estimate(vae, h, w, rows, cols, fpc, streaming, latent_frames,
                                                                  video_bytes, fig, split),
                                 "encode", longer)  # fmt: skip
        except SettingsError as e:
            smallest.append(e.smallest)
            continue
        if best is None or plan.work < best.work:
            best = replace(plan, split=split if plan.rows * plan.cols > 1 else None)
    if best is None:
        raise too_small(vae, h, w, budget, min(smallest), "encode")
    return best


def estimate_peak_bytes(vae, height_px: int, width_px: int, frames_per_chunk: int = 1, tile_px: int | None = None) -> int:
    """`estimate` in pixels for tiles of at most `tile_px` (None: untiled), a short video."""
    s = vae.spatial_scale
    h, w = height_px // s, width_px // s
    tile = max(h, w) if tile_px is None else max(tile_px // s, 1)
    return estimate(vae, h, w, math.ceil(h / tile), math.ceil(w / tile), frames_per_chunk)[0]
