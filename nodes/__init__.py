"""The ComfyUI nodes: thin adapters over wan_vae (every node in the file named after it)."""

from .decode import WanDecodeLatents
from .decode_as_video import WanDecodeAsVideo
from .decode_to_video import WanDecodeToVideo
from .encode import WanEncode
from .core_vae import WanVAEForCoreNodes
from .vae_for_wrapper import WanVAEForWanVideoWrapper
from .export import ExportVideo, clean_output_folder
from .load_latent import LoadWanLatent
from .load_vae import LoadWanVAE

# Node names and widget order are a public contract: saved workflows refer to them.
NODE_CLASS_MAPPINGS = {
    "LoadWanVAE": LoadWanVAE,
    "WanDecodeLatents": WanDecodeLatents,
    "ExportVideo": ExportVideo,
    "LoadWanLatent": LoadWanLatent,
    "WanDecodeToVideo": WanDecodeToVideo,
    "WanEncode": WanEncode,
    "WanVAEForCoreNodes": WanVAEForCoreNodes,
    "WanVAEForWanVideoWrapper": WanVAEForWanVideoWrapper,
    "WanDecodeAsVideo": WanDecodeAsVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadWanVAE": "Load Wan VAE",
    "WanDecodeLatents": "Wan Decode Latents",
    "ExportVideo": "Export Video",
    "LoadWanLatent": "Load Wan Latent (.safetensors / .pt)",
    "WanDecodeToVideo": "Wan Decode to Video",
    "WanEncode": "Wan Encode",
    "WanVAEForCoreNodes": "Wan VAE for Core Nodes",
    "WanVAEForWanVideoWrapper": "Wan VAE for WanVideoWrapper",
    "WanDecodeAsVideo": "Wan Decode as VIDEO",
}

clean_output_folder()  # partial files of runs that were killed (a crashed ComfyUI) go when the pack loads
