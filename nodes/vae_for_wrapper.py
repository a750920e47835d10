"""WanVAEForWanVideoWrapper: a WANVAE for kijai's WanVideoWrapper nodes whose decode and encode run this pack's.

WanVideoDecode, WanVideoEncode, WanVideoImageToVideoEncode, the VACE encode and the rest call `vae.to(device)`,
`vae.decode(latents, device=..., tiled=..., tile_size=..., tile_stride=...)`, `vae.encode(videos, device=..., ...)`,
`vae.model.clear_cache()` and read `vae.dtype` and `vae.upsampling_factor`. `ExactWanVideoVAE` answers those with the
wrapper's shapes and conventions (wan_video_vae.py of 1.0.6 and 2026): normalized latents in and out, videos
[3, F, H, W] in [-1, 1] as lists and stacks, tile sizes in latent cells. Its tiles are this pack's exact ones, planned
to ComfyUI's free memory, with the progress bar and Stop. The wrapper's own VAE object, if one came in, is not touched;
anything else a wrapper node asks of it is answered by that object.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

import torch

from ..wan_vae import CheckpointError, Options, WanVAE
from . import wrapper_vae
from .decode import DECODE_INPUTS, decode_planned
from .encode import encode_planned
from .load_vae import CATEGORY, LoadedWanVAE, as_wan_vae

log = logging.getLogger("wan_vae")


class WanVAEForWanVideoWrapper:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Puts this pack's exact, memory-planned Wan VAE inside kijai's WanVideoWrapper nodes: wire WanVideo VAE Loader (or "
        "Load Wan VAE, or core Load VAE) through it into WanVideo Decode, WanVideo Encode, WanVideo ImageToVideo Encode, "
        "the VACE encode and the rest. Their tiles then change nothing (no seams at the tile stride), sized to the memory "
        "ComfyUI frees, with a progress bar and Stop. The VAE you wire in is left as it is."
    )
    RETURN_TYPES = ("WANVAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("A WANVAE for WanVideoWrapper's nodes, decoding and encoding exactly.",)
    FUNCTION = "adapt"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": DECODE_INPUTS["vae"][:1] + ({"tooltip": (
                "WanVideo VAE Loader's VAE, Load Wan VAE's or core Load VAE's: the full Wan 2.1 or Wan 2.2 VAE (the "
                "wrapper's nodes encode too).")},),
            "tiling": DECODE_INPUTS["tiling"][:1] + ({"default": "auto", "tooltip": (
                "For the wrapper nodes' decodes and encodes with their tiling off. Tiles give exactly the untiled result; "
                "they only trade time for memory. auto: the fewest tiles that fit in what ComfyUI frees. on: tiles of at "
                "most tile_size. off: never tile. With the wrapper's tiling on, its tile size is used (exactly, no seams).")},),
            "tile_size": DECODE_INPUTS["tile_size"],
            "frames_per_chunk": DECODE_INPUTS["frames_per_chunk"],
        }}  # fmt: skip

    def adapt(self, vae, tiling, tile_size, frames_per_chunk):
        loaded = as_wan_vae(vae)  # refuses what is not a Wan VAE (and a wrapper class or version it does not know)
        if not isinstance(loaded.vae, WanVAE):
            raise CheckpointError(
                f"{loaded.vae.title} is a decoder only, and WanVideoWrapper's nodes encode too (WanVideo Encode, the I2V "
                f"encode): Wan VAE for WanVideoWrapper needs the full Wan {loaded.vae.version} VAE. The tiny decoder can "
                "still decode in Wan Decode Latents and Wan Decode to Video."
            )
        if loaded.vae.config.images_only:
            raise CheckpointError(
                f"{loaded.vae.title} is an image VAE (one picture per latent), and WanVideoWrapper's nodes decode and encode "
                "videos with the Wan 2.1 or 2.2 VAE. Wire it to Wan Decode Latents and Wan Encode, or to core's nodes through "
                "Wan VAE for Core Nodes."
            )
        installed = _installed_wrapper_class()
        if installed is not None:
            wrapper_vae.check_wrapper_class(installed)  # the calls its nodes make are ones this pack knows
        options = Options.from_widgets("normalized", tiling, tile_size, 0, frames_per_chunk, loaded.devices)
        source = vae if wrapper_vae.is_wrapper_vae(vae) else None
        return (ExactWanVideoVAE(loaded, options, source),)


def _installed_wrapper_class() -> type | None:
    """The WanVideoVAE class of the WanVideoWrapper ComfyUI loaded, if it did."""
    for name, module in list(sys.modules.items()):
        if name.endswith("wan_video_vae") and isinstance(getattr(module, "WanVideoVAE", None), type):
            return module.WanVideoVAE
    return None


class _Model:
    """`vae.model` as the wrapper's nodes use it: clear_cache() after a decode; anything else from its own model."""

    def __init__(self, source) -> None:
        self._source = source

    def clear_cache(self) -> None:
        """Nothing to clear: this pack's decodes keep their state in the decode, not in the model."""

    def __getattr__(self, name: str):
        if self._source is None:
            raise AttributeError(f"Wan VAE for WanVideoWrapper's model has no {name!r}: it runs the pack's network, not the wrapper's.")
        return getattr(self._source, name)


