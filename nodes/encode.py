"""WanEncode: frames (IMAGE) or a VIDEO to Wan video latents, exactly, in tiles that change nothing, with progress and
Stop. A VIDEO backed by a file (core Load Video) is encoded as it is read, a few frames at a time."""

from __future__ import annotations

import functools

import torch

from ..wan_vae import LatentError, Options, WanVAE
from ..wan_vae.plan.encode_memory import estimate_peak_bytes
from ..wan_vae.run.inputs import centre_crop
from .decode import DECODE_INPUTS, LATENT_SPACES, fit_to_memory, run_planned
from .decode import latent_space as resolve_space
from .lazy_video import LatentVideo
from .load_vae import CATEGORY, LoadedWanVAE, as_wan_vae
from .video_input import VideoFrames, is_video, video_frames


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
            "images": ("IMAGE,VIDEO", {"tooltip": (
                "The video's frames (IMAGE), or a VIDEO (core Load Video: read from its file a few frames at a time): one "
                "video of 1 + 4k frames (81, 49, 1, ...) whose size is a multiple of 8 px (16 px for Wan 2.2), or turn trim on.")}),
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
        options = Options.from_widgets(resolve_space(latent_space, vae), tiling, tile_size, frames_per_chunk=frames_per_chunk,
                                       devices=vae.devices)  # fmt: skip
        if is_video(images) and wan.config.images_only:
            raise LatentError(f"{wan.config.title}'s VAE encodes pictures (IMAGE), not a VIDEO: take its frames with Get Video "
                              "Components to encode each as a picture.")  # fmt: skip
        if is_video(images):
            images = _video_frames(images, wan, trim)
        try:
            if isinstance(images, VideoFrames):
                latents = _encode_streamed(vae, images, options, trim)
            elif wan.config.images_only:  # an image VAE: IMAGE [N, H, W, C] is N pictures
                pictures = centre_crop(images, wan.spatial_scale) if trim and images.dim() == 4 else images
                latents = encode_pictures(vae, pictures, options)
            else:
                latents = encode_planned(vae, _trimmed(images, wan.spatial_scale) if trim else images, options)
        except LatentError as e:
            if trim:
                raise
            raise LatentError(f"{e} Or turn trim on, to crop and drop what does not fit.") from None
        return ({"samples": latents.float().cpu()},)


def encode_pictures(vae: LoadedWanVAE, pictures: torch.Tensor, options: Options) -> torch.Tensor:
    """An image VAE's encode (Qwen-Image 2.1's): IMAGE [N, H, W, C] in [0, 1], each a picture, to ComfyUI's image
    latents [N, C, h, w] (core's Qwen-Image 2.1 latent format is 4-D), with encode_planned's care."""
    return encode_planned(vae, pictures.movedim(-1, 1).unsqueeze(2) * 2 - 1, options)[:, :, 0]


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


def _video_frames(video, wan: WanVAE, trim: bool) -> VideoFrames | torch.Tensor:
    """A VIDEO input: its frames where they are in memory (or the pack's own decode, whole), else the file to stream;
    a count or size the VAE cannot take is refused here, before any frame is read."""
    if isinstance(video, LatentVideo):
        return video.decode_into(lambda chunks: torch.cat([chunk.float() for chunk in chunks]), torch.float32)
    source = video_frames(video)
    if source.images is not None:
        return source.images
    scale, f = wan.spatial_scale, source.frames
    if not trim and ((f - 1) % 4 or source.width % scale or source.height % scale):
        keep = 1 + 4 * ((f - 1) // 4)
        raise LatentError(f"This VIDEO is {source.width}x{source.height} px, {f} frames; the Wan VAE encodes 1 + 4k frames "
                          f"({keep} here) of multiples of {scale} px ({source.width // scale * scale}x{source.height // scale * scale}). "
                          "Turn trim on to crop the centre and drop the extra frames, or trim the video first.")  # fmt: skip
    return source


def _encode_streamed(vae: LoadedWanVAE, source: VideoFrames, options: Options, trim: bool) -> torch.Tensor:
    """A file VIDEO encoded as it is read (encode_stream), with the node's care (encode_planned's)."""
    wan = vae.vae
    h, w = (source.height // wan.spatial_scale * wan.spatial_scale, source.width // wan.spatial_scale * wan.spatial_scale)
    options = fit_to_memory(vae, options, functools.partial(estimate_peak_bytes, wan, h, w), "encode")

    def work(wan, _, options, wired):
        return source.read(wan.in_channels, lambda chunks: wan.encode_frames(
            chunks, options=options, trim=trim, total_frames=source.frames, progress=wired["progress"], cancel=wired["cancel"]))

    return run_planned(vae, None, options, work, "encode")


def _trimmed(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The frames cut to 1 + 4k and cropped (centred) to multiples of `scale`: a view, nothing copied."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        return images  # the encoder says what is wrong
    return centre_crop(images[: 1 + 4 * ((images.shape[0] - 1) // 4)], scale)
