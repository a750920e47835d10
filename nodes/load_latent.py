"""LoadWanLatent: latents saved outside ComfyUI (.safetensors or torch .pt), which core Load Latent cannot read."""

from __future__ import annotations

from ..wan_vae.files.latents import LATENT_EXTENSIONS, read_latent_file
from . import comfy_host
from .load_vae import CATEGORY


class LoadWanLatent:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads video latents from ComfyUI/input: ComfyUI .latent files, a .safetensors holding the latent tensor "
        "(diffusers pipelines with output_type='latent'), or a tensor saved with torch.save (.pt). Core Load Latent "
        "reads only .latent. Diffusers latents are usually normalized: set Wan Decode Latents to 'normalized'."
    )
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("The latent, as a LATENT for Wan Decode Latents.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent_file": (comfy_host.input_filenames(LATENT_EXTENSIONS), {"tooltip": "A latent file in ComfyUI/input."}),
                "tensor_name": ("STRING", {"default": "", "tooltip": (
                    "Which tensor, when the file holds several; empty picks latent_tensor, samples, latents, or "
                    "the only 4-D/5-D tensor.")}),
            }
        }  # fmt: skip

    @classmethod
    def IS_CHANGED(cls, latent_file, tensor_name):
        import hashlib

        with open(comfy_host.input_file(latent_file), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() + tensor_name

    def load(self, latent_file: str, tensor_name: str):
        return ({"samples": read_latent_file(comfy_host.input_file(latent_file), tensor_name or None)},)
