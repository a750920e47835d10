"""ExportVideo: IMAGE frames (and optional AUDIO) to a video file in ComfyUI's output folder, shown on the node."""

from __future__ import annotations

import os

from ..wan_vae import FORMATS, VideoWriteError, write_video
from ..wan_vae.writer import DEFAULT_QUALITY, MAX_FPS
from . import comfy_host
from .load_vae import CATEGORY

# What a browser plays inline; other formats (ProRes, FFV1, PNG folders) get a download link instead.
BROWSER_PLAYABLE = ("h264-mp4", "h265-mp4", "vp9-webm", "gif", "webp")


class ExportVideo:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Saves frames as a video in ComfyUI's output folder (wan_00001_.mp4, ...): H.264 / H.265 MP4, VP9 WebM, "
        "ProRes, lossless FFV1, GIF, WebP or PNG frames. Exact size and colours (BT.709), optional audio, and the "
        "workflow embedded so dropping the file on ComfyUI opens it again. Written streaming and atomically."
    )
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the saved file (a folder for PNG frames).",)
    FUNCTION = "export"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, e.g. from Wan Decode Latents."}),
                "fps": ("FLOAT", {"default": 16.0, "min": 0.01, "max": float(MAX_FPS), "step": 0.001, "tooltip": (
                    "Frames per second: 16 for Wan 2.1 and Wan 2.2 14B, 24 for Wan 2.2 TI2V-5B. 23.976 and 29.97 "
                    "are stored as 24000/1001 and 30000/1001.")}),
                "format": (list(FORMATS), {"default": "h264-mp4", "tooltip": "\n".join(
                    f"{name}: {fmt.description}" for name, fmt in FORMATS.items())}),
                "quality": ("INT", {"default": DEFAULT_QUALITY, "min": 0, "max": 100, "tooltip": (
                    "0-100, higher is better and bigger. 80 is visually lossless H.264 (crf 19). "
                    "Lossless formats ignore it; WebP at 100 is lossless.")}),
                "filename_prefix": ("STRING", {"default": "WanVideo/wan", "tooltip": (
                    "Subfolder and name in the output folder; a counter is added and never overwrites. "
                    "%width%, %height%, %year%, %month%, %day% are filled in.")}),
                "save_metadata": ("BOOLEAN", {"default": True, "tooltip": (
                    "Embed the prompt and workflow (MP4, MOV, WebM, MKV), so dropping the video on ComfyUI "
                    "restores the workflow. ComfyUI's --disable-metadata turns it off everywhere.")}),
            },
            "optional": {"audio": ("AUDIO", {"tooltip": "Muxed in (AAC or Opus), padded or cut to the video's length."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }  # fmt: skip

    def export(self, images, fps, format, quality, filename_prefix, save_metadata, audio=None, prompt=None, extra_pnginfo=None):
        frames, height, width = images.shape[0], images.shape[1], images.shape[2]
        folder, stem, counter, subfolder = comfy_host.save_location(filename_prefix, width, height)
        metadata = None
        if save_metadata and not comfy_host.metadata_disabled():
            metadata = ({"prompt": prompt} if prompt is not None else {}) | dict(extra_pnginfo or {})
        fmt = FORMATS[format]
        while True:
            name = f"{stem}_{counter:05}_{fmt.extension}"
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                try:
                    write_video(images, path, fps, format=format, quality=quality, audio=audio, metadata=metadata or None)
                    break
                except VideoWriteError:
                    if not os.path.exists(path):  # a real failure, not another run taking the name meanwhile
                        raise
            counter += 1

        info = {"filename": name, "subfolder": subfolder, "type": "output", "format": format, "frames": frames,
                "width": width, "height": height, "fps": fps, "duration": frames / fps, "bytes": _size(path),
                "playable": format in BROWSER_PLAYABLE}  # fmt: skip
        ui = {"wan_video": [info]}
        if format in BROWSER_PLAYABLE:  # the stock front end shows these on the node
            ui |= {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
        elif fmt.sequence:
            first = f"{name}/frame_00001.png"
            ui |= {"images": [{"filename": "frame_00001.png", "subfolder": f"{subfolder}/{name}".strip("/"), "type": "output"}]}
            info["first_frame"] = first
        return {"ui": ui, "result": (path,)}


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)
