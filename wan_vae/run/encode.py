"""The encode driver: video to latents, exact in tiles, whole or streamed, on one device or several.

The mirror of decode.py. The encoder's `down_pass` is local, so each tile runs it on its window (its own
cells plus the margin they depend on, aligned to the stride grid: `tiling.down_window`), keeps its own
latent cells, and the cells are gathered into the whole latent frame, on which `middle_pass` (the
attention) and the head run once. Each tile carries its own causal history through time, so tiles
give exactly the untiled latents.

`encode_video` has the whole video: tiles go one after the other through all of time (one tile's
history alive at a time), gathering the down path's output of every frame before the middle block
runs. Where it is less work in the memory there is, the down path runs in two segments (`Segment`,
encode_memory.best_split): the first stages tile by tile over the whole video, their output of every
frame kept, then the rest tile by tile (or whole) on it, so that no tile carries the whole path's
margin at full resolution. `encode_stream` takes frames as they come: time outermost, every tile's
history alive, one segment.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from . import multidevice
from ..device.free_memory import free_bytes, release_free_memory
from ..device.gpu import gpu_shaped, slow_cudnn_conv3d
from ..errors import LatentError
from ..network.blocks import patchify
from ..network.stream import StreamState, Workspace
from ..plan import encode_memory
from ..plan.memory import GPU_FRAMES_PER_CHUNK
from ..plan.tiling import Tile, Window, down_window, plan_grid
from .decode import Tracker, choose_tiles, latent_index, time_chunks
from .inputs import centre_crop, check_frame_channels, check_values, check_video
from .options import Options

T = TypeVar("T")


@dataclass(frozen=True)
class Segment:
    """Stages [first, last) of the down path run tile by tile: tiles partition the segment's output frame
    (stage `last`'s input, or the latent frame), windows are what each tile's stages run on."""

    stages: tuple[int, int]
    tiles: list[Tile]
    windows: list[Window | None]
    cells: tuple[int, int]  # the output frame's h, w in its pixels

    def pixels(self, k: int, patch: int) -> tuple[slice, slice]:
        """Rows and columns of the segment's input that tile k reads (`patch`: input pixels per stage pixel)."""
        if self.windows[k] is None:
            return slice(None), slice(None)
        y0, y1, x0, x1 = self.windows[k].regions[0]
        return slice(y0 * patch, y1 * patch), slice(x0 * patch, x1 * patch)


@dataclass(frozen=True)
class EncodePlan:
    """The down path in segments (one, unless a split pays: see encode_memory), and the frames per pass."""

    segments: tuple[Segment, ...]
    frames_per_chunk: int  # latent frames (4 video frames each) per pass after the first frame

    @property
    def tiles(self) -> list[Tile]:
        """The tiles of the latent frame whose cells are gathered before the middle block."""
        return self.segments[-1].tiles

    @property
    def cells(self) -> tuple[int, int]:  # latent frame h, w
        return self.segments[-1].cells

    @property
    def split(self) -> encode_memory.Split | None:
        if len(self.segments) == 1:
            return None
        return encode_memory.Split(self.segments[1].stages[0], len(self.segments[1].tiles) > 1)


def make_encode_plan(vae, height: int, width: int, frames: int | None, options: Options, *, streaming: bool,
                     min_tiles: int = 1, video_bytes: int = 0, grid: tuple[int, int] | None = None) -> EncodePlan:  # fmt: skip
    """Tiles for a `height` x `width` px video (`frames` long, None when streamed) with `options`, or in the
    `grid` (rows, columns) another process chose. A whole video in tiles is split where that is the least
    work in the memory there is (encode_memory.best_split)."""
    s = vae.spatial_scale
    h, w = height // s, width // s
    latent_frames = None if frames is None else latent_index(frames - 1) + 1
    auto: list[encode_memory.AutoPlan] = []
    longer = GPU_FRAMES_PER_CHUNK if gpu_shaped(vae.device) and not slow_cudnn_conv3d() else None

    def for_budget(budget: int) -> encode_memory.AutoPlan:
        auto.append(encode_memory.plan_for_budget(vae, h, w, options.frames_per_chunk, budget, streaming,
                                                  latent_frames, min_tiles, video_bytes, longer))  # fmt: skip
        return auto[-1]

    if grid is not None:
        tiles, fpc = plan_grid(h, w, *grid), options.frames_per_chunk
    else:
        tiles, fpc = choose_tiles(vae, h, w, s, options, "encode", for_budget)
    rows, cols = len({tile.y0 for tile in tiles}), len({tile.x0 for tile in tiles})
    split = None
    if auto:
        split = auto[-1].split
    elif len(tiles) > 1 and not streaming and grid is None:
        budget = options.memory_budget if options.memory_budget is not None else free_bytes(vae.device)
        split = encode_memory.best_split(vae, h, w, rows, cols, fpc, budget, latent_frames, video_bytes)
    return EncodePlan(tuple(segments(vae, h, w, rows, cols, split)), fpc)


def segments(vae, h: int, w: int, rows: int, cols: int, split: encode_memory.Split | None) -> list[Segment]:
    """The down path of an h x w cell latent frame in rows x cols tiles: one segment, or two (`split`)."""
    encoder = vae.model.encoder
    out = []
    for first, last, r, c in encode_memory.grids(len(encoder.stages), rows, cols, split):
        scale = math.prod(encoder.stage_scales[last:])  # stage `last`'s pixels per latent cell
        sh, sw = h * scale, w * scale
        tiles = plan_grid(sh, sw, r, c)
        windows = [None] if len(tiles) == 1 else [down_window(tile, sh, sw, encoder, (first, last)) for tile in tiles]
        out.append(Segment((first, last), tiles, windows, (sh, sw)))
    return out


def _down(vae, segment: Segment, k: int, frames: torch.Tensor, state: StreamState, images: bool = False) -> torch.Tensor:
    """Tile k's cells [1, C, t, th, tw] of the segment's output for its input frames [1, C, n, H, W]: for the
    first segment, video frames in [-1, 1] (in [0, 1] with `images`: mapped here, a window at a time, so the
    caller's frames are never copied whole; RGB frames for an RGBA encoder get alpha 1 here too)."""
    video = segment.stages[0] == 0  # the segment reads the video itself, not a kept stage output
    rows, cols = segment.pixels(k, vae.config.patch_size if video else 1)
    piece = frames[:, :, :, rows, cols].to(device=vae.device, dtype=vae.full_dtype)
    if video:
        piece = piece * 2 - 1 if images else piece
        if piece.shape[1] < vae.in_channels:  # alpha 1 (opaque), ComfyUI's pad value: 1 in [-1, 1] as in [0, 1]
            piece = torch.cat([piece, piece.new_ones(piece.shape[0], vae.in_channels - piece.shape[1], *piece.shape[2:])], 1)
        piece = patchify(piece, vae.config.patch_size)
    if vae.channels_last:
        piece = piece.contiguous(memory_format=torch.channels_last_3d)
    return vae.model.encoder.down_pass(piece, state, segment.windows[k], segment.stages)


def _latents(vae, down: torch.Tensor, state: StreamState) -> torch.Tensor:
    """The posterior mean [1, z_dim, t, h, w] from the gathered down-path output of one chunk."""
    return vae.model.conv1(vae.model.encoder.middle_pass(down, state), state)[:, : vae.latent_channels]


def _gathered(vae, frames: int, segment: Segment) -> torch.Tensor:
    """Where the tiles' cells of a segment's output, `frames` long, are gathered (fp32, as the residual sums are)."""
    last = segment.stages[1]
    channels = vae.config.encoder_dims[last]
    return torch.empty(1, channels, frames, *segment.cells, dtype=vae.full_dtype, device=vae.device,
                       memory_format=torch.channels_last_3d)


def _place(gathered: torch.Tensor, tile: Tile, cells: torch.Tensor, t0: int) -> None:
    gathered[:, :, t0 : t0 + cells.shape[2], tile.y0 : tile.y1, tile.x0 : tile.x1] = cells


def _normalize(vae, out: torch.Tensor, options: Options) -> torch.Tensor:
    if not options.normalized:
        return out
    mean, inv_std = vae.normalization(out)
    return (out - mean) * inv_std


# ----------------------------------------------------------------------------------------- the whole video


def encode_video(vae, video: torch.Tensor, options: Options, tracker: Tracker, strict_range: bool = True) -> torch.Tensor:
    """Video [B, 3, F, H, W] in [-1, 1] (or frames [F, H, W, 3] in [0, 1]) -> latents [B, C, T, h, w] (the
    posterior mean), raw or normalized."""
    x, images = check_video(video, vae, strict_range)
    devices = vae.work_devices(options)
    b, _, f, height, width = x.shape
    plan = make_encode_plan(vae, height, width, f, options, streaming=False, min_tiles=len(devices or ()),
                            video_bytes=x.numel() * x.element_size() if x.device.type == vae.device.type else 0)  # fmt: skip
    t, (h, w) = latent_index(f - 1) + 1, plan.cells
    chunks = time_chunks(f, 4 * plan.frames_per_chunk)
    out = torch.empty(b, vae.latent_channels, t, h, w, dtype=vae.full_dtype, device=vae.device)
    tracker.total = b * t * sum(len(segment.tiles) for segment in plan.segments)
    workspace = Workspace()
    for i in range(b):
        if len(plan.segments) == 1 and len(plan.tiles) == 1:  # the middle block chunk by chunk, nothing gathered
            state = StreamState(workspace)
            for f0, f1 in chunks:
                tracker.check_cancel()
                state.final = f1 == f
                mu = _latents(vae, _down(vae, plan.segments[0], 0, x[i : i + 1, :, f0:f1], state, images), state)
                out[i : i + 1, :, latent_index(f0) : latent_index(f0) + mu.shape[2]] = mu
                tracker.advance(mu.shape[2])
            continue
        # Each segment's output of every frame, then the middle block over it: one tile's history at a time.
        down = x[i : i + 1]
        for j, segment in enumerate(plan.segments):
            down = _segment_video(vae, segment, down, chunks, images and j == 0, devices, workspace, tracker)
        state = StreamState(workspace)
        for t0, t1 in time_chunks(t, plan.frames_per_chunk):
            state.final = t1 == t
            out[i : i + 1, :, t0:t1] = _latents(vae, down[:, :, t0:t1], state)
        del down
    return _normalize(vae, out, options)


def _segment_video(vae, segment: Segment, source: torch.Tensor, chunks: list[tuple[int, int]], images: bool,
                   devices, workspace: Workspace, tracker: Tracker) -> torch.Tensor:  # fmt: skip
    """The segment's output [1, C, t, h, w] of every frame of `source` (its input; `chunks` are the passes in
    video frames), tile after tile through all of time."""
    # the stages before it halved time `halvings` times, its own `more` times (Wan: a pass of 4k frames
    # leaves 4k / 2 after each; the first frame stays one)
    halvings = sum(vae.config.temporal_downsample[: segment.stages[0]])
    more = sum(vae.config.temporal_downsample[: segment.stages[1]]) - halvings

    def at(frame: int, shift: int) -> int:  # where video frame `frame` starts after `shift` temporal halvings
        return 0 if frame == 0 else 1 + ((frame - 1) >> shift)

    f = chunks[-1][1]
    gathered = _gathered(vae, at(f, halvings + more), segment)

    def tile(k: int) -> multidevice.Job:
        def job(net, workspace: Workspace) -> None:
            state = StreamState(workspace)
            for f0, f1 in chunks:
                tracker.check_cancel()
                state.final = f1 == f
                cells = _down(net, segment, k, source[:, :, at(f0, halvings) : at(f1, halvings)], state, images)
                _place(gathered, segment.tiles[k], cells.to(vae.device), at(f0, halvings + more))
                tracker.advance(latent_index(f1 - 1) + 1 - latent_index(f0))

        return job

    jobs = [tile(k) for k in range(len(segment.tiles))]
    if devices is None:
        for job in jobs:
            job(vae, workspace)
            workspace.clear()  # the next tile's windows have other shapes: these buffers would only pile up
    else:
        multidevice.run_jobs(vae, devices, jobs)
    return gathered


# ----------------------------------------------------------------------------------------- streamed frames


class Share(Protocol):
    """How several processes split a streamed encode (distributed.py implements it): each runs the down path of
    some tiles, one gathers every tile's cells and runs the middle block and the head."""

    world: int  # processes: "auto" plans at least this many tiles

    def together(self, step: Callable[[], T]) -> T:
        """step() on every process; if it failed on any, every one raises with all the messages."""

    def settle(self, plan: EncodePlan, remake: Callable[[tuple[int, int]], EncodePlan]) -> EncodePlan:
        """The plan every process uses (one process's grid; remake builds it here)."""

    def tiles(self, count: int) -> list[int]:
        """The tiles this process runs."""

    def gather(self, plan: EncodePlan, cells: dict[int, torch.Tensor]) -> dict[int, torch.Tensor] | None:
        """Every tile's cells of this chunk on the process that runs the head; None on the others."""


def encode_stream(vae, frames: Iterable[torch.Tensor], options: Options, tracker: Tracker, trim: bool = False,
                  total_frames: int | None = None, share: Share | None = None) -> torch.Tensor | None:  # fmt: skip
    """One video given as consecutive chunks [N, H, W, 3] (float in [0, 1], or uint8) -> latents [1, C, T, h, w].

    Never holds more than a chunk of frames plus the causal history of every tile. `trim` crops the
    frame's centre to the VAE's size multiple and drops trailing frames that do not make 1 + 4k; otherwise those
    are refused (the size before any work, the frame count when the stream ends). `total_frames`, when
    known, sizes the progress. With `share`, this process runs its share of the tiles and returns the latents
    only where the head runs (None elsewhere).
    """
    devices = vae.work_devices(options)
    step = share.together if share else (lambda fn: fn())
    pieces = _passes(frames, 4 * options.frames_per_chunk, vae, trim)
    first = step(lambda: _first(pieces))
    height, width = first.shape[-2:]
    plan = make_encode_plan(vae, height, width, None, options, streaming=True,
                            min_tiles=max(len(devices or ()), share.world if share else 1))  # fmt: skip
    if share:
        plan = share.settle(plan, lambda grid: make_encode_plan(vae, height, width, None, options, streaming=True, grid=grid))
    mine = share.tiles(len(plan.tiles)) if share else list(range(len(plan.tiles)))
    workers = devices or [vae.device]
    workspaces = [Workspace() for _ in workers]
    states = {k: StreamState(workspaces[i % len(workers)]) for i, k in enumerate(mine)}
    middle_state = StreamState(workspaces[0])
    tracker.total = (latent_index(total_frames - 1) + 1 if total_frames else 1) * len(mine)
    out, piece = [], first
    while piece is not None:
        tracker.check_cancel()
        tracker.total = max(tracker.total, tracker.done + (piece.shape[2] // 4 or 1) * len(mine))
        cells = step(functools.partial(_down_passes, vae, plan, mine, piece, states, devices, tracker))
        if share:
            cells = share.gather(plan, cells)
        if cells is not None:
            out.append(_latents(vae, _assembled(vae, plan, cells), middle_state))
            del cells
        del piece
        # glibc kept the freed chunk buffers between the small kept latents: RSS grew 400 MB over 2,000
        # frames of a 64x64 video until this; handing them back keeps it flat (README: encode streaming)
        release_free_memory()
        piece = step(lambda: next(pieces, None))
    return _normalize(vae, torch.cat(out, dim=2), options) if out else None


def _assembled(vae, plan: EncodePlan, cells: dict[int, torch.Tensor]) -> torch.Tensor:
    """One chunk's down-path output of the whole frame from its tiles' cells (a lone tile's are it)."""
    if len(plan.tiles) == 1:
        return cells[0]
    gathered = _gathered(vae, cells[0].shape[2], plan.segments[0])
    for k, part in cells.items():
        _place(gathered, plan.tiles[k], part, 0)
    return gathered


def _first(pieces: Iterator[torch.Tensor]) -> torch.Tensor:
    first = next(pieces, None)
    if first is None:
        raise LatentError("The video has no frames; nothing to encode.")
    return first


def _down_passes(vae, plan: EncodePlan, tiles: list[int], piece: torch.Tensor, states: dict[int, StreamState],
                 devices, tracker: Tracker) -> dict[int, torch.Tensor]:  # fmt: skip
    """Tiles' cells of one chunk, on the VAE's device; tiles take turns on each device."""
    cells: dict[int, torch.Tensor] = {}

    def run(net, k: int) -> None:
        cells[k] = _down(net, plan.segments[0], k, piece, states[k]).to(vae.device)
        if len(plan.tiles) > 1:
            states[k].workspace.clear()  # tiles take turns on a device: their buffers' shapes differ
        tracker.advance(cells[k].shape[2])

    workers = len(devices or [vae.device])
    work = [[functools.partial(run, k=k) for k in tiles[j::workers]] for j in range(workers)]
    if devices is None:
        for fn in work[0]:
            fn(vae)
    else:
        multidevice.run_per_device(vae, devices, work)
    return cells


def _passes(chunks: Iterable[torch.Tensor], per_pass: int, vae, trim: bool) -> Iterator[torch.Tensor]:
    """Frames regrouped as the encoder takes them: [1, C, n, H, W] in [-1, 1], the first frame alone, then
    `per_pass` frames at a time (a multiple of 4), the last pass possibly shorter but a multiple of 4."""
    scale = vae.spatial_scale
    buffered: list[torch.Tensor] = []
    count, seen, size = 0, 0, None
    want = 1
    for chunk in chunks:
        chunk = _as_frames(chunk, seen, vae)
        if size is None:
            size = _check_size(chunk.shape[1:3], scale, trim)
        elif chunk.shape[1:3] != size:
            raise LatentError(f"Frame {seen} is {chunk.shape[2]}x{chunk.shape[1]} px, the frames before it "
                              f"{size[1]}x{size[0]}: a video's frames must all have one size.")  # fmt: skip
        seen += chunk.shape[0]
        buffered.append(centre_crop(chunk, scale))  # a no-op unless trim allowed another size
        count += chunk.shape[0]
        while count >= want:
            frames = torch.cat(buffered) if len(buffered) > 1 else buffered[0]
            buffered, count = [frames[want:]], count - want
            yield _to_video(frames[:want])
            want = per_pass
    extra = count % 4
    if extra and not trim:
        total = seen
        raise LatentError(f"The Wan VAE encodes 1 + 4k frames; this video has {total}, which would lose {extra}. "
                          f"Trim it to {total - extra} frames (trim drops them for you) or extend it to {total - extra + 4}.")  # fmt: skip
    if count - extra:
        yield _to_video(torch.cat(buffered)[: count - extra])


def _as_frames(chunk, seen: int, vae) -> torch.Tensor:
    """A chunk of frames [N, H, W, 3 or 4] as float in [0, 1] (checked), from float or uint8."""
    if not isinstance(chunk, torch.Tensor) or chunk.dim() != 4 or chunk.shape[-1] not in (3, 4):
        shape = list(chunk.shape) if isinstance(chunk, torch.Tensor) else type(chunk).__name__
        raise LatentError(f"Frames must come as tensors [frames, height, width, 3] (ComfyUI's IMAGE); got {shape} at frame {seen}.")
    check_frame_channels(chunk.shape[-1], vae)
    if chunk.dtype == torch.uint8:
        return chunk.float().div_(255)
    if not chunk.is_floating_point():
        raise LatentError(f"Frames must be float in [0, 1] or uint8, got {chunk.dtype}.")
    check_values(chunk, images=True)
    return chunk


def _check_size(hw, scale: int, trim: bool) -> torch.Size:
    """The frames' size, or LatentError when it is not a multiple of `scale` and `trim` does not allow cropping."""
    h, w = int(hw[0]), int(hw[1])
    if (h % scale or w % scale) and not trim:
        kept = f"{w // scale * scale}x{h // scale * scale}"
        raise LatentError(f"The frames are {w}x{h} px; the Wan VAE encodes multiples of {scale} px. Crop to "
                          f"{kept} (trim does it for you) or resize to a multiple of {scale}.")  # fmt: skip
    return hw


def _to_video(frames: torch.Tensor) -> torch.Tensor:
    """[n, H, W, C] in [0, 1] -> [1, C, n, H, W] in [-1, 1]."""
    return frames.permute(3, 0, 1, 2).unsqueeze(0).mul(2).sub_(1)
