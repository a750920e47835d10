"""Peak-memory and work estimates of a decode, and the tile grid `tiling="auto"` picks from them.

A decode holds, besides the weights:
  - the causal history: the last two input frames of every causal conv. Read off the modules: each
    conv keeps 2 x its input channels per pixel of its stage, in its compute dtype. The middle block's
    runs on the whole frame; each tile's upsampling path keeps its own over its window (tiling.py);
  - transients of the piece being decoded, mostly full-resolution activations. Measured as peak live
    tensor bytes minus history per output pixel (torch profiler memory events), on the CPU, decoding
    5 latent frames at 240x416 with the real-size networks, and linear in the area:

        version  precision  frames_per_chunk 1   frames_per_chunk 2
        2.1      fp32        3,037 B/px           7,716 B/px
        2.1      bf16        2,212 B/px           6,058 B/px
        2.2      fp32        6,655 B/px          15,376 B/px
        2.2      bf16        6,297 B/px          14,250 B/px

    Longer chunks are extrapolated linearly; fp16 is taken to be bf16. Qwen-Image 2.1's image VAE decodes one
    picture at a time (no history, no second frame): 7,803 B/px in fp32, peak live tensor bytes of a 512x512
    picture counted by a dispatch mode (the same count gives 2,654 B/px for Wan 2.1's first frame); its bf16
    figure is taken to be fp32's, not measured (bf16 crawls on this AVX2 CPU);
  - what the caller keeps on the same device: the output, and for a tiled `decode` the middle block's
    output of every chunk (each tile is decoded through all of time before the next).
A safety factor covers allocator slack and backend workspaces (oneDNN's conv scratch measured ~73 MB
at 240x416; cuDNN's varies); the fixed overhead is the process itself (torch's libraries, measured
~0.3 GB of RSS on the CPU).

Work is counted as multiply-adds of the convolutions, per stage, over each tile's window: the halo
is where tiling costs time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import SettingsError
from ..network.blocks import CausalConv3d, Resample
from .tiling import MIN_TILE_CELLS, axis_spans

log = logging.getLogger("wan_vae")

TRANSIENT_BYTES_PER_PIXEL = {
    ("2.1", False): (3037, 7716), ("2.1", True): (2212, 6058),
    ("2.2", False): (6655, 15376), ("2.2", True): (6297, 14250),
    ("qwen-image-2.1", False): (7803, 7803), ("qwen-image-2.1", True): (7803, 7803),
}  # fmt: skip
SAFETY = 1.1
FIXED_OVERHEAD = 384 * 2**20
# Latent frames per pass that `auto` tries first on the GPU path, untiled (then 2, then the caller's): each pass's
# causal history copies and launches are spread over more frames (benchmarks/gpu_cost.py: 480p, 81 frames on an H200
# estimated 0.66 s at 4, 0.69 s at 2, 0.77 s at 1; launches 2,402, 4,882, 9,842). Tiles only where one frame per pass
# does not fit either.
GPU_FRAMES_PER_CHUNK = 4
HEAD_COPIES = 6  # fp32 copies of an upscale head's extra channels alive per output frame (measured: README, tiling)


# ----------------------------------------------------------------------------------------- per-stage figures


@dataclass(frozen=True)
class DecoderFigures:
    """What one decoder costs per pixel, stage by stage, read off its modules at its precision."""

    middle_history: int  # bytes per latent cell (entry conv and middle block, whole frame)
    middle_channels: int  # channels of the middle block's output
    stage_history: tuple[int, ...]  # bytes per pixel of each stage's input
    stage_work: tuple[int, ...]  # multiply-adds per pixel of each stage's input, per latent frame
    radii: tuple[int, ...]  # Decoder.receptive_radii()
    scales: tuple[int, ...]  # Decoder.stage_scales
    out_scale: int  # head pixels per pixel of the last stage (the Wan 2.2 patch size)
    upscale: int  # output pixels per head pixel (an upscale decoder's factor, else 1)
    out_channels: int  # pixel channels of the output (3, or 4 for RGBA)
    extra_head_channels: int  # the head's channels beyond RGB's 3 per patch pixel (an upscale or RGBA decoder)
    wide: int  # 2 for a float64 model (twice the bytes of every fp32 activation), else 1


def history_bytes(modules) -> int:
    convs = [m for layer in modules for m in layer.modules() if isinstance(m, CausalConv3d) and m.causal]
    return sum(2 * c.in_channels * c.compute_dtype.itemsize for c in convs)  # two input frames per conv


def figures(vae) -> DecoderFigures:
    """Per-stage history bytes and multiply-adds of `vae`'s decoder (see DecoderFigures)."""
    decoder = vae.model.decoder
    frames, work = 1, []
    for stage in decoder.stages:
        modules = [m for layer in stage for m in layer.modules()]
        doubles = any(isinstance(m, Resample) and m.mode == "upsample3d" for m in modules)
        # 3-D convs run on the stage's frames; the upsample's conv2d on twice as many when it doubles
        # time, as four 2x2 phase convs per input pixel (blocks.upsample_conv: 16/9 of a 3x3)
        work.append(sum(m.weight.numel() * frames for m in modules if isinstance(m, torch.nn.Conv3d))
                    + sum(m.weight.numel() * 16 // 9 * frames * (1 + doubles) for m in modules if type(m) is torch.nn.Conv2d))  # fmt: skip
        frames *= 1 + doubles
    stage_history = [history_bytes(stage) for stage in decoder.stages]
    stage_history[-1] += 2 * decoder.head[2].out_channels * 4  # the head carries two frames of its output
    return DecoderFigures(
        middle_history=history_bytes([decoder.conv1, *decoder.middle]),
        middle_channels=decoder.conv1.out_channels,
        stage_history=tuple(stage_history),
        stage_work=tuple(work),
        radii=tuple(decoder.receptive_radii()),
        scales=tuple(decoder.stage_scales),
        out_scale=vae.config.patch_size,
        upscale=vae.config.upscale,
        out_channels=vae.config.out_channels,
        extra_head_channels=decoder.head[2].out_channels - 3 * vae.config.patch_size**2,
        wide=2 if vae.full_dtype == torch.float64 else 1,
    )


def _extents(fig: DecoderFigures, length: int, count: int) -> list[list[int]]:
    """Per stage, the window size along one axis of each of `count` tiles (tiling.window, one axis)."""
    spans = axis_spans(length, count)
    out, level = [], 1
    for i, radius in enumerate(fig.radii[:-1]):
        out.append([min(b * level + radius, length * level) - max(a * level - radius, 0) for a, b in spans])
        level *= fig.scales[i]
    return out


@dataclass(frozen=True)
class GridCost:
    """A rows x cols tile grid: tile histories (largest and all), the largest last-stage window, work."""

    rows: int
    cols: int
    history_max: int  # bytes; an upper bound (each stage's largest extents combined)
    history_sum: int
    last_stage_area: int  # pixels of the last stage's largest window
    work: int  # multiply-adds of the upsampling path per latent frame, halos included


def grid_cost(fig: DecoderFigures, h: int, w: int, rows: int, cols: int) -> GridCost:
    ys, xs = _extents(fig, h, rows), _extents(fig, w, cols)
    return GridCost(
        rows, cols,
        history_max=sum(b * max(y) * max(x) for b, y, x in zip(fig.stage_history, ys, xs)),
        history_sum=sum(b * sum(y) * sum(x) for b, y, x in zip(fig.stage_history, ys, xs)),
        last_stage_area=max(ys[-1]) * max(xs[-1]),
        work=sum(m * sum(y) * sum(x) for m, y, x in zip(fig.stage_work, ys, xs)),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- estimates


def estimate(vae, h: int, w: int, rows: int = 1, cols: int = 1, frames_per_chunk: int = 1, streaming: bool = False,
             latent_frames: int | None = None, output_on_device: bool = False, fig: DecoderFigures | None = None) -> int:  # fmt: skip
    """Estimated peak bytes on the decode device of decoding an h x w cell video in rows x cols tiles, weights included.

    streaming: `decode_frames` (time outermost: every tile's history is alive at once) rather than
    `decode` (one tile at a time through all of time). output_on_device: the output (and a tiled
    decode's kept middle outputs) live on the decode device too; `latent_frames` sizes them, and the
    history: a chunk keeps history only for a chunk after it, and the first chunk (one latent frame)
    keeps one frame of it, not two (None: a long video, two).
    """
    fig = fig or figures(vae)
    cost = grid_cost(fig, h, w, rows, cols)
    history = fig.middle_history * h * w + (cost.history_sum if streaming else cost.history_max)
    if latent_frames is not None:
        history *= 0 if latent_frames == 1 else 0.5 if latent_frames - 1 <= frames_per_chunk else 1
    one, two = TRANSIENT_BYTES_PER_PIXEL[vae.version, vae.dtype in (torch.bfloat16, torch.float16)]
    transient = (one + (two - one) * (frames_per_chunk - 1)) * cost.last_stage_area * fig.out_scale**2
    # an upscale (or RGBA) head's wider output, in the head's per-frame taps, its carry and the shuffled copy
    transient += HEAD_COPIES * fig.extra_head_channels * 4 * 4 * frames_per_chunk * cost.last_stage_area
    kept = 0
    if output_on_device and latent_frames is not None:
        px = h * w * (fig.out_scale * fig.upscale * math.prod(fig.scales)) ** 2
        kept = fig.out_channels * 4 * px * (1 + 4 * (frames_per_chunk if streaming else latent_frames - 1))
        if not streaming and rows * cols > 1:
            kept += fig.middle_channels * 4 * h * w * latent_frames
    weights = sum(p.numel() * p.element_size() for p in vae.model.parameters())
    return int(weights + FIXED_OVERHEAD + SAFETY * (history + fig.wide * (transient + kept)))


def estimate_peak_bytes(vae, height_px: int, width_px: int, frames_per_chunk: int = 1, tile_px: int | None = None,
                        streaming: bool = False) -> int:  # fmt: skip
    """`estimate` in decoded pixels: tiles of at most `tile_px` (None: untiled), the output kept elsewhere."""
    s = vae.output_scale
    h, w = height_px // s, width_px // s
    tile = max(h, w) if tile_px is None else max(tile_px // s, 1)
    return estimate(vae, h, w, math.ceil(h / tile), math.ceil(w / tile), frames_per_chunk, streaming)


@dataclass(frozen=True)
class AutoPlan:
    rows: int
    cols: int
    frames_per_chunk: int
    estimate: int  # bytes
    work: int  # multiply-adds of the tiled path (decode: upsampling, encode: downsampling) per latent frame
    split: object = None  # encode: how the down path is split (encode_memory.Split), None when it is not


def plan_for_budget(vae, h: int, w: int, frames_per_chunk: int, budget: int, streaming: bool = False,
                    latent_frames: int | None = None, output_on_device: bool = False, min_tiles: int = 1,
                    longer: int | None = None) -> AutoPlan:  # fmt: skip
    """The decode's tile grid (rows x cols) with the least work whose estimated peak fits `budget` bytes (`cheapest_grid`);
    with `longer`, first that many (then half as many) latent frames per pass untiled, where they fit."""
    fig = figures(vae)

    def cost(rows: int, cols: int, fpc: int) -> tuple[int, int]:
        need = estimate(vae, h, w, rows, cols, fpc, streaming, latent_frames, output_on_device, fig)
        return need, grid_cost(fig, h, w, rows, cols).work

    return cheapest_grid(vae, h, w, frames_per_chunk, budget, min_tiles, cost, "decode", longer)


def cheapest_grid(vae, h: int, w: int, frames_per_chunk: int, budget: int, min_tiles: int,
                  cost: Callable[[int, int, int], tuple[int, int]], what: str, longer: int | None = None) -> AutoPlan:  # fmt: skip
    """The tile grid with the least work whose estimated peak fits `budget` bytes; cost(rows, cols, fpc) is
    (estimated peak bytes, work).

    Tried at the caller's `frames_per_chunk` first, then at 1 (less memory, same result). For each
    number of rows the fewest columns that fit are the cheapest (more columns only add halos), so the
    search stops there. `min_tiles` (one per device) is honoured as far as the frame allows. Raises
    SettingsError with the smallest estimate in GiB when nothing fits.
    """
    while longer and longer > frames_per_chunk and min_tiles <= 1:  # longer chunks untiled before anything else
        need, work = cost(1, 1, longer)
        if need <= budget:
            return AutoPlan(1, 1, longer, need, work)
        longer //= 2
    most = max(1, h // MIN_TILE_CELLS) * max(1, w // MIN_TILE_CELLS)
    min_tiles = min(min_tiles, most)
    smallest = None
    for fpc in dict.fromkeys((frames_per_chunk, 1)):
        best = None
        for rows in range(1, max(1, h // MIN_TILE_CELLS) + 1):
            for cols in range(1, max(1, w // MIN_TILE_CELLS) + 1):
                if rows * cols < min_tiles:
                    continue
                need, work = cost(rows, cols, fpc)
                smallest = need if smallest is None else min(smallest, need)
                if need <= budget:
                    if best is None or (work, rows * cols) < (best.work, best.rows * best.cols):
                        best = AutoPlan(rows, cols, fpc, need, work)
                    break
        if best is not None:
            return best
    raise too_small(vae, h, w, budget, smallest, what)


def too_small(vae, h: int, w: int, budget: int, smallest: int, what: str) -> SettingsError:
    """The error for a budget below `smallest`, the least any plan was estimated to need."""
    s = vae.output_scale if what == "decode" else vae.spatial_scale
    error = SettingsError(
        f"A memory budget of {budget / 2**30:.2f} GiB is too small to {what} {w * s}x{h * s} px with "
        f"{vae.title}: even the smallest tiles ({MIN_TILE_CELLS * s} px, frames_per_chunk 1) need about "
        f"{smallest / 2**30:.2f} GiB. Free memory (unload other models), or {what} on a device with more."
    )
    error.smallest = smallest
    return error
