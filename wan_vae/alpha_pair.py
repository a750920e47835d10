"""Wan-Alpha: one latent, two decoders. The colour VAE's decoder gives RGB, a fine-tuned second decoder gives the
alpha (three nearly equal grey channels, of which the red is kept); both run chunk by chunk on the same latent, so an
RGBA video comes from one decode, streamed, as any Wan decode.

    vae = pair_alpha(load_vae("wan_alpha_2.1_vae_rgb_channel.safetensors"),
                     load_vae("wan_alpha_2.1_vae_alpha_channel.safetensors"))
    for frames in vae.decode_frames(latents):    # [N, H, W, 4]: RGB, then alpha
        ...

The alpha is what ComfyUI's Wan-Alpha template computes: ImageToMask(red) -> InvertMask -> Join Image with Alpha,
which inverts the mask again: 1 - (1 - red), straight (not premultiplied) alpha. Encoding uses the colour VAE's
encoder, Wan-Alpha's (the stock Wan 2.1 encoder). WanVAE.decode and decode_frames of the pair are those of the colour
VAE with the alpha joined, so tiles, chunks, progress and Stop are unchanged; each decoder plans for half the memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import CheckpointError, SettingsError
from .run.options import Options
from .vae import WanVAE

ALPHA_MARK, COLOUR_MARK = "alpha_channel", "rgb_channel"  # Comfy-Org's names: wan_alpha_2.1_vae_{rgb,alpha}_channel


def alpha_companion(path) -> Path | None:
    """The alpha half beside a Wan-Alpha colour file, by ComfyUI's repackaged names, if it is there."""
    path = Path(path)
    if "wan_alpha" not in path.name.lower() or COLOUR_MARK not in path.name:
        return None
    companion = path.with_name(path.name.replace(COLOUR_MARK, ALPHA_MARK))
    return companion if companion.is_file() else None


def is_alpha_half(name: str) -> bool:
    name = Path(str(name)).name.lower()
    return "wan_alpha" in name and ALPHA_MARK in name


def pair_alpha(colour, alpha) -> AlphaPair:
    """The Wan-Alpha pair of two loaded VAEs, or CheckpointError saying why they are not one."""
    for half, what in ((colour, "colour"), (alpha, "alpha")):
        if not isinstance(half, WanVAE) or half.out_channels != 3 or half.output_scale != half.spatial_scale:
            raise CheckpointError(f"Wan-Alpha's {what} half must be a full RGB Wan VAE decoder; {getattr(half, 'title', half)} is not.")
    a, b = colour.config, alpha.config
    if (a.version, a.z_dim, a.latents_mean, a.latents_std) != (b.version, b.z_dim, b.latents_mean, b.latents_std):
        raise CheckpointError(f"The two halves of a Wan-Alpha pair decode the same latents, but the colour half is {colour.title} "
                              f"and the alpha half {alpha.title}. Load wan_alpha_2.1_vae_rgb_channel with "
                              "wan_alpha_2.1_vae_alpha_channel (both Wan 2.1).")  # fmt: skip
    return AlphaPair(colour, alpha)


