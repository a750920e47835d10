"""LoadWanVAE: a Wan 2.1 or Wan 2.2 VAE file from ComfyUI's models/vae folder, as a WAN_VAE."""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch

from ..wan_vae import CheckpointError, WanVAE, load_vae
from ..wan_vae.alpha_pair import ALPHA_MARK, COLOUR_MARK, alpha_companion, is_alpha_half, pair_alpha
from ..wan_vae.device.precision import default_mixed
from . import comfy_host, wrapper_vae

log = logging.getLogger("wan_vae")

CATEGORY = "Wan VAE"
PRECISIONS = ["auto", "fp32", "bf16", "fp16", "bf16 mixed", "fp16 mixed"]  # new choices go at the end: saved workflows
DEVICES = ["auto", "cpu", "gpu", "all gpus"]
ALPHA_CHOICES = ["auto", "none"]  # then the files of models/vae: Wan-Alpha's alpha decoder


@dataclass
class LoadedWanVAE:
    """What flows through a WAN_VAE socket: the VAE (kept on the offload device) and where it decodes."""

    vae: WanVAE
    device: torch.device
    devices: list[torch.device] | None = None  # "all gpus" on a machine with several: tiles spread over them
    sampled_space: str = "raw"  # the latents the VAE's own samplers give ("normalized": WanVideoWrapper's); latent_space auto

    def __repr__(self) -> str:
        where = ", ".join(map(str, self.devices)) if self.devices else self.device
        return f"{self.vae.title.removeprefix('the ')} ({str(self.vae.dtype).removeprefix('torch.')}, decodes on {where})"


class LoadWanVAE:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a Wan VAE from ComfyUI/models/vae: the Wan 2.1 VAE (wan_2.1_vae.safetensors: Wan 2.1, Wan 2.2 14B, "
        "Qwen-Image) or the Wan 2.2 VAE (wan2.2_vae.safetensors: Wan 2.2 TI2V-5B). Original, ComfyUI and diffusers "
        "files in fp32, fp16 or bf16 all load (Qwen-Image's diffusers VAE too), Qwen-Image 2.1's image VAE "
        "(qwen_image_2.1_vae: RGBA pictures), and the variants: spacepxl's 2x upscale decoder (Wan2.1_VAE_upscale2x: "
        "twice the pixels at no extra decode cost), Qwen-Image-Layered's RGBA VAE, decoder-only fine-tunes, Wan-Alpha's "
        "pair (one decode, an RGBA video); and the fast lossy ones: LightX2V's LightVAE (lightvaew2_1), Matrix-Game 3's "
        "MG-LightVAE, Flash-VAED and the tiny decoders taew2_1, taew2_2, taew2_2_super, lighttaew2_1, lighttaew2_2. "
        "Anything else is refused with what it is."
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
                    "A file in ComfyUI/models/vae: wan_2.1_vae / wan2.2_vae / qwen_image_vae, a 2x upscale decoder, the "
                    "RGBA VAE of Qwen-Image-Layered, or a fast lossy one (lightvaew2_1, MG-LightVAE, taew2_1, taew2_2, "
                    "taew2_2_super, lighttaew2_1, lighttaew2_2). The console says what the file turned out to be.")}),
                "precision": (PRECISIONS, {"default": "auto", "tooltip": (
                    "auto: bf16 on GPUs that support it, fp32 on the CPU. bf16/fp16 on a GPU run every convolution "
                    "in half precision (tensor cores throughout: the fastest, within about 2% of fp32, as close as "
                    "diffusers' bf16); on the CPU only the heavy ones. bf16 mixed / fp16 mixed: the heavy convolutions "
                    "in half precision and the rest in fp32, also on a GPU: within 1% of fp32, a little slower. "
                    "fp32 is the reference precision; fp16 can overflow on rare inputs.")}),
                "device": (DEVICES, {"default": "auto", "tooltip": (
                    "Where decoding runs. auto follows ComfyUI (its GPU, or the CPU with --cpu / --cpu-vae). "
                    "all gpus: every GPU of the machine decodes tiles (and videos of a batch) at once, each with a "
                    "copy of the weights; the frames are the same as on one GPU, and with one GPU it is 'gpu'. "
                    "Between runs the VAE waits in system memory.")}),
            },
            "optional": {
                "alpha_vae_name": (ALPHA_CHOICES + comfy_host.vae_filenames(), {"default": "auto", "tooltip": (
                    "Wan-Alpha: the alpha decoder that goes with vae_name's colour decoder, so that one decode gives RGBA "
                    "(the alpha is its red channel, as the official template takes it). auto: wan_alpha_..._rgb_channel "
                    "finds its ..._alpha_channel beside it; none: never. Any other VAE decodes as it is.")}),
            },
        }  # fmt: skip

    def load(self, vae_name: str, precision: str, device: str, alpha_vae_name: str = "auto"):
        targets = comfy_host.compute_devices(device)
        dtype = comfy_host.compute_dtype(precision.removesuffix(" mixed"), targets[0])
        mixed = precision.endswith(" mixed") or default_mixed(targets[0])  # for where it decodes, not where it waits
        path = comfy_host.vae_file(vae_name)
        if is_alpha_half(vae_name):
            colour = vae_name.replace(ALPHA_MARK, COLOUR_MARK)
            raise CheckpointError(f"{vae_name} is Wan-Alpha's alpha decoder, which decodes only the alpha of what its colour "
                                  f"half decodes: load {colour} as vae_name; alpha_vae_name auto pairs this file with it.")  # fmt: skip
        alpha_path = alpha_companion(path) if alpha_vae_name == "auto" else None
        if alpha_vae_name not in ALPHA_CHOICES:
            alpha_path = comfy_host.vae_file(alpha_vae_name)
        vae = load_vae(path, device=comfy_host.offload_device(), dtype=dtype, mixed=mixed)
        if alpha_path is not None:
            alpha = load_vae(alpha_path, device=comfy_host.offload_device(), dtype=dtype, mixed=mixed)
            vae = pair_alpha(vae, alpha)
        loaded = LoadedWanVAE(vae, targets[0], targets if len(targets) > 1 else None)
        log.info("Load Wan VAE: %s: %s", vae_name, loaded)
        return (loaded,)


