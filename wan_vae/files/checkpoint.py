"""Reading Wan VAE checkpoints: every file form users have, detected from content, loaded strictly.

Forms: `.safetensors` / `.sft`, PyTorch `.pth` / `.pt` / `.ckpt` / `.bin` (weights only: never unpickles
code), a diffusers `vae` folder, or an in-memory state dict. Naming: original Wan / ComfyUI
(`decoder.upsamples.4.residual.2.weight`) or diffusers (`decoder.up_blocks.1.resnets.0.conv1.weight`),
with or without a leading `vae.` or `model.`. Storage in fp32, fp16 or bf16.
Facts: shared/reference/wan_reference.md section 3 (key formats, mapping, version-identifying shapes).
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import CheckpointError
from .config import CONFIGS, WanVAEConfig
from .key_names import diffusers_to_original

STRIPPABLE_PREFIXES = ("vae.", "model.")
# Where training checkpoints keep the weights: {"state_dict": {...}}; Matrix-Game 3's MG-LightVAE: {"generator": {...}}.
WRAPPER_KEYS = ("state_dict", "generator")
# Tensors a trainer saved beside the VAE that no decode uses, dropped as their own loaders drop them (MG-LightVAE's
# distillation heads; LightX2V's vae_2_2.py loads without them).
TRAINING_ONLY = ("dynamic_feature_projection_heads",)
DIFFUSERS_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint turned out to be."""

    source: str
    version: str
    naming: str  # "original" (Wan / ComfyUI) or "diffusers"
    prefix: str  # stripped leading prefix, "" if none
    storage_dtypes: tuple[str, ...]
    tensors: int
    parameters: int
    config: WanVAEConfig

    def describe(self) -> str:
        names = "original Wan / ComfyUI names" if self.naming == "original" else "diffusers names"
        prefix = f", prefix '{self.prefix}' stripped" if self.prefix else ""
        pruned = f" {self.config.pruning()}" if self.config.pruning() else ""
        return (
            f"{self.config.name()}{pruned} ({self.config.z_dim} latent channels, {self.config.output_scale}x spatial), "
            f"{names}{prefix}, stored as {'/'.join(self.storage_dtypes)}, "
            f"{self.tensors} tensors, {self.parameters / 1e6:.1f}M parameters"
        )


# ----------------------------------------------------------------------------------------- reading


def read_state_dict(source) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors from a path (file or diffusers folder) or a mapping, with a name for messages."""
    if isinstance(source, Mapping):
        return dict(source), "the given state dict"
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return _read_diffusers_folder(path), str(path)
    if not path.is_file():
        raise CheckpointError(f"No VAE file at '{path}'. Check the path (models go in ComfyUI/models/vae).")
    return read_tensor_file(path), str(path)


def read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in a .safetensors or PyTorch file, told apart by content, never by extension.

    PyTorch files load with weights_only=True: a file that would run code is refused. A training
    checkpoint's "state_dict" (or "generator") entry is unwrapped; a bare tensor comes back as {"tensor": t}.
    Empty, truncated or corrupt files raise CheckpointError saying so.
    """
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"'{path}' is empty (0 bytes). The download was probably interrupted: download it again.")
    with open(path, "rb") as f:
        magic = f.read(9)
    # safetensors: 8-byte header length, then the JSON header; torch: a zip archive or a legacy pickle.
    if magic[8:9] != b"{" and (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        return _read_torch(path)
    return _read_safetensors(path, size)


def _read_safetensors(path: Path, size: int) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError, MemoryError) as e:
        raise CheckpointError(
            f"'{path}' ({size:,} bytes) is not a readable .safetensors file: {e}. "
            "It is probably truncated or corrupt (an interrupted download?): download it again."
        ) from None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"Refused to load '{path}': it holds Python objects other than plain tensors, and loading them "
            f"could run code (torch.load with weights_only=True said: {first_line}). "
            "Use a .safetensors copy instead."
        ) from None
    except Exception as e:  # noqa: BLE001 - whatever torch.load says of outside bytes (zip, pickle, safetensors inside)
        raise CheckpointError(
            f"'{path}' is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}). "
            "It is probably truncated or corrupt: download it again."
        ) from None
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}
    for _ in range(len(WRAPPER_KEYS) + 1):  # bounded: a hostile pickle can hold a dict that contains itself
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"'{path}' holds a {type(obj).__name__}, not tensors.")
    return dict(obj)


# Qwen-Image's: the Wan 2.1 network, 3 or 4 channels; Qwen-Image 2.1's: the Wan 2.2 network with 2-D kernels
DIFFUSERS_CLASSES = ("AutoencoderKLWan", "AutoencoderKLQwenImage", "AutoencoderKLQwenImage21")


