"""kijai's ComfyUI-WanVideoWrapper's VAE objects (its `WANVAE` type), read as they are: no file read, no copy.

The wrapper's WanVideo VAE Loader gives a `WanVideoVAE` (Wan 2.1, LightVAE with `pruning_rate`) or `WanVideoVAE38`
(Wan 2.2): an nn.Module whose `model` holds the network under the original Wan names (`model.decoder.conv1.weight`),
the decoder possibly wrapped by torch.compile (`model.decoder._orig_mod.`). Its Tiny VAE Loader gives a `TAEHV`
(taehv / taew2_x / lighttaew2_x, from the `vae_approx` folder). Versions read: 1.0.6 (the fetchable snapshot,
2025-03) and the 2026 files (`nodes_model_loading.py` @ee982da, `wanvideo/wan_video_vae.py` @bc83757).

Its sampler's latents are normalized ((raw - mean) / std): its VAE maps them back inside `decode`.
"""

from __future__ import annotations

import inspect
import logging

import torch

log = logging.getLogger("wan_vae")

FULL_CLASSES = ("WanVideoVAE", "WanVideoVAE38")
TINY_CLASSES = ("TAEHV",)
CHECKED_VERSIONS = "WanVideoWrapper 1.0.6 and its 2026 versions (wan_video_vae.py @bc83757)"

# The parameters (after self) the wrapper's decode and encode have had: 1.0.6 has the first five, the 2026 versions all.
# A version whose methods take only names from these lists is one whose calls the pack understands.
DECODE_PARAMETERS = ("hidden_states", "device", "tiled", "end_", "tile_size", "tile_stride", "pbar", "output_device", "output_dtype")
ENCODE_PARAMETERS = ("videos", "device", "tiled", "end_", "tile_size", "tile_stride", "pbar", "sample")


def is_wrapper_vae(vae) -> bool:
    """Whether `vae` is one of the wrapper's VAE objects (or a class of it this pack does not know, to be refused)."""
    return isinstance(vae, torch.nn.Module) and (
        type(vae).__name__ in FULL_CLASSES + TINY_CLASSES or hasattr(vae, "upsampling_factor") and hasattr(vae, "model")
    )


def check_wrapper_class(cls: type) -> None:
    """TypeError unless the wrapper class `cls` has decode and encode taking what the known versions take."""
    problems = []
    for method, known in (("decode", DECODE_PARAMETERS), ("encode", ENCODE_PARAMETERS)):
        function = getattr(cls, method, None)
        if not callable(function):
            problems.append(f"no {method}()")
            continue
        try:
            found = [p for p in inspect.signature(function).parameters if p != "self"]
        except (TypeError, ValueError):
            found = ["?"]
        unknown = [p for p in found if p not in known]
        if unknown or found[:2] != list(known[:2]):
            problems.append(f"{method}({', '.join(found)}), where the pack knows {method}({', '.join(known)}) and its first versions")
    if problems:
        raise TypeError(
            f"This pack reads kijai's WanVideoWrapper VAEs of {CHECKED_VERSIONS}; this one, {cls.__module__}.{cls.__qualname__}, "
            f"has {'; '.join(problems)}. Nothing was changed: load the VAE with Load Wan VAE instead, or use the wrapper's own "
            "nodes, until the pack is updated."
        )


def wrapper_weights(vae) -> tuple[dict[str, torch.Tensor], torch.dtype, str]:
    """The weights of a wrapper VAE (shared with it, not copied), the precision they are stored in, and a name for
    messages (a tiny decoder's file name, which tells whether it takes raw or normalized latents)."""
    name = type(vae).__name__
    if name not in FULL_CLASSES + TINY_CLASSES:
        raise TypeError(
            f"This WANVAE is a {type(vae).__module__}.{name}, which this pack does not know (it reads {', '.join(FULL_CLASSES)} "
            f"and {', '.join(TINY_CLASSES)} of {CHECKED_VERSIONS}). Load the VAE file with Load Wan VAE instead."
        )
    if name in FULL_CLASSES:
        check_wrapper_class(type(vae))
    sd = {k: v.detach() for k, v in vae.state_dict().items() if isinstance(v, torch.Tensor)}
    floats = [v.dtype for v in sd.values() if v.is_floating_point()]
    dtype = max(set(floats), key=floats.count) if floats else torch.float32
    if dtype.itemsize == 1:  # fp8 storage (an older loader's precision choice): computed in bf16, cast once
        log.info("WanVideoWrapper VAE stored as %s: the pack computes in bf16 from a bf16 copy of its weights", dtype)
        sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
        dtype = torch.bfloat16
    label = getattr(vae, "model_name", None) if name in TINY_CLASSES else None
    return sd, dtype, str(label or f"WanVideoWrapper's {name}")
