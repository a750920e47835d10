"""WanDecodeLatents: Wan video latents to ComfyUI IMAGE frames, with tiling toggles, progress, previews and Stop.

`DECODE_INPUTS`, `run_decode` and `kept_on_failure` are shared with Wan Decode to Video, which streams the same decode
into a file, and with the lazy VIDEO (lazy_video.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..wan_vae import DecodeCancelled, Options, WanVAE, WanVAEError
from ..wan_vae.alpha_pair import AlphaPair
from ..wan_vae.plan.memory import estimate_peak_bytes
from ..wan_vae.plan.tiling import MIN_TILE_CELLS
from . import comfy_host
from .load_vae import CATEGORY, LoadedWanVAE, as_wan_vae

log = logging.getLogger("wan_vae")

LATENT_SPACES = ["auto", "raw", "normalized"]  # auto first: the default of a new node (saved ones keep theirs)

DECODE_INPUTS = {
    "vae": ("WAN_VAE,VAE,WANVAE", {"tooltip": (
        "From Load Wan VAE, core Load VAE (the VAE WanImageToVideo also takes) or kijai's WanVideo VAE Loader: the Wan 2.1 "
        "VAE for 16-channel latents, the Wan 2.2 VAE for 48, their variants, or a tiny decoder (taew2_1, lighttaew2_2, ...).")}),
    "samples": ("LATENT", {"tooltip": "Video latents from a sampler (or Load Latent)."}),
    "latent_space": (LATENT_SPACES, {"default": "auto", "tooltip": (
        "auto: the latents of the VAE's own samplers: normalized with kijai's WanVideo VAE Loader (WanVideoSampler's "
        "latents are), raw otherwise (KSampler and the other ComfyUI samplers). raw / normalized say it yourself: "
        "normalized for diffusers pipelines and WanVideoWrapper latents. Washed-out or noisy colours mean the other setting.")}),
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
# work(vae, latents, options, wired) runs wan.decode or wan.decode_frames with the options and the wired callbacks
# (progress, preview, cancel).
Work = Callable[[WanVAE, torch.Tensor, Options, dict], object]


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
        def work(wan, latents, options, wired):
            return wan.decode(latents, options=options, layout="images", output_device=comfy_host.result_device(),
                              image_dtype=comfy_host.image_dtype(), **wired)  # fmt: skip

        return (run_decode(vae, samples, latent_space, tiling, tile_size, tile_overlap, frames_per_chunk, work),)


def video_latents(samples: dict) -> torch.Tensor:
    """The LATENT's tensor as video latents [B, C, T, h, w]; image latents [B, C, h, w] are one frame each. A LATENT from
    kijai's WanVideoSampler may carry a reference frame in front (`has_ref`), a frame to drop at the end (`drop_last`) or
    an end image's frame (`end_image`): these are cut as its WanVideoDecode cuts them."""
    latents = samples["samples"]
    latents = latents.unsqueeze(2) if latents.dim() == 4 else latents
    if latents.dim() == 5:
        first = 1 if samples.get("has_ref") else 0
        last = latents.shape[2] - (1 if samples.get("drop_last") else 0) - (1 if samples.get("end_image") is not None else 0)
        if (first, last) != (0, latents.shape[2]) and last > first:
            latents = latents[:, :, first:last]
        if samples.get("looped"):
            log.warning("Wan Decode: this WanVideoSampler LATENT is looped; it is decoded as it is (WanVideoDecode blends its ends)")
    return latents


def latent_space(choice: str, vae: LoadedWanVAE) -> str:
    """"raw" or "normalized" for the latent_space widget: auto is what the VAE's own samplers give."""
    return vae.sampled_space if choice == "auto" else choice


def run_decode(vae: LoadedWanVAE, samples, latent_space_choice, tiling, tile_size, tile_overlap, frames_per_chunk, work: Work):
    """work(...) with the node's options on the node's device: room made in ComfyUI's memory first, the progress
    bar, previews and Stop wired, one retry with smaller tiles on out-of-memory, and the VAE put back after."""
    vae = as_wan_vae(vae)
    options = Options.from_widgets(latent_space(latent_space_choice, vae), tiling, tile_size, tile_overlap, frames_per_chunk,
                                   vae.devices)  # fmt: skip
    return decode_planned(vae, video_latents(samples), options, work)


