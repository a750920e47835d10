"""The decode driver: one plan and two loops (whole video, streamed) for every decoder network.

A decoder network (`WanVAE`, the tiny decoders) supplies only its per-chunk steps and its state
(`Steps`): `middle` runs on the whole latent frame of a chunk, `up` turns one tile's window of that
into pixels. The driver decides what runs (`make_plan`: tiles, their windows, time chunks, the frame
arithmetic), where the pieces land (`Canvas`, in the caller's layout), and reports (`Tracker`:
progress, previews, cancel between chunks). `decode_video` fills one preallocated output;
`decode_stream` hands out consecutive frames as they are final, so memory does not grow with the
video. Both spread tiles over several devices (multidevice.py); `distributed.py` runs the same steps
over processes.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from . import multidevice
from ..device.free_memory import free_bytes
from ..device.gpu import gpu_shaped, slow_cudnn_conv3d
from ..device.precision import warn_if_slow_on_cpu
from ..errors import DecodeCancelled, SettingsError
from ..network.stream import Workspace
from ..plan import memory
from ..plan.tiling import Tile, Window, plan_grid, plan_tiles, tile_cells, window
from ..video.writer import to_uint8
from .inputs import check_latents
from .options import Options

log = logging.getLogger("wan_vae")

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
Preview = Callable[[torch.Tensor], None]


class Steps(Protocol):
    """What a decoder network gives the driver."""

    output_scale: int  # output pixels per latent cell
    out_channels: int  # 3 (RGB) or 4 (RGBA)
    tileable: bool  # whether `up` runs on windows (tiling.Window); else every decode is one tile
    device: torch.device

    def prepare_latents(self, latents: torch.Tensor, normalized: bool) -> torch.Tensor:
        """Checked latents [B, C, T, h, w] on the device, in the form `middle` takes."""

    def new_state(self, workspace: Workspace):
        """A fresh causal state: the next chunk starts a video (or a tile of it)."""

    def middle(self, z: torch.Tensor, state, final: bool) -> torch.Tensor:
        """Latent frames [1, C, t, h, w] of one chunk -> what every tile's `up` starts from (the whole frame)."""

    def up(self, x: torch.Tensor, state, window: Window | None, max_frames: int, final: bool) -> Iterator[torch.Tensor]:
        """x (covering window.regions[0], or the whole frame) -> consecutive pieces [1, out_channels, n, H, W] in [-1, 1]."""

    def replica(self, device) -> Steps:
        """The same network on `device`."""

    def receptive_field(self) -> tuple[list[int], list[int]]:
        """Window radii per stage of `up` and the stages' scales (tiling.window); only if tileable."""


def frame_range(t0: int, t1: int) -> tuple[int, int]:
    """Output frames made by latent frames [t0, t1): latent 0 gives 1 frame, every later one 4."""

    def frames(t: int) -> int:
        return 0 if t == 0 else 1 + 4 * (t - 1)

    return frames(t0), frames(t1)


def latent_index(frame: int) -> int:
    """The latent frame that output (or input) frame `frame` belongs to."""
    return 0 if frame == 0 else 1 + (frame - 1) // 4


def time_chunks(length: int, per_chunk: int, first: int = 1) -> list[tuple[int, int]]:
    """[t0, t1) ranges over `length` frames: the first frame alone, then `per_chunk` at a time."""
    return [(0, min(first, length))] + [(s, min(s + per_chunk, length)) for s in range(first, length, per_chunk)]


@dataclass(frozen=True)
class Plan:
    """What one decode will do: prepared latents, spatial tiles and time chunks."""

    latents: torch.Tensor  # [B, C, T, h, w], as the network's `middle` takes them, on its device
    tiles: list[Tile]
    windows: list[Window | None]  # per tile: the regions its `up` runs on (None: untiled)
    chunks: list[tuple[int, int]]  # latent frame ranges [t0, t1)
    frames_per_chunk: int
    frames: int  # output frames per video
    height: int  # px
    width: int

    @property
    def steps(self) -> int:
        """Progress units: latent frames x tiles x videos."""
        return self.latents.shape[0] * self.latents.shape[2] * len(self.tiles)

    def final(self, t1: int) -> bool:
        return t1 == self.latents.shape[2]


