"""WanDecodeLatents: Wan video latents to ComfyUI IMAGE frames, with tiling toggles, progress, previews and Stop.

`DECODE_INPUTS` and `run_decode` are shared with Wan Decode to Video, which streams the same decode into a file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..wan_vae import DecodeCancelled, WanVAE
from ..wan_vae.memory import estimate_peak_bytes
from ..wan_vae.tiling import MIN_TILE_CELLS
from . import comfy_host
from .load_vae import CATEGORY, LoadedWanVAE, as_wan_vae

log = logging.getLogger("wan_vae")

DECODE_INPUTS = {
    "vae": ("WAN_VAE,VAE", {"tooltip": (
        "From Load Wan VAE, or core Load VAE's VAE (the one WanImageToVideo also takes): the Wan 2.1 VAE for "
        "16-channel latents, the Wan 2.2 VAE for 48, or a tiny decoder (taew2_1, lighttaew2_2, ...) from Load Wan VAE.")}),
    "samples": ("LATENT", {"tooltip": "Video latents from a sampler (or Load Latent)."}),
    "latent_space": (["raw", "normalized"], {"default": "raw", "tooltip": (
        "raw: latents from ComfyUI samplers (KSampler and friends). normalized: latents from diffusers "
        "pipelines or kijai's WanVideoWrapper, which scale them by the VAE's mean/std. Washed-out or "
        "noisy colours mean the other setting.")}),
    "tiling": (["auto", "off", "on"], {"default": "auto", "tooltip": (
        "Tiles give exactly the same frames as no tiles; they only trade time for memory. "
        "auto: the fewest tiles that fit in free memory (none if the whole frame fits). "
        "on: tiles of at most tile_size. off: never tile (most memory).")}),
    "tile_size": ("INT", {"default": 512, "min": 128, "max": 4096, "step": 32, "tooltip": (
        "Largest tile edge in pixels when tiling is on. Smaller tiles use less memory and take longer "
        "(each tile also decodes a margin around it, 104 px for Wan 2.1, 208 px for Wan 2.2).")}),
    "tile_overlap": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 16, "tooltip": (
        "No longer changes anything: tiles are exact, each one decoding the margin it needs. "
        "Kept so that saved workflows load; it may not be larger than tile_size.")}),
    "frames_per_chunk": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": (
        "Latent frames per decoder pass (each makes 4 frames). Any value gives the same frames; "
        "larger is faster on big GPUs, 1 uses the least memory.")}),
}  # fmt: skip

TINY_DECODER_BYTES = 1 << 30  # what a tiny decoder asks ComfyUI to free (720p chunks of 4 latent frames fit)
# work(vae, latents, options) runs wan.decode or wan.decode_frames with options (tiling, progress, cancel, ...).
Work = Callable[[WanVAE, torch.Tensor, dict], object]


class WanDecodeLatents:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Decodes Wan video latents into frames (IMAGE), exactly like the reference decoder. Time is decoded in "
        "chunks that continue each other exactly (no flicker), and large frames can be split into tiles that are "
        "exact too (no seams, no blending): tiling only trades time for memory. A batch of videos comes out as "
        "their frames one after the other, like VAE Decode. For long videos, Wan Decode to Video writes the file "
        "without holding the frames in memory."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The decoded frames [frames, height, width, 3]; 21 latent frames give 81.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(DECODE_INPUTS)}

    def decode(self, vae, samples, latent_space, tiling, tile_size, tile_overlap, frames_per_chunk):
        def work(wan, latents, options):
            return wan.decode(latents, layout="images", output_device=comfy_host.result_device(), **options)

        return (run_decode(vae, samples, latent_space, tiling, tile_size, tile_overlap, frames_per_chunk, work),)


def video_latents(samples: dict) -> torch.Tensor:
    """The LATENT's tensor as video latents [B, C, T, h, w]; image latents [B, C, h, w] are one frame each."""
    latents = samples["samples"]
    return latents.unsqueeze(2) if latents.dim() == 4 else latents


def run_decode(vae: LoadedWanVAE, samples, latent_space, tiling, tile_size, tile_overlap, frames_per_chunk, work: Work):
    """work(...) with the node's options on the node's device: room made in ComfyUI's memory first, the progress
    bar, previews and Stop wired, one retry with smaller tiles on out-of-memory, and the VAE put back after."""
    latents = video_latents(samples)
    vae = as_wan_vae(vae)
    wan, device = vae.vae, vae.device
    options = dict(normalized=latent_space == "normalized", tiling=tiling, tile_size=tile_size, tile_overlap=tile_overlap,
                   frames_per_chunk=frames_per_chunk, devices=vae.devices)  # fmt: skip
    if not isinstance(wan, WanVAE):  # a tiny decoder: a few hundred MB, no tiles
        comfy_host.make_room(device, TINY_DECODER_BYTES)
    elif latents.dim() == 5 and latents.shape[1] == wan.latent_channels:  # else the decoder says what is wrong
        # Ask ComfyUI to unload what it must (the sampler's model, say); auto tiles to what is then free.
        h, w = latents.shape[-2] * wan.spatial_scale, latents.shape[-1] * wan.spatial_scale
        wanted = estimate_peak_bytes(wan, h, w, frames_per_chunk, tile_size if tiling == "on" else None)
        free = comfy_host.make_room(device, wanted)
        if tiling == "auto":
            smallest = MIN_TILE_CELLS * wan.spatial_scale
            if free < estimate_peak_bytes(wan, h, w, 1, smallest):
                log.warning("Wan decode: only %.1f GiB free on %s; trying the smallest tiles (%d px) anyway",
                            free / 2**30, device, smallest)  # fmt: skip
                options.update(tiling="on", tile_size=smallest, frames_per_chunk=1)
            else:
                options["memory_budget"] = free
    try:
        wan.to(device=device)
        try:
            return _attempt(work, wan, latents, options)
        except Exception as error:
            if not comfy_host.is_out_of_memory(error) or tiling == "on" and tile_size <= 2 * MIN_TILE_CELLS * wan.spatial_scale:
                raise
            retry = max(tile_size // 2, 2 * MIN_TILE_CELLS * wan.spatial_scale) if tiling == "on" else min(tile_size, 512)
            log.warning("Wan decode ran out of memory on %s (%s); retrying once with %d px tiles", device, error, retry)
            del error
            comfy_host.release_memory()
            options.update(tiling="on", tile_size=retry, tile_overlap=0)
            return _attempt(work, wan, latents, options)
    finally:
        wan.release_replicas()  # the copies on other GPUs: ComfyUI does not know of them
        wan.to(device=comfy_host.offload_device())
        comfy_host.release_memory()


def _attempt(work: Work, wan: WanVAE, latents: torch.Tensor, options: dict):
    shown = comfy_host.NodeProgress()
    wired = dict(progress=shown.progress, preview=shown.preview, cancel=comfy_host.stop_requested)
    try:
        return work(wan, latents, options | wired)
    except DecodeCancelled as stopped:
        comfy_host.raise_stopped(stopped)