class ExactWanVideoVAE:
    """The WANVAE Wan VAE for WanVideoWrapper gives (see the module's docstring)."""

    def __init__(self, loaded: LoadedWanVAE, options: Options, source=None) -> None:
        wan = loaded.vae
        self.wan_loaded, self.wan_options, self.source = loaded, options, source
        self.dtype = torch.float32  # what the wrapper's nodes cast latents and pixels to before handing them here: no rounding
        self.upsampling_factor = wan.spatial_scale  # pixels per latent cell: the nodes size latents with it
        self.z_dim = wan.latent_channels
        self.mean = wan.latents_mean.view(1, -1, 1, 1, 1)
        self.inv_std = (1.0 / wan.latents_std).view(1, -1, 1, 1, 1)
        self.model = _Model(getattr(source, "model", None))

    def __getattr__(self, name: str):  # only for what is not set above: the wrapper's object answers the rest
        source = self.__dict__.get("source")
        if source is None:
            raise AttributeError(f"Wan VAE for WanVideoWrapper has no {name!r} (it offers decode and encode); this wrapper node "
                                 "needs the wrapper's own VAE: wire WanVideo VAE Loader into it directly.")  # fmt: skip
        return getattr(source, name)

    def __repr__(self) -> str:
        return f"Wan VAE for WanVideoWrapper ({self.wan_loaded!r})"

    def to(self, *args, **kwargs) -> ExactWanVideoVAE:
        """The wrapper's nodes move their VAE around each call; this one goes where the pack's planner puts it."""
        return self

    def eval(self) -> ExactWanVideoVAE:
        return self

    def _tiled(self, tiled: bool, tile_size, scale: int) -> Options:
        """The node's options, or with the wrapper's tiling on, tiles of the wrapper's size (latent cells, exact here)."""
        if not tiled or not tile_size:
            return self.wan_options
        cells = min(int(n) for n in tile_size)
        return dataclasses.replace(self.wan_options, tiling="on", tile_size=max(cells * scale, 8 * scale))

    def decode(self, hidden_states, device=None, tiled=False, end_=False, tile_size=(34, 34), tile_stride=(18, 16), pbar=True,
               output_device=None, output_dtype=None) -> list[torch.Tensor]:  # fmt: skip
        """Normalized latents [B, C, T, h, w] (or a list of [C, T, h, w]) -> a list of videos [C, F, H, W] in [-1, 1],
        float32, on `output_device`, or where the wrapper's would be (on the CPU when tiled, else on `device`).
        `end_` (an end image): the last latent frame decodes alone, as the wrapper's decode_2 does."""
        wan = self.wan_loaded.vae
        options = self._tiled(tiled, tile_size, wan.output_scale)
        where = torch.device(output_device) if output_device is not None else torch.device("cpu") if tiled or device is None else torch.device(device)

        def work(wan, z, options, wired):
            return wan.decode(z, options=options, layout="video", output_device=where, **wired)

        videos = []
        for z in hidden_states:
            z = z.unsqueeze(0)
            parts = [z[:, :, :-1], z[:, :, -1:]] if end_ and z.shape[2] > 1 else [z]
            video = torch.cat([decode_planned(self.wan_loaded, part.float(), options, work) for part in parts], 2)[0]
            videos.append(video.to(dtype=output_dtype or torch.float32))
        return videos

    def encode(self, videos, device=None, tiled=False, end_=False, tile_size=None, tile_stride=None, pbar=True,
               sample=False) -> torch.Tensor:  # fmt: skip
        """Videos [B, 3, F, H, W] (or a list of [3, F, H, W]) in [-1, 1] -> normalized latents [B, C, T, h, w], float32 on
        `device`. Frames past 1 + 4k are dropped as the wrapper's encoder drops them; `end_`: the last frame encodes
        alone (the wrapper's encode_2)."""
        if sample:
            raise ValueError("Wan VAE for WanVideoWrapper gives the posterior mean; sample=True (a noisy sample of the posterior) "
                             "needs the wrapper's own VAE: wire WanVideo VAE Loader into this node directly.")  # fmt: skip
        wan = self.wan_loaded.vae
        wan.check_encoder()
        options = self._tiled(tiled, tile_size, wan.spatial_scale)
        latents = []
        for video in videos:
            x = video.unsqueeze(0).float()
            f = x.shape[2]
            if end_ and f > 1:
                parts = [x[:, :, : 1 + 4 * ((f - 2) // 4)], x[:, :, -1:]]
            else:
                parts = [x[:, :, : 1 + 4 * ((f - 1) // 4)]]
            encoded = [encode_planned(self.wan_loaded, part, options, strict_range=False) for part in parts]
            latents.append(torch.cat(encoded, 2)[0])
        out = torch.stack(latents).float()
        return out.to(device) if device is not None else out
