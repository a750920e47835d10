"""WanDecodeToVideo: Wan latents decoded straight into a video file, chunk by chunk: memory does not grow with length.

The decode of Wan Decode Latents (decode.py) streamed into the writer of Export Video (export.py); no tensor
of the whole video exists. The latent is saved beside the video first, so a stopped or failed run loses nothing.
"""

from __future__ import annotations

import torch

from ..wan_vae import write_video
from ..wan_vae.files.latents import write_latent_file
from . import comfy_host
from .decode import DECODE_INPUTS, kept_on_failure, run_decode, video_latents
from .export import EXPORT_OPTIONAL, HIDDEN, PLAYBACK_OPTIONAL, choose_output, export_inputs, played, saved
from .lazy_video import NoVideo
from .load_vae import CATEGORY, as_wan_vae


class WanDecodeToVideo:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Decodes Wan video latents straight into a video file, a few frames at a time: memory stays the same for "
        "80 frames or 8,000, where Wan Decode Latents -> Export Video holds every frame (11 MB per 720p frame). The "
        "same exact decode (tiles, chunks) and the same formats as Export Video. The latent is saved beside the video "
        "first (wan_00001_.latent), so a run that is stopped or fails can be decoded again from Load Latent."
    )
    RETURN_TYPES = ("STRING", "VIDEO")
    RETURN_NAMES = ("path", "video")
    OUTPUT_TOOLTIPS = ("Full path of the saved video (a folder for PNG frames).",
                       "The saved file as ComfyUI's VIDEO (for Save Video, Get Video Components, ...); PNG frames have none.")  # fmt: skip
    FUNCTION = "decode_to_video"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        optional = dict(EXPORT_OPTIONAL)
        optional["save_latent"] = ("BOOLEAN", {"default": True, "tooltip": (
            "Save the latent beside the video (wan_00001_.latent, before decoding), so that a decode that is stopped "
            "or fails can be redone: copy it to ComfyUI/input and load it with Load Latent.")})  # fmt: skip
        optional |= PLAYBACK_OPTIONAL
        return {"required": DECODE_INPUTS | export_inputs(), "optional": optional, "hidden": dict(HIDDEN)}

    def decode_to_video(self, vae, samples, latent_space, tiling, tile_size, tile_overlap, frames_per_chunk, fps, format,
                        quality, filename_prefix, save_metadata, audio=None, bit_depth=8, save_latent=True, pingpong=False,
                        loop_count=0, save_output=True, prores_profile="auto", prompt=None, extra_pnginfo=None):  # fmt: skip
        playback = dict(pingpong=pingpong, loop_count=loop_count, prores_profile=prores_profile)
        vae = as_wan_vae(vae)
        wan = vae.vae
        latents = video_latents(samples)
        wan.check_latents(latents)  # the plain message for wrong latents, before anything is written
        b, t = latents.shape[0], latents.shape[2]
        width, height = latents.shape[-1] * wan.output_scale, latents.shape[-2] * wan.output_scale
        alpha = wan.out_channels == 4  # an RGBA VAE: a format that keeps alpha, checked before anything is written
        out = choose_output(filename_prefix, width, height, fps, format, quality, bit_depth, audio, save_metadata, prompt,
                            extra_pnginfo, siblings=(".latent",) if save_latent else (), alpha=alpha, save_output=save_output,
                            **playback)  # fmt: skip
        latent_file = None
        if save_latent:
            latent_file = write_latent_file(out.sibling(".latent"), samples["samples"], out.metadata)

        def work(wan, latents, options, wired):
            frames = wan.decode_frames(latents, options=options, dtype=torch.float32 if bit_depth > 8 else torch.uint8, **wired)
            return write_video(frames, out.path, fps, format=format, quality=quality, audio=audio, metadata=out.metadata,
                               bit_depth=bit_depth, **playback)  # fmt: skip

        with kept_on_failure(lambda: latent_file):
            run_decode(vae, samples, latent_space, tiling, tile_size, tile_overlap, frames_per_chunk, work)
        extra = {"latent": latent_file.name} if latent_file else {}
        result = saved(out, played(b * (1 + 4 * (t - 1)), pingpong), width, height, fps, alpha=alpha, **extra)
        video = NoVideo(out.path) if out.path.is_dir() else comfy_host.VideoFromFile(str(out.path))
        return result | {"result": (*result["result"], video)}

