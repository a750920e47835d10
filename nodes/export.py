"""ExportVideo: IMAGE frames or a VIDEO (and optional AUDIO) to a video file in ComfyUI's output folder, shown on the node.

`export_inputs`, `EXPORT_OPTIONAL`, `PLAYBACK_OPTIONAL`, `choose_output` and `saved` are shared with Wan Decode to Video.
A VIDEO is read a chunk at a time (video_input.py): its file, its tensors, or the pack's lazy decode.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..wan_vae import FORMATS, VideoWriteError, write_video
from ..wan_vae.files import partials
from ..wan_vae.video.formats import DEFAULT_QUALITY, PRORES_PROFILES, available_formats
from ..wan_vae.video.writer import MAX_FPS, check_output
from . import comfy_host
from .load_vae import CATEGORY
from .video_input import is_video, video_frames


def clean_output_folder() -> threading.Thread:
    """Remove, in the background, the partial files that killed runs left anywhere in the output folder (partials.py):
    ComfyUI killed mid-write leaves a hidden partial that nothing else would ever remove."""
    worker = threading.Thread(target=partials.remove_stale, args=(comfy_host.output_directory(), True),
                              name="wan_vae stale partials", daemon=True)  # fmt: skip
    worker.start()
    return worker


def export_inputs() -> dict:
    """fps, format, quality, filename_prefix, save_metadata. A function: the format list waits for ffmpeg's trial of the
    hardware encoders (once per process), which importing the pack should not."""
    formats = available_formats()
    return {
        "fps": ("FLOAT", {"default": 16.0, "min": 0.01, "max": float(MAX_FPS), "step": 0.001, "tooltip": (
            "Frames per second: 16 for Wan 2.1 and Wan 2.2 14B, 24 for Wan 2.2 TI2V-5B. 23.976 and 29.97 "
            "are stored as 24000/1001 and 30000/1001.")}),
        "format": (formats, {"default": "h264-mp4", "tooltip": "\n".join(f"{name}: {FORMATS[name].description}" for name in formats)}),
        "quality": ("INT", {"default": DEFAULT_QUALITY, "min": 0, "max": 100, "tooltip": (
            "0-100, higher is better and bigger. 80 is visually lossless H.264 (crf 19). "
            "Lossless formats ignore it; WebP at 100 is lossless.")}),
        "filename_prefix": ("STRING", {"default": "WanVideo/wan", "tooltip": (
            "Subfolder and name in the output folder; a counter is added and never overwrites. "
            "%width%, %height%, %year%, %month%, %day% are filled in.")}),
        "save_metadata": ("BOOLEAN", {"default": True, "tooltip": (
            "Embed the prompt and workflow (MP4, MOV, WebM, MKV), so dropping the video on ComfyUI "
            "restores the workflow. ComfyUI's --disable-metadata turns it off everywhere.")}),
    }  # fmt: skip


# Optional so that workflows saved before bit_depth existed (API format included) still validate.
EXPORT_OPTIONAL = {
    "audio": ("AUDIO", {"tooltip": "Muxed in (AAC or Opus), padded or cut to the video's length."}),
    "bit_depth": ([8, 10], {"default": 8, "tooltip": (
        "10: H.264/H.265/VP9/AV1 in 10-bit 4:2:0, 10-bit FFV1, 16-bit PNG, taken from the decoder's floats "
        "(smoother gradients, less banding; not every player plays 10-bit H.264). ProRes is always 10-bit; "
        "GIF and WebP are 8-bit only.")}),
}  # fmt: skip
# What users of VideoHelperSuite's Video Combine look for; after the inputs above, so saved workflows keep loading.
PLAYBACK_OPTIONAL = {
    "pingpong": ("BOOLEAN", {"default": False, "tooltip": (
        "Play forward, then backward (without repeating the two ends): N frames become 2N - 2, a seamless loop. A "
        "streamed decode is kept on disk for the way back, not in memory.")}),
    "loop_count": ("INT", {"default": 0, "min": 0, "max": 100, "tooltip": (
        "GIF and WebP: how many times players repeat the animation, 0 forever. Other formats ignore it.")}),
    "save_output": ("BOOLEAN", {"default": True, "tooltip": (
        "Off: a preview only, saved in ComfyUI's temp folder (emptied when ComfyUI starts); nothing in output.")}),
    "prores_profile": (list(PRORES_PROFILES), {"default": "auto", "tooltip": (
        "prores-mov only. auto: 422 HQ (standard, LT at lower quality), 4444 with alpha. proxy, lt, standard, hq are "
        "4:2:2; 4444 and 4444xq keep full colour and alpha.")}),
}  # fmt: skip
HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


@dataclass(frozen=True)
class Output:
    """Where a video will be saved: a free name in the output folder, with the checks of write_video done."""

    path: Path
    name: str
    subfolder: str
    format: str
    metadata: dict | None
    folder_type: str = "output"  # "temp" for a preview (save_output off)

    def sibling(self, extension: str) -> Path:
        """A file named like the video, beside it (wan_00001_.latent beside wan_00001_.mp4)."""
        return self.path.with_name(self.path.name.removesuffix(FORMATS[self.format].extension) + extension)


class ExportVideo:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Saves frames, or a VIDEO, as a video in ComfyUI's output folder (wan_00001_.mp4, ...): H.264 / H.265 / AV1 "
        "MP4, VP9 or AV1 WebM, ProRes, lossless FFV1, GIF, WebP or PNG frames, 8 or 10 bits. Exact size and colours "
        "(BT.709), optional audio, and the workflow embedded so dropping the file on ComfyUI opens it again. Written "
        "streaming and atomically; a VIDEO (Load Video, Wan Decode as VIDEO) is read a few frames at a time."
    )
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the saved file (a folder for PNG frames).",)
    FUNCTION = "export"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE,VIDEO", {"tooltip": (
                    "The frames (IMAGE, e.g. from Wan Decode Latents), or a VIDEO (core Load Video, Wan Decode as VIDEO, "
                    "Wan Decode to Video): re-encoded with its own frame rate and audio, read a few frames at a time.")}),
                             **export_inputs()},
                "optional": EXPORT_OPTIONAL | PLAYBACK_OPTIONAL, "hidden": dict(HIDDEN)}  # fmt: skip

    def export(self, images, fps, format, quality, filename_prefix, save_metadata, audio=None, bit_depth=8, pingpong=False,
               loop_count=0, save_output=True, prores_profile="auto", prompt=None, extra_pnginfo=None):  # fmt: skip
        playback = dict(pingpong=pingpong, loop_count=loop_count, prores_profile=prores_profile)
        if is_video(images):
            return self._export_video(images, format, quality, filename_prefix, save_metadata, audio, bit_depth, save_output,
                                      playback, prompt, extra_pnginfo)  # fmt: skip
        frames, height, width = images.shape[0], images.shape[1], images.shape[2]
        alpha = images.dim() == 4 and images.shape[-1] == 4  # RGBA frames (an RGBA VAE's): kept, or refused before writing
        while True:
            out = choose_output(filename_prefix, width, height, fps, format, quality, bit_depth, audio, save_metadata, prompt,
                                extra_pnginfo, alpha=alpha, save_output=save_output, **playback)  # fmt: skip
            try:
                write_video(images, out.path, fps, format=format, quality=quality, audio=audio, metadata=out.metadata,
                            bit_depth=bit_depth, **playback)  # fmt: skip
                break
            except VideoWriteError:
                if not out.path.exists():  # a real failure, not another process taking the name meanwhile
                    raise
        return saved(out, played(frames, pingpong), width, height, fps, alpha=alpha)

    @staticmethod
    def _export_video(video, format, quality, filename_prefix, save_metadata, audio, bit_depth, save_output, playback, prompt,
                      extra_pnginfo):  # fmt: skip
        """A VIDEO re-encoded at its own frame rate, with its own audio unless `audio` is wired."""
        source = video_frames(video)
        audio = source.audio if audio is None else audio
        out = choose_output(filename_prefix, source.width, source.height, source.fps, format, quality, bit_depth, audio,
                            save_metadata, prompt, extra_pnginfo, alpha=source.alpha, save_output=save_output, **playback)  # fmt: skip
        source.read(4 if source.alpha else 3, lambda chunks: write_video(chunks, out.path, source.fps, format=format, quality=quality,
                    audio=audio, metadata=out.metadata, bit_depth=bit_depth, **playback), bit_depth > 8)  # fmt: skip
        return saved(out, played(source.frames, playback["pingpong"]), source.width, source.height, float(source.fps), alpha=source.alpha)


def choose_output(filename_prefix, width, height, fps, format, quality, bit_depth, audio, save_metadata, prompt,
                  extra_pnginfo, siblings: tuple[str, ...] = (), alpha: bool = False, save_output: bool = True, pingpong: bool = False,
                  loop_count: int = 0, prores_profile: str = "auto") -> Output:  # fmt: skip
    """The next free name for the prefix (ComfyUI's counter; free for `siblings` extensions too) in the output folder, or
    the temp folder without `save_output`, checked as write_video will check it, so that bad settings fail before any
    decoding."""
    folder, stem, counter, subfolder = comfy_host.save_location(filename_prefix, width, height, temp=not save_output)
    fmt = FORMATS.get(format)
    if fmt is None:
        raise VideoWriteError(f"Unknown format {format!r}; choose one of: {', '.join(available_formats())}.")
    while True:
        name = f"{stem}_{counter:05}_{fmt.extension}"
        path = Path(folder) / name
        taken = [path] + [path.with_name(f"{stem}_{counter:05}_{ext}") for ext in siblings]
        if not any(p.exists() for p in taken):
            break
        counter += 1
    check_output(path, fps, format, quality, bit_depth=bit_depth, audio=audio, alpha=alpha, loop_count=loop_count,
                 prores_profile=prores_profile)  # fmt: skip
    metadata = None
    if save_metadata and not comfy_host.metadata_disabled():
        metadata = (({"prompt": prompt} if prompt is not None else {}) | dict(extra_pnginfo or {})) or None
    return Output(path, name, subfolder, format, metadata, "output" if save_output else "temp")


def played(frames: int, pingpong: bool) -> int:
    """The frames in the file: a ping-pong adds the way back without its two ends."""
    return max(frames, 2 * frames - 2) if pingpong else frames


def saved(out: Output, frames: int, width: int, height: int, fps: float, alpha: bool = False, **extra) -> dict:
    """The node's result: the path, and for the front end what was saved (web/export_video_preview.js draws it: RGBA
    videos over a checkerboard)."""
    fmt = FORMATS[out.format]
    info = {"filename": out.name, "subfolder": out.subfolder, "type": out.folder_type, "format": out.format, "frames": frames,
            "width": width, "height": height, "fps": fps, "duration": frames / fps, "bytes": _size(out.path),
            "playable": fmt.browser, "alpha": alpha} | extra  # fmt: skip
    if fmt.sequence:
        info["first_frame"] = f"{out.name}/frame_00001.png"
    # Only our own key: web/export_video_preview.js is the one preview on the node. Sent as `images`/`animated`,
    # ComfyUI's player covered it, showed GIFs as broken videos and kept stale pictures (see that file).
    ui = {"wan_video": [info]}
    return {"ui": ui, "result": (str(out.path),)}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(os.path.getsize(p) for p in path.iterdir())
    return os.path.getsize(path)
