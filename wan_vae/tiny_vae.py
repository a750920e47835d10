"""`TinyVAE`: a tiny TAEHV-family decoder (taehv.py) behind WanVAE's decode API, so nodes and scripts take either.

Decode only; no tiles (a 720p frame needs a few hundred MB) and one device. Chunks of any size give the
frames of the whole video (the memory blocks' state carries over).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping

import torch

from .config import CONFIGS
from .errors import SettingsError
from .taehv import TinyDecoder, TinyInfo, TinyState, load_tiny, plan_chunks
from .tiling import Tile
from .vae import Cancel, Preview, Progress, WanVAE, _Canvas, _frame_range, _Tracker
from .writer import to_uint8

log = logging.getLogger("wan_vae")


class TinyVAE:
    def __init__(self, model: TinyDecoder, info: TinyInfo) -> None:
        self.model, self.info, self.config = model, info, CONFIGS[info.version]

    version = property(lambda self: self.info.version)
    latent_channels = property(lambda self: self.config.z_dim)
    spatial_scale = property(lambda self: self.config.spatial_scale)
    temporal_scale = 4
    dtype = property(lambda self: next(self.model.parameters()).dtype)
    device = property(lambda self: next(self.model.parameters()).device)
    check_latents = WanVAE.check_latents  # the same checks and messages as the full VAEs

    @property
    def title(self) -> str:
        return f"{self.info.name} (tiny decoder for Wan {self.version} latents)"

    def __repr__(self) -> str:
        return f"TinyVAE({self.info.describe()}, {self.dtype}, {self.device})"

    def to(self, device=None, dtype: torch.dtype | None = None) -> TinyVAE:
        self.model.to(device=device, dtype=dtype)
        return self

    def release_replicas(self) -> None:
        """Nothing to release: tiny decoders use one device."""

    def encode(self, *args, **kwargs):
        raise SettingsError(f"{self.info.name} is a decoder only; encode with the full Wan {self.version} VAE.")

    # ----------------------------------------------------------------------------- decode

    def _prepare(self, latents, normalized: bool, tiling: str, devices) -> torch.Tensor:
        z = self.check_latents(latents).to(self.device, torch.float32)
        if tiling == "on":
            log.info("%s decodes whole frames (a few hundred MB at 720p); tiling is not needed and not used", self.info.name)
        if devices is not None and len(devices) > 1:
            log.info("%s decodes on one device (%s)", self.info.name, self.device)
        mean = torch.tensor(self.config.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.config.latents_std, device=z.device).view(1, -1, 1, 1, 1)
        if normalized and self.info.raw_latents:
            z = z * std + mean
        elif not normalized and not self.info.raw_latents:
            z = (z - mean) / std
        return z.to(self.dtype)

    def _chunks(self, z: torch.Tensor, frames_per_chunk: int, tracker: _Tracker) -> Iterator[tuple[int, int, int, torch.Tensor]]:
        """(video, latent frames t0, t1, frames [1, 3, n, H, W] in [-1, 1]), video by video, chunk by chunk."""
        for i in range(z.shape[0]):
            state = TinyState()
            for t0, t1 in plan_chunks(z.shape[2], frames_per_chunk):
                tracker.check_cancel()
                yield i, t0, t1, self.model.decode_chunk(z[i : i + 1, :, t0:t1], state).mul_(2).sub_(1)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, normalized: bool = False, *, layout: str = "video", output_device=None,
               tiling: str = "off", tile_size: int = 512, tile_overlap: int = 64, frames_per_chunk: int = 4,
               memory_budget: int | None = None, progress: Progress | None = None, cancel: Cancel | None = None,
               devices=None, preview: Preview | None = None) -> torch.Tensor:  # fmt: skip
        """As WanVAE.decode: [B, 3, F, H, W] in [-1, 1], or layout="images" [B*F, H, W, 3] in [0, 1]."""
        if layout not in ("video", "images"):
            raise SettingsError(f"layout must be 'video' or 'images', got {layout!r}.")
        z = self._prepare(latents, normalized, tiling, devices)
        b, t, h, w = z.shape[0], z.shape[2], z.shape[-2] * self.spatial_scale, z.shape[-1] * self.spatial_scale
        frames = _frame_range(0, t)[1]
        device = torch.device(output_device) if output_device is not None else self.device
        if layout == "video":
            out = torch.empty(b, 3, frames, h, w, dtype=torch.float32, device=device)
            canvases = [_Canvas(out[i : i + 1], layout, self.spatial_scale) for i in range(b)]
        else:
            out = torch.empty(b * frames, h, w, 3, dtype=torch.float32, device=device)
            canvases = [_Canvas(out[i * frames : (i + 1) * frames], layout, self.spatial_scale) for i in range(b)]
        tracker = _Tracker(b * t, progress, cancel, preview)
        whole = Tile(0, z.shape[-2], 0, z.shape[-1])
        for i, t0, t1, frames in self._chunks(z, frames_per_chunk, tracker):
            f0, f1 = _frame_range(t0, t1)
            canvases[i].add(f0, whole, frames)
            tracker.advance(t1 - t0, functools.partial(canvases[i].frame, f1 - 1))
        return out

    @torch.inference_mode()
    def decode_frames(self, latents: torch.Tensor, normalized: bool = False, *, dtype: torch.dtype = torch.float32,
                      output_device="cpu", tiling: str = "off", tile_size: int = 512, tile_overlap: int = 64,
                      frames_per_chunk: int = 4, memory_budget: int | None = None, progress: Progress | None = None,
                      cancel: Cancel | None = None, devices=None, preview: Preview | None = None) -> Iterator[torch.Tensor]:  # fmt: skip
        """As WanVAE.decode_frames: consecutive chunks [N, H, W, 3] in [0, 1] (or uint8), as they are decoded."""
        if dtype not in (torch.float32, torch.uint8):
            raise SettingsError(f"decode_frames gives float32 or uint8 frames, not {dtype}.")
        z = self._prepare(latents, normalized, tiling, devices)
        h, w = z.shape[-2] * self.spatial_scale, z.shape[-1] * self.spatial_scale
        tracker = _Tracker(z.shape[0] * z.shape[2], progress, cancel, preview)
        whole = Tile(0, z.shape[-2], 0, z.shape[-1])
        for _, t0, t1, frames in self._chunks(z, frames_per_chunk, tracker):
            f0, f1 = _frame_range(t0, t1)
            out = torch.empty(f1 - f0, h, w, 3, dtype=torch.float32, device=output_device)
            canvas = _Canvas(out, "images", self.spatial_scale, first_frame=f0)
            canvas.add(f0, whole, frames)
            tracker.advance(t1 - t0, functools.partial(canvas.frame, f1 - 1))
            yield to_uint8(out) if dtype == torch.uint8 else out


def load_tiny_vae(sd: Mapping[str, torch.Tensor], source: str, device="cpu", dtype: torch.dtype = torch.float32) -> TinyVAE:
    model, info = load_tiny(sd, source)
    return TinyVAE(model.to(device=device, dtype=dtype), info)
