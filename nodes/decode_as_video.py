"""WanDecodeAsVideo: Wan latents as ComfyUI's VIDEO, decoded only when a node asks (lazy_video.py).

Core Save Video then decodes them chunk by chunk straight into its file (memory flat in the number of frames), Get
Video Components decodes the whole video, and nothing is decoded for a VIDEO that no node reads.
"""

from __future__ import annotations

from .decode import DECODE_INPUTS
from .export import EXPORT_OPTIONAL, export_inputs
from .lazy_video import LatentVideo
from .load_vae import CATEGORY


class WanDecodeAsVideo:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Wan video latents as ComfyUI's VIDEO, for core Save Video, Get Video Components and every node that takes a "
        "VIDEO. Nothing is decoded here: Save Video decodes a few frames at a time straight into its file (memory stays "
        "the same for 80 frames or 8,000), Get Video Components decodes the whole video. The same exact decode "
        "(tiles, chunks, progress, previews, Stop) as Wan Decode to Video."
    )
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The video, decoded when a node reads it; its size, length and frame rate are known without decoding.",)
    FUNCTION = "as_video"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": DECODE_INPUTS | {"fps": export_inputs()["fps"]},
                "optional": {"audio": (EXPORT_OPTIONAL["audio"][0], {"tooltip": "Attached to the video: Save Video muxes it in."})}}  # fmt: skip

    def as_video(self, vae, samples, latent_space, tiling, tile_size, tile_overlap, frames_per_chunk, fps, audio=None):
        settings = (latent_space, tiling, tile_size, tile_overlap, frames_per_chunk)
        return (LatentVideo(vae, samples, settings, fps, audio),)
