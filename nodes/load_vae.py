"""LoadWanVAE: a Wan 2.1 or Wan 2.2 VAE file from ComfyUI's models/vae folder, as a WAN_VAE."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..wan_vae import CheckpointError, WanVAE, load_vae
from . import comfy_host

CATEGORY = "Wan VAE"
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
DEVICES = ["auto", "cpu", "gpu", "all gpus"]


@dataclass
class LoadedWanVAE:
    """What flows through a WAN_VAE socket: the VAE (kept on the offload device) and where it decodes."""

    vae: WanVAE
    device: torch.device
    devices: list[torch.device] | None = None  # "all gpus" on a machine with several: tiles spread over them

    def __repr__(self) -> str:
        where = ", ".join(map(str, self.devices)) if self.devices else self.device
        return f"{self.vae.title.removeprefix('the ')} ({str(self.vae.dtype).removeprefix('torch.')}, decodes on {where})"


class LoadWanVAE:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a Wan VAE from ComfyUI/models/vae: the Wan 2.1 VAE (wan_2.1_vae.safetensors: Wan 2.1, Wan 2.2 14B, "
        "Qwen-Image) or the Wan 2.2 VAE (wan2.2_vae.safetensors: Wan 2.2 TI2V-5B). Original, ComfyUI and diffusers "
        "files in fp32, fp16 or bf16 all load, and the fast lossy ones: LightX2V's LightVAE (lightvaew2_1) and the "
        "tiny decoders taew2_1, taew2_2, lighttaew2_1, lighttaew2_2. Anything else is refused with what it is."
    )
    RETURN_TYPES = ("WAN_VAE",)
    RETURN_NAMES = ("wan_vae",)
    OUTPUT_TOOLTIPS = ("The VAE, for Wan Decode Latents and Wan Decode to Video.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_name": (comfy_host.vae_filenames(), {"tooltip": (
                    "A file in ComfyUI/models/vae: wan_2.1_vae / wan2.2_vae, or a fast lossy one (lightvaew2_1, "
                    "taew2_1, taew2_2, lighttaew2_1, lighttaew2_2).")}),
                "precision": (PRECISIONS, {"default": "auto", "tooltip": (
                    "auto: bf16 on GPUs that support it, fp32 on the CPU. bf16/fp16 run the heavy convolutions "
                    "in half precision and the rest in fp32: faster and smaller, within 1% of fp32. "
                    "fp32 is the reference precision; fp16 can overflow on rare inputs.")}),
                "device": (DEVICES, {"default": "auto", "tooltip": (
                    "Where decoding runs. auto follows ComfyUI (its GPU, or the CPU with --cpu / --cpu-vae). "
                    "all gpus: every GPU of the machine decodes tiles (and videos of a batch) at once, each with a "
                    "copy of the weights; the frames are the same as on one GPU, and with one GPU it is 'gpu'. "
                    "Between runs the VAE waits in system memory.")}),
            }
        }  # fmt: skip

    def load(self, vae_name: str, precision: str, device: str):
        targets = comfy_host.compute_devices(device)
        dtype = comfy_host.compute_dtype(precision, targets[0])
        vae = load_vae(comfy_host.vae_file(vae_name), device=comfy_host.offload_device(), dtype=dtype)
        return (LoadedWanVAE(vae, targets[0], targets if len(targets) > 1 else None),)


# Core VAEs already turned into ours, for as long as ComfyUI keeps them (the weights are shared, not copied).
_FROM_CORE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def as_wan_vae(vae) -> LoadedWanVAE:
    """What a decode node's `vae` input got: Load Wan VAE's WAN_VAE as it is, or core Load VAE's VAE holding a Wan VAE,
    turned into ours once from its weights (no second read of the file) and decoding where Load Wan VAE's auto would."""
    if isinstance(vae, LoadedWanVAE):
        return vae
    if isinstance(getattr(vae, "wan_loaded", None), LoadedWanVAE):  # Wan VAE for Core Nodes' VAE: the one it runs
        return vae.wan_loaded
    weights, held = comfy_host.core_vae_weights(vae)  # checks what it is; the weights are not copied
    cached = _FROM_CORE.get(vae)
    if cached is None:
        device = comfy_host.compute_device("auto")
        try:
            wan = load_vae(weights, device=comfy_host.offload_device(), dtype=comfy_host.compute_dtype("auto", device),
                           name="core Load VAE's VAE")  # fmt: skip
        except CheckpointError as e:
            raise CheckpointError(f"{e} It holds {held}. Wan Decode takes the Wan 2.1 or Wan 2.2 VAE (or Load Wan VAE's "
                                  "tiny decoders); decode this one with core VAE Decode.") from None  # fmt: skip
        cached = _FROM_CORE[vae] = LoadedWanVAE(wan, device)
    return cached
