"""WanEncode: frames (IMAGE) to Wan video latents, exactly, in tiles that change nothing, with progress and Stop."""

from __future__ import annotations

import functools

import torch

from ..wan_vae import LatentError, Options, WanVAE
from ..wan_vae.plan.encode_memory import estimate_peak_bytes
from ..wan_vae.run.inputs import centre_crop
from .decode import DECODE_INPUTS, LATENT_SPACES, fit_to_memory, run_planned
from .decode import latent_space as resolve_space
from .load_vae import CATEGORY, LoadedWanVAE, as_wan_vae


class WanEncode:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Encodes frames (IMAGE) into Wan video latents with the full Wan 2.1 or 2.2 VAE, exactly like the reference "
        "encoder: large frames are split into tiles that give the same latents as no tiles (no blending), so a start "
        "image or a control video encodes on a small GPU without changing what the model is conditioned on. "
        "The LATENT goes to samplers, VAE Decode and the Wan Decode nodes."
    )
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents [1, channels, 1 + (frames - 1) / 4, height / 8, width / 8] (16 px cells for Wan 2.2).",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": DECODE_INPUTS["vae"][:1] + ({"tooltip": (
                "From Load Wan VAE, or core Load VAE's VAE: the full Wan 2.1 or Wan 2.2 VAE (tiny decoders have no encoder).")},),
            "images": ("IMAGE", {"tooltip": "The video's frames, one video: 1 + 4k frames (81, 49, 1, ...) whose size is a "
                                            "multiple of 8 px (16 px for Wan 2.2), or turn trim on."}),
            "latent_space": (LATENT_SPACES, {"default": "auto", "tooltip": (
                "auto: what the VAE's own samplers take: normalized with kijai's WanVideo VAE Loader, raw otherwise. raw: "
                "for ComfyUI samplers and core nodes. normalized: for diffusers pipelines and kijai's WanVideoWrapper, which "
                "scale latents by the VAE's mean/std.")}),
            "tiling": DECODE_INPUTS["tiling"][:1] + ({"default": "auto", "tooltip": (
                "Tiles give exactly the same latents as no tiles; they only trade time for memory. auto: the fewest "
                "tiles that fit in free memory. on: tiles of at most tile_size. off: never tile.")},),
            "tile_size": ("INT", {"default": 512, "min": 128, "max": 4096, "step": 32, "tooltip": (
                "Largest tile edge in pixels when tiling is on; each tile also reads the margin its latents depend on.")}),
            "frames_per_chunk": DECODE_INPUTS["frames_per_chunk"][:1] + ({"default": 1, "min": 1, "max": 64, "tooltip": (
                "Latent frames per encoder pass (4 frames each). Any value gives the same latents; larger is faster on "
                "big GPUs, 1 uses the least memory.")},),
            "trim": ("BOOLEAN", {"default": False, "tooltip": (
                "Crop the frames to a multiple of 8 px (16 for Wan 2.2) and drop trailing frames that do not make "
                "1 + 4k. Off: such input is refused with what to change.")}),
        }}  # fmt: skip

    def encode(self, vae, images, latent_space, tiling, tile_size, frames_per_chunk, trim):
        vae = as_wan_vae(vae)
        wan = vae.vae
        if not isinstance(wan, WanVAE):
            raise LatentError(f"{wan.title} is a decoder only: encoding needs the full Wan {wan.version} VAE "
                              "(wan_2.1_vae / wan2.2_vae). It can still decode what the full VAE encodes.")  # fmt: skip
        frames = _trimmed(images, wan.spatial_scale) if trim else images
        options = Options.from_widgets(resolve_space(latent_space, vae), tiling, tile_size, frames_per_chunk=frames_per_chunk,
                                       devices=vae.devices)  # fmt: skip
        try:
            latents = encode_planned(vae, frames, options)
        except LatentError as e:
            if trim:
                raise
            raise LatentError(f"{e} Or turn trim on, to crop and drop what does not fit.") from None
        return ({"samples": latents.float().cpu()},)


def encode_planned(vae: LoadedWanVAE, frames: torch.Tensor, options: Options, strict_range: bool = True) -> torch.Tensor:
    """Encode frames [F, H, W, C] in [0, 1] (or a video [B, C, F, H, W] in [-1, 1]) with the node's care: room made in
    ComfyUI's memory (tiling auto planned for what is then free), progress, Stop and the one out-of-memory retry
    (nodes/decode.py). `strict_range=False` encodes values outside the range as the reference does (WanVideoWrapper's
    noise augmentation makes them)."""
    if isinstance(frames, torch.Tensor) and frames.dim() in (4, 5) and frames.numel() > 0:
        h, w = frames.shape[1:3] if frames.dim() == 4 else frames.shape[-2:]  # IMAGE [F, H, W, C], or a video [B, C, F, H, W]
        options = fit_to_memory(vae, options, functools.partial(estimate_peak_bytes, vae.vae, h, w), "encode")

    def work(wan, frames, options, wired):
        return wan.encode(frames, options=options, progress=wired["progress"], cancel=wired["cancel"], strict_range=strict_range)

    return run_planned(vae, frames, options, work, "encode")


def _trimmed(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The frames cut to 1 + 4k and cropped (centred) to multiples of `scale`: a view, nothing copied."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        return images  # the encoder says what is wrong
    return centre_crop(images[: 1 + 4 * ((images.shape[0] - 1) // 4)], scale)
