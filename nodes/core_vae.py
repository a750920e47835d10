"""WanVAEForCoreNodes: core's own VAE object, whose decode and encode run ours, for the core nodes we cannot swap.

WanImageToVideo, WanVaceToVideo, Wan22ImageToVideoLatent, VAE Decode, VAE Encode, ... call `vae.encode(...)` and
`vae.decode(...)` on core's VAE (comfy.sd.VAE). The node hands them a shallow copy of that object whose class is a
subclass made here (`ExactMethods` first in its bases): every attribute core nodes read stays core's, the four
methods are ours, and the input VAE object is never touched, so core nodes elsewhere in the graph keep core's
behaviour. What the replacements give follows core's sd.py (0.3.64, 0.38 and the newest read) exactly: shapes, dtypes, [0, 1]
pixels, raw latents, the centred crop, frames beyond 1 + 4k dropped, results on core's output device; for Qwen-Image
2.1's image VAE (newest sd.py only, @033046cc) pictures [B, H, W, 4] and image latents [N, 64, h, w].
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import weakref

import torch

from ..wan_vae import CheckpointError, Options, SettingsError, WanVAE
from ..wan_vae.plan.tiling import MIN_TILE_CELLS
from ..wan_vae.run.multidevice import check_devices
from . import comfy_host
from .decode import DECODE_INPUTS, decode_planned, pixels_per_cell
from .encode import encode_pictures, encode_planned
from .load_vae import CATEGORY, LoadedWanVAE, as_wan_vae

log = logging.getLogger("wan_vae")

# The widths core's sd.py builds for each Wan VAE; others (LightVAE's pruned 2.1) it cannot hold.
CORE_BUILDS = {"2.1": (96, 96), "2.2": (160, 256)}
# Core VAE objects made for Load Wan VAE's VAEs, for as long as those live (they share the weights' memory).
_CORE_FOR: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class WanVAEForCoreNodes:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Puts this pack's exact, memory-planned Wan VAE inside core's own nodes: wire Load VAE (or Load Wan VAE) "
        "through it into WanImageToVideo, WanVaceToVideo, Wan22ImageToVideoLatent, VAE Decode, VAE Encode and the "
        "rest. Their encodes and decodes then run in tiles that change nothing (no blended tiles), sized to the "
        "memory ComfyUI frees, with a progress bar and Stop. The VAE you wire in is left as it is."
    )
    RETURN_TYPES = ("VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("Core's VAE for the same weights, for any core node that takes a VAE.",)
    FUNCTION = "adapt"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": DECODE_INPUTS["vae"][:1] + ({"tooltip": (
                "Core Load VAE's VAE (wan_2.1_vae / wan2.2_vae, and in newer ComfyUI qwen_image_2.1_vae), or the full Wan VAE "
                "from Load Wan VAE (its precision and device are kept; a Wan-Alpha pair decodes RGBA) or from kijai's "
                "WanVideo VAE Loader.")},),
            "tiling": DECODE_INPUTS["tiling"][:1] + ({"default": "auto", "tooltip": (
                "For the core nodes' encodes and decodes. Tiles give exactly the untiled result; they only trade "
                "time for memory. auto: the fewest tiles that fit in what ComfyUI frees. on: tiles of at most "
                "tile_size. off: never tile. VAE Decode (Tiled) / VAE Encode (Tiled) set their own tile size.")},),
            "tile_size": DECODE_INPUTS["tile_size"],
            "frames_per_chunk": DECODE_INPUTS["frames_per_chunk"],
        }}  # fmt: skip

    def adapt(self, vae, tiling, tile_size, frames_per_chunk):
        loaded = as_wan_vae(vae)  # refuses what is not a Wan VAE, saying what it is
        wan = loaded.vae
        if not isinstance(wan, WanVAE):
            raise CheckpointError(
                f"{wan.title} is a decoder only, and core nodes such as WanImageToVideo encode: Wan VAE for Core Nodes "
                f"needs the full Wan {wan.version} VAE (wan_2.1_vae / wan2.2_vae). The tiny decoder can still decode "
                "in Wan Decode Latents and Wan Decode to Video."
            )
        core = vae if comfy_host.is_core_vae(vae) else _core_vae_for(wan)  # Load Wan VAE's or WanVideoWrapper's: made once
        comfy_host.check_core_vae(core)
        options = Options.from_widgets("raw", tiling, tile_size, 0, frames_per_chunk, loaded.devices)  # core's latents are raw
        return (exact_copy(core, loaded, options),)


def _core_vae_for(wan: WanVAE):
    """Core's VAE object for our weights (our keys are the original ones, which ComfyUI reads), made once per VAE."""
    if wan in _CORE_FOR:
        return _CORE_FOR[wan]
    image_vae = wan.config.images_only  # Qwen-Image 2.1's: core reads its widths from the file
    if not image_vae and (wan.config.dim, wan.config.decoder_dim) != CORE_BUILDS[wan.version]:
        raise CheckpointError(
            f"{wan.title} has channel widths {wan.config.dim}/{wan.config.decoder_dim}, which core's VAE cannot hold "
            f"(it builds the standard Wan {wan.version} VAE). Load the standard VAE file here; the pack's own Wan "
            "Encode and Wan Decode nodes take this one."
        )
    try:
        core = comfy_host.core_vae_from_weights(wan.model.state_dict())
    except RuntimeError as e:  # core of 0.3.64 builds RGB VAEs only: an RGBA or upscale head does not fit it
        if image_vae:
            raise _no_image_vae_in_core() from None
        raise CheckpointError(
            f"This ComfyUI ({comfy_host.comfyui_version()}) cannot hold {wan.title} in its own VAE object ({str(e)[:160]}...); "
            "ComfyUI releases after 0.3.64 read the channels from the file. Until then wire Load Wan VAE straight to "
            "Wan Decode Latents, Wan Decode to Video and Wan Encode, which take this file."
        ) from None
    if image_vae and getattr(core, "latent_channels", None) != wan.latent_channels:  # core took it for another VAE
        raise _no_image_vae_in_core()
    _CORE_FOR[wan] = core
    return core