def make_plan(net: Steps, latents, options: Options, *, streaming: bool, output_device=None, min_tiles: int = 1,
              grid: tuple[int, int] | None = None) -> Plan:  # fmt: skip
    """Check everything and decide tiles and chunks; `grid` (rows, cols) overrides `options.tiling` (another
    process decided). `streaming` and `output_device` size the auto planner's estimate."""
    z = net.prepare_latents(latents, options.normalized)
    b, _, t, h, w = z.shape
    scale, fpc = net.output_scale, options.frames_per_chunk
    if not net.tileable:
        if options.tiling == "on":
            log.info("%s decodes whole frames (a few hundred MB at 720p); tiling is not needed and not used", net)
        tiles = plan_tiles(h, w, None)
    elif grid is not None:
        tiles = plan_grid(h, w, *grid)
    else:
        on_device = torch.device(output_device if output_device is not None else net.device).type == net.device.type
        longer = memory.GPU_FRAMES_PER_CHUNK if gpu_shaped(z) and not slow_cudnn_conv3d() else None
        tiles, fpc = choose_tiles(net, h, w, scale, options, "decode", lambda budget: memory.plan_for_budget(
            net, h, w, fpc, budget, streaming, t, on_device, min_tiles, longer))  # fmt: skip
    if len(tiles) == 1:
        windows = [None]
    else:
        radii, scales = net.receptive_field()
        windows = [window(tile, h, w, radii, scales) for tile in tiles]
    return Plan(z, tiles, windows, time_chunks(t, fpc), fpc, frame_range(0, t)[1], h * scale, w * scale)


def choose_tiles(net, h: int, w: int, s: int, options: Options, what: str,
                 plan_for_budget: Callable[[int], memory.AutoPlan]) -> tuple[list[Tile], int]:  # fmt: skip
    """The tiles of an h x w cell frame that `options.tiling` asks for, and the frames per chunk to use; `s` is the
    pixels per cell that `tile_size` counts (the decoded frame's, or the encoded video's).
    For "auto", plan_for_budget(budget bytes) picks the grid (plan/memory.py, plan/encode_memory.py)."""
    if options.tiling == "on":
        return plan_tiles(h, w, tile_cells(options.tile_size, options.tile_overlap, s)), options.frames_per_chunk
    if options.tiling != "auto":
        return plan_tiles(h, w, None), options.frames_per_chunk
    budget = options.memory_budget if options.memory_budget is not None else free_bytes(net.device)
    auto = plan_for_budget(budget)
    log.info("tiling=auto (%s): %s for %dx%d px, frames_per_chunk %d: about %.1f of %.1f GiB", what,
             f"{auto.rows}x{auto.cols} tiles" if auto.rows * auto.cols > 1 else "no tiling", w * s, h * s,
             auto.frames_per_chunk, auto.estimate / 2**30, budget / 2**30)  # fmt: skip
    return plan_grid(h, w, auto.rows, auto.cols), auto.frames_per_chunk


class Canvas:
    """Where decoded pieces of one video (or one streamed chunk of it) land.

    `out` is [1, C, F, H, W] ("video" layout) or [F, H, W, C] ("images"), C = 3 or 4 (RGBA), holding frames from `first_frame`
    and pixels from latent cell `origin` (y, x) on. Tiles partition the frame, so each piece is copied
    once into its place: nothing is blended.
    """

    def __init__(self, out: torch.Tensor, layout: str, scale: int, first_frame: int = 0, origin: tuple[int, int] = (0, 0)) -> None:
        self.out, self.layout, self.scale, self.first_frame, self.origin = out, layout, scale, first_frame, origin

    def add(self, frame: int, tile: Tile, piece: torch.Tensor) -> None:
        """piece: [1, C, n, h, w] in [-1, 1] (unclamped), frames from `frame` on, at `tile`'s place."""
        n, (h, w) = piece.shape[2], piece.shape[-2:]
        f, y, x = frame - self.first_frame, (tile.y0 - self.origin[0]) * self.scale, (tile.x0 - self.origin[1]) * self.scale
        if self.layout == "video":  # clamped in the output's precision, still on the decode device
            self.out[:, :, f : f + n, y : y + h, x : x + w] = piece.to(self.out.dtype).clamp_(-1.0, 1.0)
        else:  # mapped to [0, 1] in fp32 (at least), then rounded once into a half-precision output
            mapped = piece[0].permute(1, 2, 3, 0).to(torch.promote_types(piece.dtype, torch.float32))
            self.out[f : f + n, y : y + h, x : x + w] = mapped.add(1).mul_(0.5).clamp_(0.0, 1.0)

    def frame(self, frame: int) -> torch.Tensor:
        """Frame `frame` of the video as [H, W, C] in [0, 1] (a view in the "images" layout)."""
        f = frame - self.first_frame
        if self.layout == "video":
            return self.out[0, :, f].permute(1, 2, 0).float().add(1).mul_(0.5)
        return self.out[f]


