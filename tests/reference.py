"""diffusers `AutoencoderKLWan` as the numerical reference: seeded, perturbed models in real and reduced configs."""

from __future__ import annotations

import functools

import torch

from wan_vae.files.config import CONFIGS

# Reduced widths keep CI fast; the architecture (depth, attention, caches, patchify) is the real one.
REDUCED_WIDTHS = {"2.1": (16, 16), "2.2": (16, 32)}


def diffusers_kwargs(version: str, real: bool, in_channels: int = 3, out_channels: int = 3) -> dict:
    """AutoencoderKLWan's arguments; in/out_channels are pixel channels (4: RGBA; out 3 * s * s: an upscale decoder)."""
    cfg = CONFIGS[version]
    dim, dec = (cfg.dim, cfg.decoder_dim) if real else REDUCED_WIDTHS[version]
    kw = dict(
        base_dim=dim, decoder_base_dim=dec, z_dim=cfg.z_dim, in_channels=in_channels, out_channels=out_channels,
        latents_mean=list(cfg.latents_mean), latents_std=list(cfg.latents_std),
    )  # fmt: skip
    if version == "2.2":
        kw.update(is_residual=True, in_channels=4 * in_channels, out_channels=4 * out_channels, patch_size=2, scale_factor_spatial=16)
    return kw


@functools.lru_cache(maxsize=8)
def reference_model(version: str, real: bool = False, seed: int = 0, in_channels: int = 3, out_channels: int = 3):
    """A diffusers Wan VAE with every parameter perturbed (gammas away from 1, biases away from 0)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    model = AutoencoderKLWan(**diffusers_kwargs(version, real, in_channels, out_channels)).eval().requires_grad_(False)
    return perturbed(model, seed)


def perturbed(model, seed: int):
    """`model` with every gamma moved away from 1 and every bias away from 0 (seeded), so no weight is trivial."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def original_state_dict(version: str, real: bool = False, **channels) -> dict[str, torch.Tensor]:
    """The reference model's weights under the original Wan / ComfyUI names (channels: in_channels, out_channels)."""
    from wan_vae.files.key_names import diffusers_to_original

    sd = reference_model(version, real, **channels).state_dict()
    mapping = diffusers_to_original(sd, CONFIGS[version])
    return {mapping[k]: v for k, v in sd.items()}


def write_vae_file(path, version: str, dtype: torch.dtype = torch.bfloat16, real: bool = False, decoder_only: bool = False,
                   **channels):  # fmt: skip
    """A .safetensors VAE file as ComfyUI's repackaged ones are: original names, half precision by default; channels as
    in `diffusers_kwargs` (an RGBA VAE, an upscale decoder), `decoder_only` without the encoder (a decoder fine-tune)."""
    from safetensors.torch import save_file

    sd = original_state_dict(version, real, **channels)
    if decoder_only:
        sd = {k: v for k, v in sd.items() if not k.startswith(("encoder.", "conv1."))}
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, str(path))
    return path


def meta_reference(version: str):
    """The real-size diffusers model on the meta device: names and shapes without memory."""
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        return AutoencoderKLWan(**diffusers_kwargs(version, real=True))


@torch.no_grad()
def reference_decode(model, z: torch.Tensor) -> torch.Tensor:
    return model.decode(z).sample


@torch.no_grad()
def reference_encode(model, x: torch.Tensor) -> torch.Tensor:
    return model.encode(x).latent_dist.mode()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


def latents(version: str, shape=(1, 2, 6, 10), seed: int = 0) -> torch.Tensor:
    b, t, h, w = shape
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, CONFIGS[version].z_dim, t, h, w, generator=g)


def video(version: str, shape=(1, 5, 6, 10), seed: int = 0) -> torch.Tensor:
    """A random video [B, 3, F, h*s, w*s] in [-1, 1] for latent size h x w."""
    b, f, h, w = shape
    s = CONFIGS[version].spatial_scale
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, f, h * s, w * s, generator=g) * 2 - 1