# Core's and WanVideoWrapper's VAEs already turned into ours, for as long as they live (the weights are shared, not copied).
_FROM_CORE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def as_wan_vae(vae) -> LoadedWanVAE:
    """What a node's `vae` input got, as ours: Load Wan VAE's WAN_VAE as it is; core Load VAE's VAE holding a Wan VAE, or
    kijai's WanVideoWrapper's WANVAE, turned into ours once from its weights (no second read of the file, no copy of the
    weights) and decoding where Load Wan VAE's auto would, in the precision the wrapper's VAE was loaded in."""
    if isinstance(vae, LoadedWanVAE):
        return vae
    if isinstance(getattr(vae, "wan_loaded", None), LoadedWanVAE):  # Wan VAE for Core Nodes' / WanVideoWrapper's: the one it runs
        on_device = getattr(vae, "wan_on_device", None)  # core's object: where Select VAE Device may have sent it since
        return on_device() if callable(on_device) else vae.wan_loaded
    cached = _FROM_CORE.get(vae) if _weakrefable(vae) else None
    if cached is not None:
        return cached
    device = comfy_host.compute_device("auto")
    if wrapper_vae.is_wrapper_vae(vae):
        weights, dtype, name = wrapper_vae.wrapper_weights(vae)  # refuses a class or version it does not know
        wan = _load(weights, name, dtype, device, f"WanVideoWrapper's {type(vae).__name__}", "the wrapper's own nodes")
        cached = LoadedWanVAE(wan, device, sampled_space="normalized")  # its sampler's latents are normalized
    else:
        weights, held = comfy_host.core_vae_weights(vae)  # checks what it is; the weights are not copied
        device = vae.device if isinstance(getattr(vae, "device", None), torch.device) else device  # Select VAE Device's
        cached = LoadedWanVAE(_load(weights, "core Load VAE's VAE", comfy_host.compute_dtype("auto", device), device, held, "core VAE Decode"),
                              device)  # fmt: skip
    if _weakrefable(vae):
        _FROM_CORE[vae] = cached
    return cached


def _load(weights: dict, name: str, dtype: torch.dtype, device: torch.device, held: str, instead: str) -> WanVAE:
    try:
        return load_vae(weights, device=comfy_host.offload_device(), dtype=dtype, name=name, mixed=default_mixed(device))
    except CheckpointError as e:
        raise CheckpointError(f"{e} It holds {held}. The Wan nodes take the Wan 2.1 or Wan 2.2 VAE and their variants (or "
                              f"the tiny decoders); decode this one with {instead}.") from None  # fmt: skip


def _weakrefable(obj) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True
