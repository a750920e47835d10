"""Latent files: ComfyUI `.latent`, a `.safetensors` with one (or a named) tensor, or a tensor saved with torch.save.

ComfyUI's `.latent` (core SaveLatent / LoadLatent) is a safetensors file with the tensor `latent_tensor`
and an empty `latent_format_version_0` marker; without the marker LoadLatent scales the latent by
1 / 0.18215 (a Stable Diffusion 1.x legacy), so files written here always carry it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from . import partials
from ..errors import CheckpointError, LatentError
from .checkpoint import read_tensor_file
from .config import MODELS_BY_LATENT_CHANNELS

COMFY_KEY = "latent_tensor"
COMFY_MARKER = "latent_format_version_0"
LEGACY_SCALE = 1.0 / 0.18215
LATENT_EXTENSIONS = (".latent", ".safetensors", ".sft", ".pt", ".pth", ".bin")
# Names pipelines and scripts give a latent tensor, tried in this order.
COMMON_KEYS = (COMFY_KEY, "samples", "latents", "latent", "z", "tensor")


def read_latent_file(path, key: str | None = None) -> torch.Tensor:
    """The latent tensor in `path`, as float32; `key` names it when the file holds several tensors."""
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise LatentError(f"No latent file at '{path}'.")
    tensors = _read_tensors(path)
    if COMFY_KEY in tensors and key in (None, "", COMFY_KEY):
        latent = tensors[COMFY_KEY].float()
        return latent if COMFY_MARKER in tensors else latent * LEGACY_SCALE
    if key:
        if key not in tensors:
            raise LatentError(f"'{path.name}' has no tensor named '{key}'; it has: {', '.join(tensors) or 'none'}.")
        return tensors[key].float()
    candidates = {k: v for k, v in tensors.items() if v.is_floating_point() and v.dim() >= 4}
    for name in COMMON_KEYS:
        if name in candidates:
            return candidates[name].float()
    if len(candidates) == 1:
        return next(iter(candidates.values())).float()
    found = ", ".join(f"{k} {list(v.shape)}" for k, v in tensors.items()) or "no tensors"
    raise LatentError(f"Cannot tell which tensor of '{path.name}' is the latent ({found}); name it with key=...")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = read_tensor_file(path)
    except CheckpointError as e:
        raise LatentError(str(e)) from None
    return {str(k): v for k, v in tensors.items() if isinstance(v, torch.Tensor)}


def write_latent_file(path, latent: torch.Tensor, metadata: Mapping[str, object] | None = None) -> Path:
    """Write a ComfyUI `.latent` file (core LoadLatent reads it unscaled); `metadata` values are JSON-encoded."""
    from safetensors.torch import save_file

    path = Path(os.fspath(path)).expanduser()
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tensors = {COMFY_KEY: latent.detach().cpu().contiguous(), COMFY_MARKER: torch.tensor([])}
    partials.remove_stale(path.parent)
    partial = partials.partial_path(path)  # a full disk leaves no truncated .latent behind
    try:
        save_file(tensors, str(partial), metadata=meta or None)
        os.replace(partial, path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise LatentError(f"Cannot save the latent as {path}: {e.strerror or e}.") from None
    return path


def describe_latent(latent: torch.Tensor) -> str:
    """Shape, frames and which VAE a latent needs, in a user's words."""
    shape = list(latent.shape)
    if latent.dim() == 4:
        latent = latent.unsqueeze(0)
    if latent.dim() != 5:
        return f"a {latent.dim()}-D tensor {shape}: not a Wan video latent (expected [batch, channels, frames, h, w])"
    b, c, t, h, w = latent.shape
    if c in MODELS_BY_LATENT_CHANNELS:
        vae, models = MODELS_BY_LATENT_CHANNELS[c]
        scale = 16 if c == 48 else 8
        return (f"latent {shape}: {b} video(s) of {t} latent frames -> {1 + 4 * (t - 1)} frames at "
                f"{w * scale}x{h * scale} px; made by {models}; needs the {vae} VAE")  # fmt: skip
    return f"latent {shape}: {c} channels, which no Wan VAE decodes (Wan 2.1: 16, Wan 2.2: 48)"