def decode_planned(vae: LoadedWanVAE, latents: torch.Tensor, options: Options, work: Work):
    """run_decode with options already made (Wan VAE for Core Nodes makes its own)."""
    if not isinstance(vae.vae, WanVAE):  # a tiny decoder: a few hundred MB, no tiles
        comfy_host.make_room(vae.device, TINY_DECODER_BYTES)
    elif latents.dim() == 5 and latents.shape[1] == vae.vae.latent_channels:  # else the decoder says what is wrong
        wan = vae.vae
        h, w = latents.shape[-2] * wan.output_scale, latents.shape[-1] * wan.output_scale
        decoders = (wan.colour, wan.alpha) if isinstance(wan, AlphaPair) else (wan,)  # Wan-Alpha: both run on every chunk

        def estimate(*args) -> int:
            return sum(estimate_peak_bytes(decoder, h, w, *args) for decoder in decoders)

        options = fit_to_memory(vae, options, estimate, "decode")
    return run_planned(vae, latents, options, work, "decode")


def fit_to_memory(vae: LoadedWanVAE, options: Options, estimate: Callable[..., int], what: str) -> Options:
    """Ask ComfyUI to unload what it must (the sampler's model, say); with tiling auto, plan for what is then free.
    estimate(frames_per_chunk, tile_px or None) is the peak in bytes."""
    wan, device = vae.vae, vae.device
    free = comfy_host.make_room(device, estimate(options.frames_per_chunk, options.tile_size if options.tiling == "on" else None))
    if options.tiling != "auto":
        return options
    smallest = MIN_TILE_CELLS * pixels_per_cell(wan, what)
    if free < estimate(1, smallest):
        log.warning("Wan %s: only %.1f GiB free on %s; trying the smallest tiles (%d px) anyway", what, free / 2**30, device, smallest)
        return dataclasses.replace(options, tiling="on", tile_size=smallest, frames_per_chunk=1)
    log.info("Wan %s: %.1f GiB free on %s after ComfyUI made room; tiling auto plans for that", what, free / 2**30, device)
    return dataclasses.replace(options, memory_budget=free)


def run_planned(vae: LoadedWanVAE, data: torch.Tensor, options: Options, work: Work, what: str):
    """work(wan, data, options, wired) on the node's device, once more with smaller tiles if it ran out of memory."""
    wan, device = vae.vae, vae.device
    try:
        wan.to(device=device)
        try:
            return _attempt(work, wan, data, options)
        except Exception as error:
            retry = _retry_options(wan, options, error, what)
            if retry is None:
                raise
            log.warning("Wan %s ran out of memory on %s (%s); retrying once with %d px tiles", what, device, error, retry.tile_size)
            del error
            comfy_host.release_memory()
            return _attempt(work, wan, data, retry)
    finally:
        wan.release_replicas()  # the copies on other GPUs: ComfyUI does not know of them
        wan.to(device=comfy_host.offload_device())
        comfy_host.release_memory()


def pixels_per_cell(wan, what: str) -> int:
    """What `tile_size` counts per latent cell: decoded pixels for a decode (an upscale decoder's are s times more),
    the video's pixels for an encode."""
    return wan.output_scale if what == "decode" else wan.spatial_scale


def _retry_options(wan: WanVAE, options: Options, error: Exception, what: str) -> Options | None:
    """Smaller tiles for the one retry after running out of memory; None if this was not that, or tiles are already smallest."""
    smallest_retry = 2 * MIN_TILE_CELLS * pixels_per_cell(wan, what)
    if not comfy_host.is_out_of_memory(error) or options.tiling == "on" and options.tile_size <= smallest_retry:
        return None
    size = max(options.tile_size // 2, smallest_retry) if options.tiling == "on" else min(options.tile_size, 512)
    return dataclasses.replace(options, tiling="on", tile_size=size, tile_overlap=0)


def _attempt(work: Work, wan: WanVAE, data: torch.Tensor, options: Options):
    shown = comfy_host.NodeProgress()
    try:
        return work(wan, data, options, dict(progress=shown.progress, preview=shown.preview, cancel=comfy_host.stop_requested))
    except DecodeCancelled as stopped:
        comfy_host.raise_stopped(stopped)


@contextlib.contextmanager
def kept_on_failure(latent_file: Callable[[], Path | None]):
    """On a failure or Stop inside, say where the latent is kept (latent_file() gives it: the one saved before, or
    one it writes now), so that the decode can be redone from Load Latent; nothing is swallowed."""
    try:
        yield
    except BaseException as error:  # ComfyUI's Stop is an Exception in 0.3.64, a BaseException in 0.38
        if not (isinstance(error, Exception) or comfy_host.is_stop(error)):
            raise
        kept_in = latent_file()
        if kept_in is None:
            raise
        kept = (f"No video was saved; the latent is kept in {kept_in}: copy it to ComfyUI/input and decode it "
                "again with Load Latent -> Wan Decode to Video.")  # fmt: skip
        if comfy_host.is_stop(error):
            comfy_host.notify(f"Stopped. {kept}")
            raise
        if isinstance(error, WanVAEError):
            raise type(error)(f"{error} {kept}") from error
        error.add_note(kept)
        comfy_host.notify(kept, "warn")
        raise
