"""Checks on what callers hand in (latents to decode, a video to encode), with messages that say what to change."""

from __future__ import annotations

import torch

from ..errors import LatentError
from ..files.config import MODELS_BY_LATENT_CHANNELS

# The file each latent width needs, as ComfyUI's repackaged folders name it.
VAE_FILES = {16: "wan_2.1_vae.safetensors", 48: "wan2.2_vae.safetensors", 64: "qwen_image_2.1_vae_bf16.safetensors"}


def check_latents(latents, vae) -> torch.Tensor:
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
    check_channels(z.shape[1], vae)
    if _images_only(vae) and z.shape[2] != 1:
        raise LatentError(
            f"{vae.config.title}'s VAE is an image VAE: each latent is one picture [batch, {z.shape[1]}, 1, h, w] (or "
            f"[batch, {z.shape[1]}, h, w]); these have {z.shape[2]} frames. Give them as a batch of {z.shape[0] * z.shape[2]} "
            f"pictures (latents.transpose(1, 2).reshape(-1, {z.shape[1]}, 1, {z.shape[3]}, {z.shape[4]}))."
        )
    bad = (~torch.isfinite(z)).sum().item()
    if bad:
        nans = torch.isnan(z).sum().item()
        raise LatentError(
            f"The latents contain {nans} NaN and {bad - nans} infinite values out of {z.numel()}; decoding them "
            "would give a broken video. The sampler diverged: check the model precision (fp16 can overflow), "
            "CFG and steps."
        )
    return z


def _images_only(vae) -> bool:
    config = getattr(vae, "config", None)
    return bool(getattr(config, "images_only", False))


def check_channels(channels: int, vae) -> None:
    """A plain message for latents made by a different model than the VAE's."""
    if channels == vae.latent_channels:
        return
    have = f"the loaded VAE is {vae.kind} ({vae.latent_channels} channels)"
    if channels in MODELS_BY_LATENT_CHANNELS:
        vae_name, models = MODELS_BY_LATENT_CHANNELS[channels]
        raise LatentError(
            f"These latents have {channels} channels: {models} latents need the {vae_name} VAE, but {have}. "
            f"Load the {vae_name} VAE ({VAE_FILES[channels]})."
        )
    raise LatentError(
        f"These latents have {channels} channels, but {have}. They do not come from a Wan video model "
        f"(4-channel latents are SD 1.x/SDXL images, 16-channel 4-D latents SD3/Flux images)."
    )


def check_video(video, vae, strict_range: bool = True) -> tuple[torch.Tensor, bool]:
    """A video to encode as a [B, C, F, H, W] view, and whether its values are ComfyUI's [0, 1] (frames
    [F, H, W, C], IMAGE) rather than [-1, 1] ([B, C, F, H, W] or [C, F, H, W]); C = 3, or 4 for an RGBA VAE (which
    takes RGB too: encode.py gives it alpha 1); F = 1 + 4k, H and W multiples of the VAE's scale. Otherwise
    LatentError saying what to change (`strict_range=False`: any finite values). Nothing is copied."""
    if not isinstance(video, torch.Tensor):
        raise LatentError(f"The video must be a torch.Tensor, got {type(video).__name__}.")
    # [F, H, W, 3|4] frames, unless it reads as [C, F, H, W] (a width of 3 or 4 px cannot be encoded anyway)
    images = video.dim() == 4 and video.shape[-1] in (3, 4) and video.shape[0] != video.shape[-1]
    if images:
        x = video.movedim(-1, 0).unsqueeze(0)
    else:
        x = video.unsqueeze(0) if video.dim() == 4 else video
    if x.dim() != 5 or x.shape[1] not in (3, 4):
        raise LatentError(f"The video must be [batch, 3, frames, height, width] in [-1, 1], or frames [frames, height, width, 3] "
                          f"in [0, 1] (ComfyUI's IMAGE); got shape {list(video.shape)}.")  # fmt: skip
    check_frame_channels(x.shape[1], vae)
    if not x.is_floating_point():
        raise LatentError(f"The video must be floating point, got {x.dtype}.")
    if x.numel() == 0:
        raise LatentError(f"The video is empty (shape {list(video.shape)}): nothing to encode.")
    f, h, w = x.shape[2:]
    if _images_only(vae) and f != 1:
        raise LatentError(f"{vae.config.title}'s VAE is an image VAE: it encodes pictures [batch, C, 1, H, W] (or a batch of "
                          f"IMAGE frames, one picture each), not {f}-frame videos.")  # fmt: skip
    if (f - 1) % 4:
        lower, upper = 1 + 4 * ((f - 1) // 4), 1 + 4 * ((f - 1) // 4 + 1)
        raise LatentError(
            f"The Wan VAE encodes 1 + 4k frames; {f} frames would lose {f - lower}. "
            f"Trim to {lower} or extend to {upper} frames."
        )
    s = vae.spatial_scale
    for name, n in (("height", h), ("width", w)):
        if n % s:
            raise LatentError(
                f"The video {name} {n} px is not a multiple of {s} (Wan {vae.version} VAE); "
                f"crop or resize to {n // s * s or s} or {(n // s + 1) * s} px."
            )
    check_values(x, images, strict_range)
    return x, images


def check_frame_channels(channels: int, vae) -> None:
    """LatentError for RGBA frames into an RGB encoder (their alpha would be lost without a word)."""
    if channels > vae.in_channels:
        raise LatentError(
            f"The frames have {channels} channels (RGBA), but {vae.title} encodes RGB. Drop the alpha first (core's "
            "'Split Image with Alpha' node, or frames[..., :3]), or encode with an RGBA VAE (Qwen-Image-Layered's)."
        )


def check_values(x: torch.Tensor, images: bool = False, strict_range: bool = True) -> None:
    """Video values finite and (if `strict_range`) in [-1, 1], or [0, 1] for `images` (a little slack for rounding)."""
    if not torch.isfinite(x).all():
        raise LatentError("The video contains NaN or infinite values.")
    if not strict_range:
        return
    lo, hi = x.aminmax()
    low = 0.0 if images else -1.0
    if lo < low - 0.001 or hi > 1.001:
        form = "frames [frames, height, width, 3] in [0, 1]" if images else "values in [-1, 1]"
        fix = "Divide 0-255 frames by 255." if images else "Map [0, 1] images with x * 2 - 1 (and 0-255 with x / 127.5 - 1)."
        raise LatentError(f"The video must have {form}; found [{lo.item():.3g}, {hi.item():.3g}]. {fix}")


def centre_crop(frames: torch.Tensor, scale: int) -> torch.Tensor:
    """Frames [N, H, W, 3] cropped to their centre's largest multiple of `scale` px: a view, nothing copied."""
    h, w = frames.shape[1:3]
    keep_h, keep_w = h // scale * scale, w // scale * scale
    if keep_h == 0 or keep_w == 0:
        raise LatentError(f"The frames are {w}x{h} px, smaller than one latent cell ({scale} px): nothing to encode.")
    y, x = (h - keep_h) // 2, (w - keep_w) // 2
    return frames[:, y : y + keep_h, x : x + keep_w]