def _read_diffusers_folder(path: Path) -> dict[str, torch.Tensor]:
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"  # a whole pipeline folder: use its vae/
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"'{path}' is a folder without config.json. Give a VAE file, or a diffusers 'vae' folder "
            "(config.json + diffusion_pytorch_model.safetensors)."
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise CheckpointError(f"'{config_file}' is not valid JSON ({e}).") from None
    class_name = config.get("_class_name", "") if isinstance(config, dict) else ""
    if class_name and class_name not in DIFFUSERS_CLASSES:
        raise CheckpointError(f"'{path}' holds a diffusers {class_name}, not a Wan VAE ({' or '.join(DIFFUSERS_CLASSES)}).")
    for name in DIFFUSERS_WEIGHT_FILES:
        if (path / name).is_file():
            sd = read_state_dict(path / name)[0]
            _check_diffusers_config(config if isinstance(config, dict) else {}, sd, path)
            conv_in = sd.get("decoder.conv_in.weight")
            flat = isinstance(conv_in, torch.Tensor) and conv_in.dim() == 4
            if class_name and (class_name == "AutoencoderKLQwenImage21") != flat:
                kind = "2-D" if flat else "3-D"
                raise CheckpointError(f"'{path}': config.json names a {class_name}, but the weights have {kind} kernels: the "
                                      "folder's files do not belong together.")  # fmt: skip
            return sd
    raise CheckpointError(f"'{path}' has config.json but none of {', '.join(DIFFUSERS_WEIGHT_FILES)}.")


def _check_diffusers_config(config: dict, sd: Mapping[str, torch.Tensor], path: Path) -> None:
    """The config.json's sizes agree with the tensors, and its latents mean/std are the Wan VAE's (the pack uses those):
    a folder whose config says otherwise is refused rather than decoded with the wrong normalization."""

    def shape(key: str, dim: int) -> int | None:
        t = sd.get(key)
        return t.shape[dim] if isinstance(t, torch.Tensor) and t.dim() > dim else None

    pixels_in = config.get("input_channels", config.get("in_channels"))  # Qwen-Image's name, then AutoencoderKLWan's
    pixels_out = config.get("input_channels", config.get("out_channels"))
    checks = [("z_dim", config.get("z_dim"), shape("decoder.conv_in.weight", 1)),
              ("in/input_channels", pixels_in, shape("encoder.conv_in.weight", 1)),
              ("out/input_channels", pixels_out, shape("decoder.conv_out.weight", 0))]  # fmt: skip
    for what, said, found in checks:
        if said is not None and found is not None and said != found:
            raise CheckpointError(f"'{path}': config.json says {what} {said}, but the weights have {found}: the folder's files "
                                  "do not belong together.")  # fmt: skip
    z_dim = shape("decoder.conv_in.weight", 1)
    standard = next((c for c in CONFIGS.values() if c.z_dim == z_dim), None)
    for key, values in (("latents_mean", standard and standard.latents_mean), ("latents_std", standard and standard.latents_std)):
        said = config.get(key)
        if values and isinstance(said, list) and (len(said) != len(values) or any(abs(a - b) > 1e-4 for a, b in zip(said, values))):
            raise CheckpointError(f"'{path}': config.json's {key} differs from the Wan VAE's; the pack normalizes latents with "
                                  "the Wan VAE's own, so this VAE's normalized latents would come out wrong.")  # fmt: skip


# ----------------------------------------------------------------------------------------- detection