def _no_image_vae_in_core() -> CheckpointError:
    return CheckpointError(
        f"This ComfyUI ({comfy_host.comfyui_version()}) has no Qwen-Image 2.1 VAE of its own for Wan VAE for Core Nodes to "
        "serve (newer releases' comfy/sd.py reads that file). Update ComfyUI, or wire Load Wan VAE straight "
        "to Wan Decode Latents and Wan Encode, which take this file."
    )


def exact_copy(core, loaded: LoadedWanVAE, options: Options):
    """A shallow copy of core's VAE object whose class puts `ExactMethods` first; `core` itself is unchanged."""
    twin = copy.copy(core)
    twin.__class__ = _exact_class(getattr(type(core), "core_class", type(core)))  # once, if it is already a copy
    twin.wan_loaded, twin.wan_options = loaded, options
    twin.wan_device = getattr(core, "device", None)  # what a later Select VAE Device changes `device` from
    return twin


@functools.cache
def _exact_class(core_class: type) -> type:
    return type(f"Exact{core_class.__name__}", (ExactMethods, core_class), {"__module__": __name__, "core_class": core_class})


class ExactMethods:
    """Core VAE's decode, decode_tiled, encode and encode_tiled, run by the pack (see the module's docstring)."""

    wan_loaded: LoadedWanVAE
    wan_options: Options
    wan_device: torch.device | None

    def decode(self, samples_in, vae_options={}):  # noqa: B006 (core's signature)
        return self._wan_decode(samples_in, self.wan_options)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        # tile_x / tile_y in latent cells and tile_t in latent frames (VAE Decode (Tiled)); overlaps are not needed
        return self._wan_decode(samples, self._tiled(tile_x, tile_y, self.wan_loaded.vae.output_scale, tile_t, "decode"))

    # What core nodes divide pixel sizes by (VAE Decode (Tiled): tile_size // spacial_compression_decode() cells).
    # Core's own object says 8 for an upscale decoder of Wan 2.1, whose cells decode to 16 or more pixels.
    def spacial_compression_decode(self) -> int:
        return self.wan_loaded.vae.output_scale

    def spacial_compression_encode(self) -> int:
        return self.wan_loaded.vae.spatial_scale

    def temporal_compression_decode(self) -> int | None:
        wan = self.wan_loaded.vae
        return None if wan.config.images_only else wan.temporal_scale  # None: core's answer for an image VAE

    def encode(self, pixel_samples, not_video=None):
        return self._wan_encode(pixel_samples, self.wan_options, not_video)

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None, not_video=None):
        # tile_x / tile_y in pixels and tile_t in frames (VAE Encode (Tiled)): 4 frames make a latent frame
        chunk = None if tile_t is None else (tile_t + 3) // 4
        return self._wan_encode(pixel_samples, self._tiled(tile_x, tile_y, 1, chunk, "encode"), not_video)

    def _tiled(self, tile_x, tile_y, scale: int, chunk: int | None, what: str) -> Options:
        options, sizes = self.wan_options, [n * scale for n in (tile_x, tile_y) if n]
        smallest = MIN_TILE_CELLS * pixels_per_cell(self.wan_loaded.vae, what)
        if sizes:
            options = dataclasses.replace(options, tiling="on", tile_size=max(min(sizes), smallest))
        if chunk:
            options = dataclasses.replace(options, frames_per_chunk=max(1, min(chunk, 64)))
        return options

    def _output_dtype(self) -> torch.dtype:
        wanted = getattr(self, "vae_output_dtype", None)  # 0.38 on: a method (the intermediate dtype); 0.3.64: float32
        return wanted() if callable(wanted) else torch.float32

    def wan_on_device(self) -> LoadedWanVAE:
        """The VAE, on the device core's object now names: Select VAE Device (newer ComfyUI) copies the object and sets
        `device` after this node ran; that device is used if this process can, refused before any work if not."""
        device = getattr(self, "device", None)
        if not isinstance(device, torch.device) or device == self.wan_device or device == self.wan_loaded.device:
            return self.wan_loaded
        try:
            (device,) = check_devices([device])
        except SettingsError as e:
            raise SettingsError(f"Wan VAE for Core Nodes: the VAE was sent to {device} (Select VAE Device?), which this "
                                f"ComfyUI cannot use: {e} Choose another device there, or 'default'.") from None  # fmt: skip
        return dataclasses.replace(self.wan_loaded, device=device, devices=None)

    def _wan_decode(self, latents: torch.Tensor, options: Options) -> torch.Tensor:
        """Latents [B, C, T, h, w] (or image latents [B, C, h, w]) to core's [B, F, H, W, 3] in [0, 1]; for an image
        VAE (Qwen-Image 2.1's) pictures [B, H, W, 4], of a 5-D latent's first frame, as core's decode takes it."""
        image_vae = self.wan_loaded.vae.config.images_only
        if image_vae and latents.dim() == 5:
            latents = latents[:, :, 0]
        z = latents.unsqueeze(2) if latents.dim() == 4 else latents

        def work(wan, z, options, wired):
            return wan.decode(z, options=options, layout="images", output_device=self.output_device,
                              image_dtype=self._output_dtype(), **wired)  # fmt: skip

        frames = decode_planned(self.wan_on_device(), z, options, work)  # [B * F, H, W, 3]
        return frames if image_vae else frames.reshape(z.shape[0], -1, *frames.shape[1:])

    def _wan_encode(self, pixels: torch.Tensor, options: Options, not_video) -> torch.Tensor:
        """Core's IMAGE [N, H, W, 3] (one video, or with not_video N single frames) or videos [B, F, H, W, 3] to raw
        latents [B, C, T, h, w], cropped as core crops and cut to 1 + 4k frames as core's encoder does; for an image VAE
        (Qwen-Image 2.1's) every frame is a picture, and the latents are core's image latents [N, C, h, w]."""
        pixels = self.vae_encode_crop_pixels(pixels)[..., : self.wan_loaded.vae.in_channels]  # RGB into RGBA: alpha 1
        loaded = self.wan_on_device()
        if loaded.vae.config.images_only:
            out = encode_pictures(loaded, _in_range(pixels.reshape(-1, *pixels.shape[-3:])), options)
        else:
            if pixels.dim() == 4:
                single = getattr(self, "not_video", False) if not_video is None else not_video
                pixels = pixels.unsqueeze(1) if single else pixels.unsqueeze(0)
            latents = []
            for video in pixels:  # [F, H, W, 3] each; core's encoder drops frames beyond 1 + 4k
                video = video[: 1 + 4 * ((video.shape[0] - 1) // 4)] if video.shape[0] else video
                latents.append(encode_planned(loaded, _in_range(video), options))
            out = torch.cat(latents)
        out = out.to(self.output_device, self._output_dtype())
        formatted = getattr(self, "format_encoded", None)  # 0.38: set by a few VAEs, None for Wan's
        return formatted(out) if formatted is not None else out


def _in_range(video: torch.Tensor) -> torch.Tensor:
    """Core encodes any values; ours refuses those outside [0, 1]. Overshoot from resampling is clamped (with a
    warning) rather than failing inside a core node."""
    if video.numel() and video.is_floating_point() and torch.isfinite(video).all():
        lo, hi = video.aminmax()
        if lo < 0 or hi > 1:
            log.warning("Wan VAE for Core Nodes: frames range %.3f..%.3f; clamped to 0..1 before encoding", lo, hi)
            return video.clamp(0, 1)
    return video