class AlphaPair(WanVAE):
    """The colour VAE (its model, its encoder) with the alpha decoder beside it: decodes give RGBA."""

    def __init__(self, colour: WanVAE, alpha: WanVAE) -> None:
        super().__init__(colour.model, colour.checkpoint)  # the same model: encodes, sizes and checks are the colour VAE's
        self.colour, self.alpha = colour, alpha

    out_channels = property(lambda self: 4, doc="RGB from the colour decoder, then the alpha decoder's red")

    kind = property(lambda self: f"Wan-Alpha ({self.colour.kind} with its alpha decoder)")
    title = property(lambda self: f"Wan-Alpha: {self.colour.title} with its alpha decoder")

    def to(self, device=None, dtype: torch.dtype | None = None, mixed: bool | None = None) -> AlphaPair:
        self.colour.to(device, dtype, mixed)
        self.alpha.to(device, dtype, mixed)
        return self

    def release_replicas(self) -> None:
        self.colour.release_replicas()
        self.alpha.release_replicas()

    def _halves(self, options: Options | None, normalized, settings) -> Options:
        """The options for each decoder: half the memory budget each, as both keep their history."""
        options = self.resolve_options(options, normalized, settings)
        budget = options.memory_budget
        return dataclasses.replace(options, memory_budget=budget // 2) if budget else options

    @torch.inference_mode()
    def decode_frames(self, latents: torch.Tensor, normalized: bool | None = None, *, options: Options | None = None,
                      dtype: torch.dtype = torch.float32, output_device="cpu", progress=None, cancel=None, preview=None,
                      **settings) -> Iterator[torch.Tensor]:  # fmt: skip
        """The colour decoder's chunks [N, H, W, 3] with the alpha decoder's red as a fourth channel."""
        options = self._halves(options, normalized, settings)
        done = {"colour": (0, 1), "alpha": (0, 1)}

        def counted(part):
            def report(current: int, total: int) -> None:
                done[part] = (current, total)
                if progress is not None:
                    progress(sum(d for d, _ in done.values()), sum(t for _, t in done.values()))

            return report

        colour = self.colour.decode_frames(latents, options=options, dtype=dtype, output_device=output_device,
                                       progress=counted("colour"), cancel=cancel)  # fmt: skip
        alpha = self.alpha.decode_frames(latents, options=options, dtype=dtype, output_device=output_device,
                                         progress=counted("alpha"), cancel=cancel)  # fmt: skip
        for frames in _joined(colour, alpha):
            if preview is not None:
                preview(frames[-1].float() / 255 if frames.dtype == torch.uint8 else frames[-1])
            yield frames

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, normalized: bool | None = None, *, options: Options | None = None,
               layout: str = "video", output_device=None, progress=None, cancel=None, preview=None,
               image_dtype: torch.dtype = torch.float32, **settings) -> torch.Tensor:  # fmt: skip
        """As WanVAE.decode, RGBA: the frames are filled into one output as the chunks come."""
        if layout not in ("video", "images"):
            raise SettingsError(f"layout must be 'video' or 'images', got {layout!r}.")
        z = self.check_latents(latents)
        b, t = z.shape[0], z.shape[2]
        frames = b * (1 + 4 * (t - 1))
        h, w = z.shape[-2] * self.output_scale, z.shape[-1] * self.output_scale
        device = torch.device(output_device) if output_device is not None else self.device
        out = torch.empty(frames, h, w, 4, dtype=image_dtype if layout == "images" else self.full_dtype, device=device)
        at = 0
        for chunk in self.decode_frames(z, normalized, options=options, output_device=device, progress=progress, cancel=cancel,
                                        preview=preview, **settings):  # fmt: skip
            out[at : at + chunk.shape[0]] = chunk
            at += chunk.shape[0]
        if layout == "images":
            return out
        return out.mul_(2).sub_(1).view(b, frames // b, h, w, 4).permute(0, 4, 1, 2, 3)


def _joined(colour: Iterator[torch.Tensor], alpha: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """RGBA chunks: each colour chunk with the alpha decoder's frames of the same span (its chunks may be cut
    differently), alpha = 1 - (1 - red) as the template computes it."""
    pending: torch.Tensor | None = None
    for rgb in colour:
        parts, need = [], rgb.shape[0]
        while need:
            if pending is None or pending.shape[0] == 0:
                pending = next(alpha)
            parts.append(pending[:need])
            need -= parts[-1].shape[0]
            pending = pending[parts[-1].shape[0] :]
        red = (parts[0] if len(parts) == 1 else torch.cat(parts))[..., :1]
        one = 255 if red.dtype == torch.uint8 else 1.0
        yield torch.cat([rgb, one - (one - red)], dim=-1)
