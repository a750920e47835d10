"""VIDEOs the pack hands to ComfyUI: a Wan latent that decodes only when asked (`LatentVideo`), and the stand-in for
a PNG folder, which is not a video (`NoVideo`).

A `LatentVideo` answers its size, length and frame rate from the latent. Asked to `save_to` a file (core Save
Video), it decodes chunk by chunk straight into the file, as Wan Decode to Video does; asked for its components
(Get Video Components), it decodes the whole video, as Wan Decode Latents does. `as_trimmed` keeps a window of
frames; the causal decoder still starts at the first frame, and stops after the window's last.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import torch

from ..wan_vae import VideoReadError, VideoWriteError, write_video
from ..wan_vae.files.latents import write_latent_file
from ..wan_vae.video.formats import FORMATS, alpha_formats
from ..wan_vae.video.writer import check_output, frame_rate
from . import comfy_host
from .decode import kept_on_failure, run_decode, video_latents
from .load_vae import as_wan_vae

# core Save Video's (container, codec) -> our format. Newer ComfyUI's Concatenate Video asks for MKV (auto codec).
CORE_FORMATS = {("mp4", "auto"): "h264-mp4", ("mp4", "h264"): "h264-mp4", ("mp4", "av1"): "av1-mp4",
                ("webm", "auto"): "av1-webm", ("webm", "av1"): "av1-webm", ("mkv", "auto"): "ffv1-mkv"}  # fmt: skip
MP4_CONTAINER = "mov,mp4,m4a,3gp,3g2,mj2"  # what ffmpeg (and PyAV) call an MP4's container


def core_format(container, codec, alpha: bool) -> str:
    """Our format for core's VideoContainer / VideoCodec (enum members or their values); VideoWriteError naming what
    can be written otherwise, or when the video has alpha and the format keeps none."""
    container = getattr(container, "value", container) or "auto"
    codec = getattr(codec, "value", codec) or "auto"
    name = CORE_FORMATS.get(("mp4" if container == "auto" else container, codec))
    if name is None:
        can = ", ".join(f"{c}/{k}" for c, k in CORE_FORMATS)
        raise VideoWriteError(f"A Wan VIDEO cannot be saved as {container}/{codec}; the container/codec pairs it writes are "
                              f"{can} (auto is mp4/h264). Wan Decode to Video writes more: ProRes, VP9, H.265, GIF, WebP, PNG.")  # fmt: skip
    if alpha and name not in alpha_formats():
        raise VideoWriteError(f"This VIDEO is RGBA (an RGBA VAE's) and {container}/{codec} keeps no alpha: choose mkv (FFV1 "
                              f"keeps it), or Wan Decode to Video with one of {', '.join(alpha_formats())}.")  # fmt: skip
    return name


def _quality(name: str, crf) -> int | None:
    """Newer core Save Video's crf as our 0-100 quality (the inverse of formats._CODEC_ARGS' mapping)."""
    if crf is None:
        return None
    worst = 63 if name.startswith("av1") else 51
    return max(0, min(100, round((worst - float(crf)) / 0.4)))


class LatentVideo(comfy_host.VideoInput):
    """A Wan latent as ComfyUI's VIDEO, decoded when a node asks for frames or a file."""

    def __init__(self, vae, samples: dict, decode: tuple, fps: float, audio: dict | None = None, window: tuple[int, int] | None = None):
        self.vae, self.samples, self.decode_settings, self.fps, self.audio = as_wan_vae(vae), samples, decode, fps, audio
        wan = self.vae.vae
        latents = video_latents(samples)
        wan.check_latents(latents)  # wrong latents say so here, before anything downstream runs
        b, t = latents.shape[0], latents.shape[2]
        self.total = b * (1 + 4 * (t - 1))
        self.width, self.height = latents.shape[-1] * wan.output_scale, latents.shape[-2] * wan.output_scale
        self.alpha = wan.out_channels == 4
        self.window = window or (0, self.total)  # (first frame, frames)
        self._stream_file: Path | None = None

    # -- answered from the latent, nothing decoded

    def get_dimensions(self) -> tuple[int, int]:
        return self.width, self.height

    def get_frame_count(self) -> int:
        return self.window[1]

    def get_frame_rate(self) -> Fraction:
        return frame_rate(self.fps)

    def get_duration(self) -> float:
        return float(self.window[1] / self.get_frame_rate())

    def get_active_trim_window(self) -> tuple[float, float]:
        rate = self.get_frame_rate()
        first, count = self.window
        return float(first / rate), 0.0 if (first, count) == (0, self.total) else float(count / rate)

    def get_container_format(self) -> str:
        return MP4_CONTAINER

    def get_bit_depth(self) -> int:
        return 8

    def get_color_space(self) -> str:
        return "sRGB"

    def has_pending_frame_edits(self) -> bool:
        return False

    def as_trimmed(self, start_time: float | None = 0, duration: float | None = 0, strict_duration: bool = False):
        """The frames whose times fall in [start_time, start_time + duration) (duration 0: to the end; a negative start
        counts from the end), or None when none do (or fewer than `duration` with `strict_duration`)."""
        rate, (first, count) = float(self.get_frame_rate()), self.window
        start, duration = float(start_time or 0), float(duration or 0)
        if start < 0:
            start = max(count / rate + start, 0.0)
        lo = min(math.ceil(start * rate - 1e-6), count)
        hi = min(math.ceil((start + duration) * rate - 1e-6), count) if duration else count
        if hi <= lo or (strict_duration and duration and (hi - lo) / rate < duration - 1e-6):
            return None
        return LatentVideo(self.vae, self.samples, self.decode_settings, self.fps, self.audio, (first + lo, hi - lo))

    # -- decoded on demand

    def decode_into(self, consume: Callable[[Iterator[torch.Tensor]], object], dtype: torch.dtype = torch.uint8):
        """consume(chunks of this video's frames [n, H, W, C]), run while the decode runs, with the node's progress,
        previews and Stop; returns what consume returns. The decode stops after the window's last frame."""

        def work(wan, latents, options, wired):
            return consume(self._windowed(wan.decode_frames(latents, options=options, dtype=dtype, **wired)))

        return run_decode(self.vae, self.samples, *self.decode_settings, work)

    def _windowed(self, chunks: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        first, count = self.window
        seen = 0
        for chunk in chunks:
            lo, hi = max(first - seen, 0), min(first + count - seen, chunk.shape[0])
            seen += chunk.shape[0]
            if hi > lo:
                yield chunk[lo:hi]
            if seen >= first + count:
                return

    def window_audio(self) -> dict | None:
        """The attached audio, cut to the window."""
        if self.audio is None or self.window == (0, self.total):
            return self.audio
        rate, sample_rate = self.get_frame_rate(), int(self.audio["sample_rate"])
        first, count = self.window
        lo, hi = round(first / rate * sample_rate), round((first + count) / rate * sample_rate)
        return {"waveform": self.audio["waveform"][..., lo:hi], "sample_rate": sample_rate}

    def get_components(self):
        """The whole video decoded: the frames Wan Decode Latents gives (alpha apart, where core has the field)."""

        def consume(chunks):
            return torch.cat([chunk.to(comfy_host.image_dtype()) for chunk in chunks])

        images = self.decode_into(consume, dtype=torch.float32)
        extra = {}
        if self.alpha:
            if comfy_host.components_have_alpha():
                extra["alpha"] = images[..., 3].clone()
            else:
                comfy_host.log.warning("Wan VIDEO: this ComfyUI's VIDEO has no alpha; the frames are given as RGB")
            images = images[..., :3].clone()
        return comfy_host.VideoComponents(images=images, frame_rate=self.get_frame_rate(), audio=self.window_audio(), **extra)

    def save_to(self, path, format="auto", codec="auto", metadata=None, bit_depth=None, crf=None, color_space=None, preset=None,
                **_ignored):  # fmt: skip
        """Decode chunk by chunk into `path` (or a writable binary buffer) as core's container/codec asks."""
        name = core_format(format, codec, self.alpha)
        bits = 10 if bit_depth and bit_depth > 8 and 10 in FORMATS[name].bit_depths else 8
        if color_space not in (None, "auto", "sRGB"):
            raise VideoWriteError(f"A Wan VIDEO is sRGB (BT.709); it cannot be saved as {color_space}. Choose sRGB or auto.")
        buffer = None if isinstance(path, (str, os.PathLike)) else path
        if buffer is not None and not callable(getattr(buffer, "write", None)):
            raise VideoWriteError(f"save_to takes a file path or a writable buffer, not {type(path).__name__}.")
        work = Path(tempfile.mkdtemp(prefix="wan_vae_video_")) if buffer is not None else None
        target = work / f"video{FORMATS[name].extension}" if work else Path(path)
        quality, audio = _quality(name, crf), self.window_audio()
        try:
            check_output(target, self.fps, name, quality, bit_depth=bits, audio=audio, alpha=self.alpha)
            with kept_on_failure(lambda: None if work else self._keep_latent(target, metadata)):
                self.decode_into(lambda chunks: write_video(chunks, target, self.fps, format=name, quality=quality, audio=audio,
                                                            metadata=metadata, bit_depth=bits),
                                 dtype=torch.float32 if bits > 8 else torch.uint8)  # fmt: skip
            if buffer is not None:
                buffer.write(target.read_bytes())
        finally:
            if work is not None:
                for leftover in work.iterdir():
                    leftover.unlink()
                work.rmdir()

    def _keep_latent(self, target: Path, metadata) -> Path:
        return write_latent_file(target.with_suffix(".latent"), self.samples["samples"], metadata)

    def get_stream_source(self) -> str:
        """A file of the video, for nodes that read one (decoded once, into ComfyUI's temp folder, as H.264 MP4)."""
        if self._stream_file is None or not self._stream_file.is_file():
            folder = Path(comfy_host.temp_directory())
            target = Path(tempfile.mkdtemp(prefix="wan_vae_", dir=folder)) / "video.mp4"
            self.save_to(str(target))
            self._stream_file = target
        return str(self._stream_file)


class NoVideo(comfy_host.VideoInput):
    """The VIDEO output of Wan Decode to Video when it saved PNG frames: a folder is not a video, and says so."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _refuse(self, *_args, **_kwargs):
        raise VideoReadError(f"Wan Decode to Video saved PNG frames ({self.folder.name}, a folder), which is not a video: "
                             "choose a video format (h264-mp4, ...) to use its VIDEO output, or load the frames as images.")  # fmt: skip

    get_components = save_to = as_trimmed = get_stream_source = get_dimensions = get_duration = _refuse
    get_frame_count = get_frame_rate = get_container_format = _refuse
