"""`WanVAE`: load, decode and encode Wan video latents, with tiling, chunking, progress and cancel.

The decode driver walks latent time in chunks through one `StreamState` per spatial tile and writes
each decoded piece into a preallocated output in the caller's layout:
  - `layout="video"`: [B, 3, F, H, W] in [-1, 1] (the reference's form);
  - `layout="images"`: [B*F, H, W, 3] float32 in [0, 1] (ComfyUI's IMAGE: batch of videos flattened
    into frames, video 0 first).
`decode_frames` streams consecutive frames instead, so memory does not grow with the video's length.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from . import memory, multidevice
from .checkpoint import CheckpointInfo, check_against, prepare_state_dict
from .config import MODELS_BY_LATENT_CHANNELS, WanVAEConfig
from .errors import DecodeCancelled, LatentError, SettingsError
from .network import StreamState, WanVAEModel, Workspace, patchify, precision, set_precision, unpatchify
from .tiling import Tile, Window, plan_grid, plan_tiles, tile_cells, window
from .writer import to_uint8

log = logging.getLogger("wan_vae")

TILING_MODES = ("off", "on", "auto")
DEFAULT_TILE_SIZE = 512  # px; ComfyUI's VAEDecodeTiled default
DEFAULT_TILE_OVERLAP = 64  # px; 8 latent cells for Wan 2.1
DEFAULT_FRAMES_PER_CHUNK = 1  # latent frames per decoder pass (4 output frames)

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
Preview = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class DecodePlan:
    """What one decode will do: validated latents, spatial tiles and time chunks."""

    latents: torch.Tensor  # [B, C, T, h, w], raw latent space, on the VAE's device and dtype
    tiles: list[Tile]
    windows: list[Window | None]  # per tile: the regions its upsampling path runs on (None: untiled)
    chunks: list[tuple[int, int]]  # latent frame ranges [t0, t1)
    frames_per_chunk: int
    frames: int  # output frames per video
    height: int
    width: int

    @property
    def steps(self) -> int:
        """Progress units: latent frames x tiles x videos."""
        return self.latents.shape[0] * self.latents.shape[2] * len(self.tiles)


class WanVAE:
    """A loaded Wan 2.1 or Wan 2.2 VAE. Build it with `load_vae`."""

    def __init__(self, model: WanVAEModel, info: CheckpointInfo | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.config: WanVAEConfig = model.config
        self.checkpoint = info
        self.channels_last = True  # NDHWC convolutions: faster on CPU and CUDA, free per-frame 2-D views
        self._replicas: dict[torch.device, WanVAE] = {}  # copies on other devices (multidevice.py)
        self._replica_lock = threading.Lock()

    # ----------------------------------------------------------------------------- properties

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    @property
    def spatial_scale(self) -> int:
        return self.config.spatial_scale

    @property
    def temporal_scale(self) -> int:
        return self.config.temporal_scale

    @property
    def latents_mean(self) -> torch.Tensor:
        return torch.tensor(self.config.latents_mean)

    @property
    def latents_std(self) -> torch.Tensor:
        return torch.tensor(self.config.latents_std)

    @property
    def dtype(self) -> torch.dtype:
        """The precision: float32, or bfloat16/float16 for the heavy convs (see `network.set_precision`)."""
        return precision(self.model)

    @property
    def device(self) -> torch.device:
        return self.model.conv2.weight.device

    def to(self, device=None, dtype: torch.dtype | None = None) -> WanVAE:
        self.model.to(device=device)
        if dtype is not None:
            set_precision(self.model, dtype)
        return self

    @property
    def title(self) -> str:
        """What it is, in a user's words: "the Wan 2.1 VAE", or a pruned one (LightX2V's LightVAE)."""
        pruned = self.config.pruning()
        return f"the Wan {self.version} VAE" + (f" {pruned}" if pruned else "")

    def __repr__(self) -> str:
        return f"WanVAE(version={self.version!r}, dtype={self.dtype}, device={self.device})"

    def replica(self, device) -> WanVAE:
        """This VAE on `device`: itself if it is there, else a copy of the weights made once and kept
        for later decodes (`release_replicas` frees them)."""
        device = multidevice.check_devices([device])[0]
        if device == multidevice.check_devices([self.device])[0]:
            return self
        with self._replica_lock:
            if device not in self._replicas:
                with torch.device("meta"):
                    model = WanVAEModel(self.config)
                model.load_state_dict({k: v.to(device) for k, v in self.model.state_dict().items()}, assign=True)
                set_precision(model, self.dtype)
                replica = WanVAE(model, self.checkpoint)
                replica.channels_last = self.channels_last
                self._replicas[device] = replica
            return self._replicas[device]

    def release_replicas(self) -> None:
        """Free the copies of the weights that decodes on several devices made."""
        with self._replica_lock:
            self._replicas.clear()

    def _devices(self, devices) -> list[torch.device] | None:
        """None for a decode on this VAE's own device alone, else the checked list."""
        if devices is None:
            return None
        devices = multidevice.check_devices(devices)
        return None if devices == multidevice.check_devices([self.device]) else devices

    def _normalization(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents_mean and 1 / latents_std as [1, C, 1, 1, 1] in like's dtype and device.

        Normalized latents are (raw - mean) * inv_std; the reference keeps the reciprocal (section 1.3).
        """
        view = (1, -1, 1, 1, 1)
        return self.latents_mean.to(like).view(view), (1.0 / self.latents_std).to(like).view(view)

    # ----------------------------------------------------------------------------- decode

    @torch.inference_mode()
    def decode(
        self,
        latents: torch.Tensor,
        normalized: bool = False,
        *,
        layout: str = "video",
        output_device=None,
        tiling: str = "off",
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK,
        memory_budget: int | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        devices=None,
        preview: Preview | None = None,
    ) -> torch.Tensor:
        """Decode latents [B, C, T, h, w] (or [C, T, h, w]) to video, F = 1 + 4(T - 1) frames per latent video.

        normalized: the latents are normalized (diffusers pipelines, kijai's wrapper); they are mapped
            back with this VAE's mean/std first. ComfyUI samplers give raw latents (the default).
        layout: "video" -> [B, 3, F, H, W] in [-1, 1]; "images" -> [B*F, H, W, 3] float32 in [0, 1].
        output_device: where the output is allocated (default: the VAE's device). Pieces are copied
            there as they are decoded, so a GPU decode can fill a CPU tensor.
        tiling: "off"; "on": tiles of at most `tile_size` px; "auto": the tile grid with the least work
            whose estimated peak fits `memory_budget` bytes (by default the device's free memory), and
            frames_per_chunk 1 if that is what it takes; no tiles if the whole frame fits. Tiles give
            the untiled pixels exactly (tiling.py): they trade only time for memory.
        tile_overlap: no longer changes anything (tiles are exact); kept for callers, checked >= 0
            and smaller than `tile_size`.
        frames_per_chunk: latent frames per decoder pass; after each stage, pieces of at most this many
            frames go on (the last chunk runs whole: it leaves no history behind). Any value gives the
            same numbers; larger is faster on big devices, smaller uses less memory.
        progress(done, total): called after every decoded chunk of every tile.
        cancel(): checked before every chunk; returning True raises DecodeCancelled.
        preview(frame): called after every decoded chunk with the newest frame [H, W, 3] in [0, 1] (with
            tiles: the tiles decoded so far, the rest black), to show while decoding; throttle it yourself.
        devices: several devices (["cuda:0", "cuda:1"]) to spread the tiles and videos over, one copy of
            the weights on each (multidevice.py); the frames are those of one device. With
            tiling="auto" the frame gets at least one tile per device where it is large enough.

        Tiles are decoded one after the other (each through all time chunks), so only one tile's history
        is alive at a time; the middle block's output of every chunk (half the output's size for Wan
        2.1 in fp32, 1/3 for 2.2) is kept meanwhile, on `output_device`.
        """
        if layout not in ("video", "images"):
            raise SettingsError(f"layout must be 'video' or 'images', got {layout!r}.")
        devices = self._devices(devices)
        plan = self._plan(latents, normalized, tiling, tile_size, tile_overlap, frames_per_chunk, memory_budget, False,
                          output_device, len(devices or ()))  # fmt: skip
        b = plan.latents.shape[0]
        device = torch.device(output_device) if output_device is not None else self.device
        alloc = torch.zeros if preview is not None and len(plan.tiles) > 1 else torch.empty  # previews show unfilled tiles
        if layout == "video":
            out = alloc(b, 3, plan.frames, plan.height, plan.width, dtype=self.dtype, device=device)
        else:
            out = alloc(b * plan.frames, plan.height, plan.width, 3, dtype=torch.float32, device=device)
        tracker = _Tracker(plan.steps, progress, cancel, preview)
        canvases = [_Canvas(out[i : i + 1] if layout == "video" else out[i * plan.frames : (i + 1) * plan.frames],
                            layout, self.spatial_scale) for i in range(b)]  # fmt: skip
        if devices is None:
            workspace = Workspace()
            for i, canvas in enumerate(canvases):
                for job in self._video_jobs(plan, i, canvas, tracker, device):
                    job(self, workspace)
            return out
        # Untiled videos are one job each, all at once; a tiled video's tiles are its jobs, video by video.
        groups = [range(b)] if len(plan.tiles) == 1 else [[i] for i in range(b)]
        for group in groups:
            multidevice.run_jobs(self, devices, [job for i in group for job in self._video_jobs(plan, i, canvases[i], tracker, device)])
        return out

    def _video_jobs(self, plan: DecodePlan, i: int, canvas: _Canvas, tracker: _Tracker, keep_on) -> list[multidevice.Job]:
        """The work of decoding video i, as jobs job(vae or replica, workspace) that may run on any device."""
        if len(plan.tiles) == 1:
            def whole(vae: WanVAE, workspace: Workspace) -> None:
                state = StreamState(workspace)
                for t0, t1, mid in vae._middles(plan, i, state, tracker):
                    vae._up(plan, 0, mid, t0, t1, state, canvas, tracker)

            return [whole]
        # Tiles one after the other, so that one tile's history is alive at a time: the middle block's
        # output of every chunk is kept (on `keep_on`, beside the output, which is as long) and reused.
        middles = [(t0, t1, mid.to(keep_on)) for t0, t1, mid in self._middles(plan, i, StreamState(Workspace()), tracker)]

        def tile(k: int) -> multidevice.Job:
            def job(vae: WanVAE, workspace: Workspace) -> None:
                state = StreamState(workspace)
                for t0, t1, mid in middles:
                    tracker.check_cancel()
                    vae._up(plan, k, mid, t0, t1, state, canvas, tracker)

            return job

        return [tile(k) for k in range(len(plan.tiles))]

    @torch.inference_mode()
    def decode_frames(
        self,
        latents: torch.Tensor,
        normalized: bool = False,
        *,
        dtype: torch.dtype = torch.float32,
        output_device="cpu",
        tiling: str = "off",
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK,
        memory_budget: int | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        devices=None,
        preview: Preview | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the decoded video as consecutive chunks [N, H, W, 3] as soon as they are final.

        Values are float32 in [0, 1], or uint8 with `dtype=torch.uint8`. Videos of a batch follow each
        other. Memory does not grow with the number of frames: one chunk of output is alive at a time,
        plus the causal history. With tiles, time runs outermost (frames are handed on as they are
        done), so every tile's history is alive at once: the history of the whole frame, a little
        more for the halos (measured at 480x832 fp32, Wan 2.1: see the README), while the activations
        stay bounded by the tile. Other options as in `decode`.
        """
        if dtype not in (torch.float32, torch.uint8):
            raise SettingsError(f"decode_frames gives float32 or uint8 frames, not {dtype}.")
        devices = self._devices(devices)
        plan = self._plan(latents, normalized, tiling, tile_size, tile_overlap, frames_per_chunk, memory_budget, True,
                          output_device, len(devices or ()))  # fmt: skip
        tracker = _Tracker(plan.steps, progress, cancel, preview)
        device = torch.device(output_device) if output_device is not None else self.device
        alloc = torch.zeros if preview is not None and len(plan.tiles) > 1 else torch.empty
        workers = devices or [self.device]
        workspaces = [Workspace() for _ in workers]
        for i in range(plan.latents.shape[0]):
            # tile k is decoded by worker k % n, which keeps its causal history
            middle_state = StreamState(workspaces[0])
            states = [StreamState(workspaces[k % len(workers)]) for k in range(len(plan.tiles))]
            for t0, t1, mid in self._middles(plan, i, middle_state, tracker):
                f0, f1 = _frame_range(t0, t1)
                out = alloc(f1 - f0, plan.height, plan.width, 3, dtype=torch.float32, device=device)
                canvas = _Canvas(out, "images", self.spatial_scale, first_frame=f0)
                work = [[functools.partial(WanVAE._up, plan=plan, k=k, mid=mid, t0=t0, t1=t1, state=states[k], canvas=canvas,
                                           tracker=tracker) for k in range(j, len(plan.tiles), len(workers))]
                        for j in range(len(workers))]  # fmt: skip
                if devices is None:
                    for fn in work[0]:
                        fn(self)
                else:
                    multidevice.run_per_device(self, devices, work)
                del mid, canvas, work
                yield to_uint8(out) if dtype == torch.uint8 else out
                del out

    def _middles(self, plan: DecodePlan, i: int, state: StreamState, tracker: _Tracker) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(t0, t1, middle block output) for each chunk of latent frames [t0, t1) of video i, whole frame."""
        for t0, t1 in plan.chunks:
            tracker.check_cancel()
            z = self.model.conv2(plan.latents[i : i + 1, :, t0:t1].to(self.device))
            if self.channels_last:
                z = z.contiguous(memory_format=torch.channels_last_3d)
            yield t0, t1, self.model.decoder.middle_pass(z, state, final=t1 == plan.latents.shape[2])

    def _up(self, plan: DecodePlan, k: int, mid: torch.Tensor, t0: int, t1: int, state: StreamState,
            canvas: _Canvas, tracker: _Tracker) -> None:  # fmt: skip
        """Decode tile k of latent frames [t0, t1) from the middle block's output and land it on the canvas."""
        tile, window = plan.tiles[k], plan.windows[k]
        x = mid if window is None else window.crop(0, mid)
        frame = _frame_range(0, t0)[1]
        final = t1 == plan.latents.shape[2]
        for piece in self.model.decoder.up_pass(x.to(self.device), state, window, plan.frames_per_chunk, final):
            piece = unpatchify(piece, self.config.patch_size)
            canvas.add(frame, tile, piece)
            frame += piece.shape[2]
        tracker.advance(t1 - t0, lambda: canvas.frame(frame - 1))

    def _plan(self, latents, normalized, tiling, tile_size, tile_overlap, frames_per_chunk, memory_budget, streaming,
              output_device, min_tiles=1, grid: tuple[int, int] | None = None) -> DecodePlan:  # fmt: skip
        """Check everything and decide the tiles; `grid` (rows, cols) overrides `tiling` (another process decided)."""
        z = self.check_latents(latents)
        _warn_if_slow_on_cpu(self.device, self.dtype)
        _check_frames_per_chunk(frames_per_chunk)
        if tiling not in TILING_MODES:
            raise SettingsError(f"tiling must be one of {', '.join(TILING_MODES)}; got {tiling!r}.")
        scale = self.spatial_scale
        b, _, t, h, w = z.shape
        if grid is not None:
            tiles = plan_grid(h, w, *grid)
        elif tiling == "auto":
            budget = memory_budget if memory_budget is not None else memory.free_bytes(self.device)
            on_device = torch.device(output_device if output_device is not None else self.device).type == self.device.type
            auto = memory.plan_for_budget(self, h, w, frames_per_chunk, budget, streaming, t, on_device, min_tiles)
            rows, cols, frames_per_chunk = auto.rows, auto.cols, auto.frames_per_chunk
            log.info("tiling=auto: %s for %dx%d px, frames_per_chunk %d: about %.1f of %.1f GiB",
                     f"{rows}x{cols} tiles" if rows * cols > 1 else "no tiling", w * scale, h * scale,
                     frames_per_chunk, auto.estimate / 2**30, budget / 2**30)  # fmt: skip
            tiles = plan_grid(h, w, rows, cols)
        elif tiling == "on":
            tiles = plan_tiles(h, w, tile_cells(tile_size, tile_overlap, scale))
        else:
            tiles = plan_tiles(h, w, None)
        if normalized:  # mapped back at (at least) fp32, then cast once
            z = z.to(device=self.device, dtype=torch.promote_types(z.dtype, torch.float32))
            mean, inv_std = self._normalization(z)
            z = z / inv_std + mean  # the reference divides by the reciprocal (section 1.3)
        z = z.to(device=self.device, dtype=torch.float32)  # the entry convs are fp32 at every precision
        chunks = [(0, 1)] + [(s, min(s + frames_per_chunk, t)) for s in range(1, t, frames_per_chunk)]
        radii, scales = self.model.decoder.receptive_radii(), self.model.decoder.stage_scales
        windows = [None] if len(tiles) == 1 else [window(tile, h, w, radii, scales) for tile in tiles]
        return DecodePlan(z, tiles, windows, chunks, frames_per_chunk, _frame_range(0, t)[1], h * scale, w * scale)

    def check_latents(self, latents) -> torch.Tensor:
        """Latents as [B, C, T, h, w], or LatentError saying what is wrong with them (shape, channels, NaN)."""
        if not isinstance(latents, torch.Tensor):
            raise LatentError(f"Latents must be a torch.Tensor, got {type(latents).__name__}.")
        z = latents.unsqueeze(0) if latents.dim() == 4 else latents
        if z.dim() != 5:
            raise LatentError(
                f"Latents must be 5-D [batch, channels, frames, height, width] (or 4-D for one video); "
                f"got shape {list(latents.shape)}. Image latents (4-D with a batch) are not Wan video latents."
            )
        if not z.is_floating_point():
            raise LatentError(f"Latents must be floating point, got {z.dtype}.")
        if z.numel() == 0:
            raise LatentError(f"Latents are empty (shape {list(z.shape)}).")
        check_channels(z.shape[1], self)
        bad = (~torch.isfinite(z)).sum().item()
        if bad:
            nans = torch.isnan(z).sum().item()
            raise LatentError(
                f"The latents contain {nans} NaN and {bad - nans} infinite values out of {z.numel()}; decoding them "
                "would give a broken video. The sampler diverged: check the model precision (fp16 can overflow), "
                "CFG and steps."
            )
        return z

    # ----------------------------------------------------------------------------- encode

    @torch.inference_mode()
    def encode(
        self,
        video: torch.Tensor,
        normalized: bool = False,
        *,
        frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> torch.Tensor:
        """Encode video [B, 3, F, H, W] in [-1, 1] (or [3, F, H, W]) to latents [B, C, T, h, w] (posterior mean).

        F must be 1 + 4k (the reference silently drops the rest; this refuses). H and W must be
        multiples of the spatial scale (8 or 16). `normalized=True` returns (mean - latents_mean) / std,
        the form diffusers pipelines use; the default is the raw form ComfyUI samplers use.
        `frames_per_chunk` is in latent frames (4 video frames each) after the first frame.
        """
        x = self._check_video(video)
        _check_frames_per_chunk(frames_per_chunk)
        _warn_if_slow_on_cpu(self.device, self.dtype)
        b, _, f, h, w = x.shape
        t = 1 + (f - 1) // 4
        step = 4 * frames_per_chunk
        chunks = [(0, 1)] + [(s, min(s + step, f)) for s in range(1, f, step)]
        scale, z_dim = self.spatial_scale, self.latent_channels
        out = torch.empty(b, z_dim, t, h // scale, w // scale, dtype=self.dtype, device=self.device)
        tracker = _Tracker(b * t, progress, cancel)
        workspace = Workspace()
        for i in range(b):
            state = StreamState(workspace)
            for f0, f1 in chunks:
                tracker.check_cancel()
                state.final = f1 == f
                piece = patchify(x[i : i + 1, :, f0:f1].to(device=self.device, dtype=torch.float32), self.config.patch_size)
                if self.channels_last:
                    piece = piece.contiguous(memory_format=torch.channels_last_3d)
                mu = self.model.conv1(self.model.encoder(piece, state))[:, :z_dim]
                t0 = _latent_index(f0)
                out[i : i + 1, :, t0 : t0 + mu.shape[2]] = mu
                tracker.advance(mu.shape[2])
        if normalized:
            mean, inv_std = self._normalization(out)
            out = (out - mean) * inv_std
        return out

    def _check_video(self, video) -> torch.Tensor:
        if not isinstance(video, torch.Tensor):
            raise LatentError(f"The video must be a torch.Tensor, got {type(video).__name__}.")
        x = video.unsqueeze(0) if video.dim() == 4 else video
        if x.dim() != 5 or x.shape[1] != 3:
            raise LatentError(f"The video must be [batch, 3, frames, height, width] in [-1, 1]; got shape {list(video.shape)}.")
        if not x.is_floating_point():
            raise LatentError(f"The video must be floating point in [-1, 1], got {x.dtype}.")
        if x.numel() == 0:
            raise LatentError(f"The video is empty (shape {list(video.shape)}).")
        f, h, w = x.shape[2:]
        if (f - 1) % 4:
            lower, upper = 1 + 4 * ((f - 1) // 4), 1 + 4 * ((f - 1) // 4 + 1)
            raise LatentError(
                f"The Wan VAE encodes 1 + 4k frames; {f} frames would lose {f - lower}. "
                f"Trim to {lower} or extend to {upper} frames."
            )
        s = self.spatial_scale
        for name, n in (("height", h), ("width", w)):
            if n % s:
                raise LatentError(
                    f"The video {name} {n} px is not a multiple of {s} (Wan {self.version} VAE); "
                    f"crop or resize to {n // s * s or s} or {(n // s + 1) * s} px."
                )
        if not torch.isfinite(x).all():
            raise LatentError("The video contains NaN or infinite values.")
        lo, hi = x.aminmax()
        if lo < -1.001 or hi > 1.001:
            raise LatentError(
                f"Video values must be in [-1, 1], found [{lo.item():.3g}, {hi.item():.3g}]. "
                "Map [0, 1] images with x * 2 - 1 (and 0-255 with x / 127.5 - 1)."
            )
        return x


def _check_frames_per_chunk(frames_per_chunk) -> None:
    if isinstance(frames_per_chunk, bool) or not isinstance(frames_per_chunk, int) or frames_per_chunk < 1:
        raise SettingsError(f"frames_per_chunk must be a whole number of latent frames >= 1, got {frames_per_chunk!r}.")


def check_channels(channels: int, vae: WanVAE) -> None:
    """A plain message for latents made by a different model than the VAE's."""
    if channels == vae.latent_channels:
        return
    what = f"the Wan {vae.version} VAE" if isinstance(vae, WanVAE) else vae.title  # a tiny decoder says which
    have = f"the loaded VAE is {what} ({vae.latent_channels} channels)"
    if channels in MODELS_BY_LATENT_CHANNELS:
        vae_name, models = MODELS_BY_LATENT_CHANNELS[channels]
        raise LatentError(
            f"These latents have {channels} channels: {models} latents need the {vae_name} VAE, but {have}. "
            f"Load the {vae_name} VAE ({'wan2.2_vae.safetensors' if channels == 48 else 'wan_2.1_vae.safetensors'})."
        )
    raise LatentError(
        f"These latents have {channels} channels, but {have}. They do not come from a Wan video model "
        f"(4-channel latents are SD 1.x/SDXL images, 16-channel 4-D latents SD3/Flux images)."
    )


def _frame_range(t0: int, t1: int) -> tuple[int, int]:
    """Output frames made by latent frames [t0, t1): latent 0 gives 1 frame, every later one 4."""
    def frames(t: int) -> int:
        return 0 if t == 0 else 1 + 4 * (t - 1)

    return frames(t0), frames(t1)


def _latent_index(frame: int) -> int:
    return 0 if frame == 0 else 1 + (frame - 1) // 4


class _Canvas:
    """Where decoded pieces of one video (or one streamed chunk of it) land.

    `out` is [1, 3, F, H, W] ("video" layout) or [F, H, W, 3] ("images"), holding frames from `first_frame`
    and pixels from latent cell `origin` (y, x) on. Tiles partition the frame, so each piece is copied
    once into its place: nothing is blended.
    """

    def __init__(self, out: torch.Tensor, layout: str, scale: int, first_frame: int = 0, origin: tuple[int, int] = (0, 0)) -> None:
        self.out, self.layout, self.scale, self.first_frame, self.origin = out, layout, scale, first_frame, origin

    def add(self, frame: int, tile: Tile, piece: torch.Tensor) -> None:
        """piece: [1, 3, n, h, w] in [-1, 1] (unclamped), frames from `frame` on, at `tile`'s place."""
        n, (h, w) = piece.shape[2], piece.shape[-2:]
        f, y, x = frame - self.first_frame, (tile.y0 - self.origin[0]) * self.scale, (tile.x0 - self.origin[1]) * self.scale
        piece = piece.to(self.out.dtype)  # map and clamp in the output's precision, still on the decode device
        if self.layout == "video":
            self.out[:, :, f : f + n, y : y + h, x : x + w] = piece.clamp_(-1.0, 1.0)
        else:
            self.out[f : f + n, y : y + h, x : x + w] = piece[0].permute(1, 2, 3, 0).add(1).mul_(0.5).clamp_(0.0, 1.0)

    def frame(self, frame: int) -> torch.Tensor:
        """Frame `frame` of the video as [H, W, 3] in [0, 1] (a view in the "images" layout)."""
        f = frame - self.first_frame
        if self.layout == "video":
            return self.out[0, :, f].permute(1, 2, 0).float().add(1).mul_(0.5)
        return self.out[f]


class _Tracker:
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


def default_dtype(device) -> torch.dtype:
    """bf16 on CUDA GPUs that support it (faster and smaller, within 1% of fp32); fp32, the reference, elsewhere."""
    device = torch.device(device)
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def load_vae(source, device="cpu", dtype: torch.dtype = torch.float32, name: str | None = None):
    """Load a Wan 2.1 or Wan 2.2 VAE from a file, a diffusers folder or a state dict (see checkpoint.py): a `WanVAE`,
    or for the tiny TAEHV-family decoders (taew2_1, lighttaew2_2, ...) a `TinyVAE` with the same decode API.
    `name` names a state dict in messages (and tells a tiny decoder's file name)."""
    from .checkpoint import read_state_dict, strip_prefix
    from .taehv import is_tiny

    raw, read_name = read_state_dict(source)
    name = name or read_name
    stripped, _ = strip_prefix(raw)
    if is_tiny(stripped):
        from .tiny_vae import load_tiny_vae

        return load_tiny_vae(stripped, name, device=device, dtype=dtype)
    sd, info = prepare_state_dict(raw, name)
    with torch.device("meta"):
        model = WanVAEModel(info.config)
    check_against(sd, {k: v.shape for k, v in model.state_dict().items()}, info.source)
    model.load_state_dict(sd, strict=True, assign=True)
    model.to(device=device)
    set_precision(model, dtype)
    return WanVAE(model, info)


def _warn_if_slow_on_cpu(device, dtype: torch.dtype) -> None:
    """Half-precision convs on a CPU without native support run a fallback kernel (fp16 on this
    project's AVX-512 CPU: 4 GFLOP/s against 245 in fp32): say so rather than look hung.

    Checked when work starts, not at load: the nodes keep a GPU's VAE on the CPU between runs."""
    if torch.device(device).type != "cpu" or dtype == torch.float32:
        return
    check = {torch.float16: "_is_mkldnn_fp16_supported", torch.bfloat16: "_is_mkldnn_bf16_supported"}[dtype]
    try:
        supported = getattr(torch.ops.mkldnn, check)()
    except (AttributeError, RuntimeError):  # not a oneDNN build: nothing known
        return
    if not supported:
        name = str(dtype).removeprefix("torch.")
        log.warning("This CPU has no fast %s convolutions: decoding in %s will be many times slower than in fp32. "
                    "Use fp32 (or bf16 where supported) on the CPU.", name, name)  # fmt: skip