class Tracker:
    """Progress reporting, previews and cancellation between chunks."""

    def __init__(self, total: int, progress: Progress | None, cancel: Cancel | None, preview: Preview | None = None) -> None:
        self.total, self.done, self.progress, self.cancel, self.preview = total, 0, progress, cancel, preview
        self._lock = threading.Lock()  # several devices report from their own threads

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise DecodeCancelled(f"Cancelled after {self.done} of {self.total} steps.")

    def advance(self, steps: int, newest: Callable[[], torch.Tensor] | None = None) -> None:
        """`steps` more done; `newest()` gives the newest decoded frame, for the preview."""
        with self._lock:
            self.done += steps
            if self.progress is not None:
                self.progress(self.done, self.total)
            if self.preview is not None and newest is not None:
                self.preview(newest())


# ----------------------------------------------------------------------------------------- the steps of one chunk


def middles(net: Steps, plan: Plan, i: int, state, tracker: Tracker) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(t0, t1, `middle` output) for each chunk of latent frames [t0, t1) of video i, whole frame."""
    for t0, t1 in plan.chunks:
        tracker.check_cancel()
        yield t0, t1, net.middle(plan.latents[i : i + 1, :, t0:t1].to(net.device), state, plan.final(t1))


def land(net: Steps, plan: Plan, k: int, mid: torch.Tensor, t0: int, t1: int, state, canvas: Canvas, tracker: Tracker) -> None:
    """Decode tile k of latent frames [t0, t1) from the `middle` output and land it on the canvas."""
    tile, win = plan.tiles[k], plan.windows[k]
    x = mid if win is None else win.crop(0, mid)
    start = frame = frame_range(0, t0)[1]
    elsewhere = []  # pieces for a canvas on another device (the host): copied over once per chunk, not once per piece
    for piece in net.up(x.to(net.device), state, win, plan.frames_per_chunk, plan.final(t1)):
        if piece.device == canvas.out.device:
            canvas.add(frame, tile, piece)
        else:
            elsewhere.append(piece)
        frame += piece.shape[2]
    if elsewhere:
        canvas.add(start, tile, torch.cat(elsewhere, 2) if len(elsewhere) > 1 else elsewhere[0])
    tracker.advance(t1 - t0, lambda: canvas.frame(frame - 1))


# ----------------------------------------------------------------------------------------- the two loops


def decode_video(net: Steps, plan: Plan, tracker: Tracker, *, layout: str, dtype: torch.dtype, output_device,
                 devices: list[torch.device] | None = None, image_dtype: torch.dtype = torch.float32) -> torch.Tensor:  # fmt: skip
    """The whole video in one preallocated output: [B, C, F, H, W] in [-1, 1] of `dtype` ("video"), or
    [B*F, H, W, C] in [0, 1] of `image_dtype` ("images"); C = net.out_channels.

    Tiles go one after the other, each through all of time, so one tile's history is alive at a time;
    the `middle` output of every chunk is kept meanwhile, on `output_device`, in one buffer.
    """
    b, device = plan.latents.shape[0], torch.device(output_device)
    alloc = torch.zeros if tracker.preview is not None and len(plan.tiles) > 1 else torch.empty  # previews show unfilled tiles
    if layout == "video":
        out = alloc(b, net.out_channels, plan.frames, plan.height, plan.width, dtype=dtype, device=device)
        canvases = [Canvas(out[i : i + 1], layout, net.output_scale) for i in range(b)]
    else:
        out = alloc(b * plan.frames, plan.height, plan.width, net.out_channels, dtype=image_dtype, device=device)
        canvases = [Canvas(out[i * plan.frames : (i + 1) * plan.frames], layout, net.output_scale) for i in range(b)]
    if devices is None:
        workspace = Workspace()
        for i in range(b):
            for job in _video_jobs(net, plan, i, canvases[i], tracker, device):
                job(net, workspace)
        return out
    # Untiled videos are one job each, all at once; a tiled video's tiles are its jobs, video by video.
    groups = [range(b)] if len(plan.tiles) == 1 else [[i] for i in range(b)]
    for group in groups:
        multidevice.run_jobs(net, devices, [job for i in group for job in _video_jobs(net, plan, i, canvases[i], tracker, device)])
    return out


def _video_jobs(net: Steps, plan: Plan, i: int, canvas: Canvas, tracker: Tracker, keep_on: torch.device) -> list[multidevice.Job]:
    """The work of decoding video i, as jobs job(net or a replica, workspace) that may run on any device."""
    if len(plan.tiles) == 1:
        def whole(net: Steps, workspace: Workspace) -> None:
            state = net.new_state(workspace)
            for t0, t1, mid in middles(net, plan, i, state, tracker):
                land(net, plan, 0, mid, t0, t1, state, canvas, tracker)

        return [whole]
    kept = _keep_middles(net, plan, i, tracker, keep_on)

    def tile(k: int) -> multidevice.Job:
        def job(net: Steps, workspace: Workspace) -> None:
            state = net.new_state(workspace)
            for t0, t1 in plan.chunks:
                tracker.check_cancel()
                land(net, plan, k, kept[:, :, t0:t1], t0, t1, state, canvas, tracker)

        return job

    return [tile(k) for k in range(len(plan.tiles))]


def _keep_middles(net: Steps, plan: Plan, i: int, tracker: Tracker, keep_on: torch.device) -> torch.Tensor:
    """The `middle` output of every chunk of video i, in one buffer [1, C, T, h, w] on `keep_on`.

    One allocation rather than one per chunk: pieces kept between the middle block's transients
    pinned freed heap around them (see the README's memory notes)."""
    kept = None
    for t0, t1, mid in middles(net, plan, i, net.new_state(Workspace()), tracker):
        if kept is None:
            shape = (1, mid.shape[1], plan.latents.shape[2], *mid.shape[-2:])
            kept = torch.empty(shape, dtype=mid.dtype, device=keep_on, memory_format=torch.channels_last_3d)
        kept[:, :, t0:t1] = mid
    return kept


def decode_stream(net: Steps, plan: Plan, tracker: Tracker, *, dtype: torch.dtype, output_device,
                  devices: list[torch.device] | None = None) -> Iterator[torch.Tensor]:  # fmt: skip
    """Consecutive chunks [N, H, W, C] in [0, 1] (float32, or uint8) as soon as they are final.

    Time runs outermost, so every tile's history is alive at once (the whole frame's, a little more for
    the halos) while the activations stay bounded by the tile; one chunk of output is alive at a time.
    Tile k is decoded by device k % n, which keeps its causal history.
    """
    device = torch.device(output_device)
    alloc = torch.zeros if tracker.preview is not None and len(plan.tiles) > 1 else torch.empty
    workers = devices or [net.device]
    workspaces = [Workspace() for _ in workers]
    for i in range(plan.latents.shape[0]):
        middle_state = net.new_state(workspaces[0])
        states = [net.new_state(workspaces[k % len(workers)]) for k in range(len(plan.tiles))]
        for t0, t1, mid in middles(net, plan, i, middle_state, tracker):
            f0, f1 = frame_range(t0, t1)
            out = alloc(f1 - f0, plan.height, plan.width, net.out_channels, dtype=torch.float32, device=device)
            canvas = Canvas(out, "images", net.output_scale, first_frame=f0)
            work = [[functools.partial(land, plan=plan, k=k, mid=mid, t0=t0, t1=t1, state=states[k], canvas=canvas,
                                       tracker=tracker) for k in range(j, len(plan.tiles), len(workers))]
                    for j in range(len(workers))]  # fmt: skip
            if devices is None:
                for fn in work[0]:
                    fn(net)
            else:
                multidevice.run_per_device(net, devices, work)
            del mid, canvas, work
            yield to_uint8(out) if dtype == torch.uint8 else out
            del out


class Decodes:
    """The public decode methods, for any network that supplies the `Steps`.

    A subclass may set `default_options` and `video_dtype`, and `work_devices` says which devices
    the work spreads over (None: the network's own)."""

    default_options = Options()

    @property
    def video_dtype(self) -> torch.dtype:
        return self.dtype

    def work_devices(self, options: Options) -> list[torch.device] | None:
        return None

    def check_latents(self, latents) -> torch.Tensor:
        """Latents as [B, C, T, h, w], or LatentError saying what is wrong with them (shape, channels, NaN)."""
        return check_latents(latents, self)

    def resolve_options(self, options: Options | None, normalized: bool | None, settings: dict) -> Options:
        """`options` (or the defaults) with keyword settings on top."""
        return (options or self.default_options).merged(normalized, settings)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, normalized: bool | None = None, *, options: Options | None = None,
               layout: str = "video", output_device=None, progress: Progress | None = None, cancel: Cancel | None = None,
               preview: Preview | None = None, image_dtype: torch.dtype = torch.float32, **settings) -> torch.Tensor:  # fmt: skip
        """Decode latents [B, C, T, h, w] (or [C, T, h, w]) to video, F = 1 + 4(T - 1) frames per latent video.

        options (or keywords of the same names: normalized, tiling, tile_size, tile_overlap,
            frames_per_chunk, memory_budget, devices): see `Options`. Tiles give the untiled pixels
            exactly; with tiling="auto" the frame gets at least one tile per device where it is large enough.
        layout: "video" -> [B, C, F, H, W] in [-1, 1]; "images" -> [B*F, H, W, C] in [0, 1] of `image_dtype` (float32,
            or float16 / bfloat16: the float32 frames rounded once); C is 3, or 4 for an RGBA VAE (RGB, then alpha).
            An upscale decoder gives its factor times the pixels.
        output_device: where the output is allocated (default: the VAE's device); pieces are copied
            there as they are decoded, so a GPU decode can fill a CPU tensor.
        progress(done, total): after every decoded chunk of every tile. cancel(): checked before every
            chunk; True raises DecodeCancelled. preview(frame): after every chunk, the newest frame
            [H, W, 3] in [0, 1] (with tiles: those decoded so far, the rest black); throttle it yourself.
        """
        if layout not in ("video", "images"):
            raise SettingsError(f"layout must be 'video' or 'images', got {layout!r}.")
        if image_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise SettingsError(f"image_dtype must be float32, float16 or bfloat16, not {image_dtype}.")
        options = self.resolve_options(options, normalized, settings)
        devices = self.work_devices(options)
        output_device = self.device if output_device is None else output_device
        plan = make_plan(self, latents, options, streaming=False, output_device=output_device, min_tiles=len(devices or ()))
        warn_if_slow_on_cpu(self.device, self.dtype)
        tracker = Tracker(plan.steps, progress, cancel, preview)
        return decode_video(self, plan, tracker, layout=layout, dtype=self.video_dtype, output_device=output_device, devices=devices,
                            image_dtype=image_dtype)

    @torch.inference_mode()
    def decode_frames(self, latents: torch.Tensor, normalized: bool | None = None, *, options: Options | None = None,
                      dtype: torch.dtype = torch.float32, output_device="cpu", progress: Progress | None = None,
                      cancel: Cancel | None = None, preview: Preview | None = None, **settings) -> Iterator[torch.Tensor]:  # fmt: skip
        """Yield the decoded video as consecutive chunks [N, H, W, C] as soon as they are final: float32 in
        [0, 1], or uint8 with `dtype=torch.uint8`. Videos of a batch follow each other. Memory does not grow
        with the number of frames (`decode_stream`). Other arguments as in `decode`."""
        if dtype not in (torch.float32, torch.uint8):
            raise SettingsError(f"decode_frames gives float32 or uint8 frames, not {dtype}.")
        options = self.resolve_options(options, normalized, settings)
        devices = self.work_devices(options)
        plan = make_plan(self, latents, options, streaming=True, output_device=output_device, min_tiles=len(devices or ()))
        warn_if_slow_on_cpu(self.device, self.dtype)
        tracker = Tracker(plan.steps, progress, cancel, preview)
        return decode_stream(self, plan, tracker, dtype=dtype, output_device=output_device, devices=devices)