def strip_prefix(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    stripped = ""
    while sd:
        for prefix in STRIPPABLE_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                stripped += prefix
                break
        else:
            return sd, stripped
    return sd, stripped


def _what_is_it(sd: Mapping[str, object]) -> str:
    """A short description of a state dict that is not a Wan VAE, for the error message."""
    keys = list(sd)
    if not keys:
        return "it holds no tensors at all"
    conv_in = sd.get("decoder.conv_in.weight")
    if isinstance(conv_in, torch.Tensor) and conv_in.dim() == 4 and any(k.endswith(".gamma") for k in keys):
        return (  # RMS norms' gammas are the Wan family's; 2-D kernels with them: diffusers' AutoencoderKLQwenImage21
            f"it looks like a Wan-family VAE with 2-D kernels (as Qwen-Image 2.1's, AutoencoderKLQwenImage21), but with "
            f"{conv_in.shape[1]}-channel latents where Qwen-Image 2.1's have 64"
        )
    if isinstance(conv_in, torch.Tensor) and conv_in.dim() == 4:
        return (
            f"it looks like an image VAE (Stable Diffusion / SDXL / Flux style): decoder.conv_in.weight is a 2-D "
            f"conv {list(conv_in.shape)} for {conv_in.shape[1]}-channel latents"
        )
    if "decoder.22.bias" in sd or "decoder.3.conv.0.weight" in sd:
        return "it looks like a tiny preview VAE (TAEHV / taew2_1 / lighttae), not the full Wan VAE"
    joined = " ".join(keys[:2000])
    for marker, what in (
        ("diffusion_model.", "a diffusion model (UNet / DiT) checkpoint"),
        ("input_blocks.", "a UNet checkpoint"),
        ("down_blocks.", "a diffusers UNet or image VAE"),
        ("blocks.0.self_attn", "a Wan diffusion transformer (the video model itself, not its VAE)"),
        ("transformer_blocks.", "a diffusion transformer checkpoint"),
        ("text_model.", "a text encoder"),
        ("lora_", "a LoRA"),
    ):
        if marker in joined:
            return f"it looks like {what}"
    return f"its {len(keys)} tensors have names like {', '.join(keys[:3])}"


def detect(sd: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(version, naming) of a prefix-free state dict, or CheckpointError naming what it is instead."""
    conv_in = sd.get("decoder.conv_in.weight")
    if "decoder.middle.0.residual.2.depthwise_conv.weight" in sd:  # network/flash_vaed.py's marker: load_vae reads it
        raise CheckpointError("This is Flash-VAED's distilled Wan 2.1 decoder, a different network from the Wan VAE's; "
                              "load_vae and Load Wan VAE load it as such.")  # fmt: skip
    if isinstance(sd.get("decoder.conv1.weight"), torch.Tensor) and "decoder.middle.0.residual.0.gamma" in sd:
        naming, conv = "original", sd["decoder.conv1.weight"]
        nested = any(k.startswith("decoder.upsamples.0.upsamples.") for k in sd)
    elif isinstance(conv_in, torch.Tensor) and (conv_in.dim() == 5 or conv_in.dim() == 4 and "decoder.norm_out.gamma" in sd):
        naming, conv = "diffusers", conv_in  # 4-D: AutoencoderKLQwenImage21, whose convs are nn.Conv2d
        nested = any(k.startswith("decoder.up_blocks.0.upsampler.") for k in sd)
    else:
        raise CheckpointError(f"This is not a Wan VAE: {_what_is_it(sd)}.")
    z_dim, flat = conv.shape[1], conv.dim() == 4 or conv.shape[2] == 1  # 2-D kernels (5-D of time size 1 in ComfyUI's file)
    version = {16: "2.1", 48: "2.2", 64: "qwen-image-2.1"}.get(z_dim)
    if version is None or flat != CONFIGS[version].images_only:
        kernels = "2-D kernels" if flat else "3-D kernels"
        raise CheckpointError(
            f"This Wan-style VAE has {z_dim} latent channels and {kernels}; the VAEs known are Wan 2.1 (16, 3-D), Wan 2.2 "
            f"(48, 3-D) and Qwen-Image 2.1 (64, 2-D), with their variants (RGBA, upscale decoders, Qwen-Image's VAE)."
        )
    if nested != CONFIGS[version].is_residual:
        layout = "Wan 2.2 (nested stages)" if nested else "Wan 2.1 (flat stages)"
        raise CheckpointError(
            f"Inconsistent checkpoint: {z_dim} latent channels means the {CONFIGS[version].title} VAE, but its layout is {layout}."
        )
    return version, naming


def _config_for(version: str, sd: Mapping[str, torch.Tensor], name: str) -> WanVAEConfig:
    """The config, with widths and pixel channels read from shapes (real files give the standard widths).

    Pixel channels: the encoder's entry conv takes 3 (RGB) or 4 (RGBA) per patch pixel, the decoder's head
    gives 3, 4 or 3 * s * s (an s-times upscale decoder, pixel-shuffled); comfy/sd.py reads the same two
    tensors (encoder.conv1.weight's inputs, decoder.head.2.weight's outputs). No encoder tensors at all: a
    decoder-only file (its quant conv, if any, is dropped: it only ever follows the encoder).
    """
    cfg = CONFIGS[version]
    p2 = cfg.patch_size**2
    enc = sd.get("encoder.conv1.weight")
    dec = sd.get("decoder.head.0.gamma")
    head = sd.get("decoder.head.2.weight")
    out_channels, upscale = _output_form(head.shape[0], cfg, name) if isinstance(head, torch.Tensor) else (3, 1)
    has_encoder = any(k.startswith("encoder.") for k in sd)
    in_channels = out_channels
    if isinstance(enc, torch.Tensor):
        if enc.shape[1] not in (3 * p2, 4 * p2):
            raise CheckpointError(
                f"{name}: encoder.conv1.weight takes {enc.shape[1]} channels; the {CONFIGS[version].title} VAE files known take "
                f"{3 * p2} (RGB) or {4 * p2} (RGBA){' after 2x2 patches' if p2 > 1 else ''}. This file is not one of them."
            )
        in_channels = enc.shape[1] // p2
    return replace(
        cfg.with_widths(dim=enc.shape[0] if isinstance(enc, torch.Tensor) else cfg.dim,
                        decoder_dim=dec.shape[0] if isinstance(dec, torch.Tensor) else cfg.decoder_dim),
        in_channels=in_channels, out_channels=out_channels, upscale=upscale, has_encoder=has_encoder,
    )  # fmt: skip


def _output_form(channels: int, cfg: WanVAEConfig, name: str) -> tuple[int, int]:
    """(pixel channels, upscale factor) of a decoder head giving `channels`, or CheckpointError naming them."""
    p2 = cfg.patch_size**2
    per_pixel = channels // p2 if channels % p2 == 0 else 0
    s = math.isqrt(per_pixel // 3) if per_pixel % 3 == 0 else 0
    if per_pixel == 4:
        return 4, 1
    if s >= 1 and 3 * s * s == per_pixel and (s == 1 or p2 == 1):
        return 3, s
    known = f"{3 * p2} (RGB) or {4 * p2} (RGBA)" if p2 > 1 else "3 (RGB), 4 (RGBA) or 3 x s x s (an s-times upscale decoder: 12 for 2x)"
    raise CheckpointError(
        f"{name}: decoder.head.2.weight gives {channels} channels; the {cfg.title} decoders known give {known}. "
        "This file is not one of them."
    )


def _list(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def check_against(sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], what: str) -> None:
    """Strict loading: missing, unexpected and wrong-shape tensors are one error listing them."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        f"{k} {list(sd[k].shape)} (expected {list(expected[k])})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_list(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {_list(wrong, 6)}")
    if problems:
        raise CheckpointError(f"{what} does not match the Wan VAE architecture: " + "; ".join(problems) + ".")


def prepare_state_dict(source, name: str | None = None) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Read, strip, detect and rename a checkpoint into the original key layout; no model built yet."""
    raw, read_name = read_state_dict(source)
    name = name or read_name
    non_tensors = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(f"{name} holds entries that are not tensors ({_list(non_tensors, 5)}); is it a VAE file?")
    kept = {k: v for k, v in uncompiled(raw).items() if not set(k.split(".")) & set(TRAINING_ONLY)}
    sd, prefix = strip_prefix(kept)
    try:
        version, naming = detect(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{name}: {e}") from None
    if naming == "diffusers":
        cfg0 = CONFIGS[version]
        renamed = diffusers_to_original(sd, cfg0)
        unknown = [k for k, v in renamed.items() if v is None]
        if unknown:
            raise CheckpointError(f"{name}: diffusers-named Wan VAE with unexpected tensors: {_list(unknown)}.")
        sd = {renamed[k]: v for k, v in sd.items()}
    if CONFIGS[version].images_only:
        sd = with_time_axis(sd)
    cfg = _config_for(version, sd, name)
    if not cfg.has_encoder:
        sd = {k: v for k, v in sd.items() if not k.startswith("conv1.")}
    dtypes = tuple(sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()}))
    info = CheckpointInfo(
        source=name, version=version, naming=naming, prefix=prefix, storage_dtypes=dtypes, tensors=len(sd),
        parameters=sum(math.prod(v.shape) for v in sd.values()), config=cfg,
    )  # fmt: skip
    return sd, info


def with_time_axis(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An image VAE's 2-D conv weights (diffusers' nn.Conv2d) as the 5-D causal-conv weights of time size 1 the network
    holds (ComfyUI's file has them so already); the attention's and the resample's convs are 2-D in every layout."""
    planar = (".middle.1.", ".resample.")
    return {k: v.unsqueeze(2) if v.dim() == 4 and k.endswith(".weight") and not any(p in k for p in planar) else v
            for k, v in sd.items()}  # fmt: skip


def uncompiled(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of a module some part of which was wrapped by torch.compile (kijai's wrapper compiles the
    decoder: `model.decoder._orig_mod.conv1.weight`), under the plain names."""
    if not any("_orig_mod." in k for k in sd):
        return dict(sd)
    return {k.replace("._orig_mod.", ".").removeprefix("_orig_mod."): v for k, v in sd.items()}
