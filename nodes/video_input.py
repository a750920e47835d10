"""A VIDEO wired into Export Video or Wan Encode, read as frames: from its file a chunk at a time (core Load Video's
VideoFromFile, with its trim window; the pack's own saved videos), from its tensors (Create Video's
VideoFromComponents), or decoded from its latent (the pack's LatentVideo). Never the whole file in memory.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from ..wan_vae import VideoReadError, probe_video, read_video_frames
from ..wan_vae.video.reader import read_audio_file
from . import comfy_host
from .lazy_video import LatentVideo

log = logging.getLogger("wan_vae")

CHUNK_FRAMES = 16  # frames read from a file, or handed on from a tensor, at a time


@dataclass
class VideoFrames:
    """What a VIDEO holds, known before any frame is read; `read(channels, consume, deep)` returns consume(chunks of
    frames [n, H, W, channels]), 4 channels adding alpha (opaque where the video has none); `deep`: float frames where
    the source has more than 8 bits (a decode), for 10-bit outputs."""

    width: int
    height: int
    frames: int
    fps: Fraction
    alpha: bool
    audio: dict | None
    read: Callable[[int, Callable[[Iterator[torch.Tensor]], object], bool], object]
    images: torch.Tensor | None = None  # the frames, where they are in memory already (a tensor VIDEO)


def is_video(value) -> bool:
    return isinstance(value, comfy_host.VideoInput)


def video_frames(video) -> VideoFrames:
    """The VIDEO as frames, or VideoReadError saying what is wrong with it (before anything is decoded or written)."""
    if isinstance(video, LatentVideo):
        return VideoFrames(video.width, video.height, video.get_frame_count(), video.get_frame_rate(), video.alpha,
                           video.window_audio(), lambda channels, consume, deep=False: video.decode_into(consume, torch.float32 if deep else torch.uint8))  # fmt: skip
    file = comfy_host.video_file(video)
    if file is not None:
        frames = _from_file(video, *file)
        if frames is not None:
            return frames
    return _from_components(video)


def _from_file(video, source, start: float, duration: float) -> VideoFrames | None:
    path = _as_path(source)
    info = probe_video(path, start, duration)
    if info.frames == 0:
        raise VideoReadError(f"The VIDEO's file '{path.name}' has no frames{' in its trim window' if start or duration else ''}.")
    shown = _dimensions(video)
    if shown is not None and shown != (info.width, info.height):  # newer ComfyUI's crop or rotation: core's own reading
        log.info("Wan VIDEO input: %s shows %dx%d of a %dx%d file (cropped or rotated); read through ComfyUI, whole",
                 type(video).__name__, *shown, info.width, info.height)  # fmt: skip
        return None
    audio = read_audio_file(path, start=start, duration=duration or float(info.frames / info.fps), required=False)

    def read(channels, consume, deep=False):
        return consume(read_video_frames(path, channels, CHUNK_FRAMES, start, duration, info.decoder))

    return VideoFrames(info.width, info.height, info.frames, info.fps, info.alpha, audio, read)


def _dimensions(video) -> tuple[int, int] | None:
    try:
        return tuple(video.get_dimensions())
    except Exception:  # the file itself is checked by probe_video, with a better message
        return None


def _as_path(source) -> Path:
    """A path for the file behind a VIDEO; one held in memory (BytesIO) is written to ComfyUI's temp folder first."""
    if isinstance(source, (str, Path)):
        return Path(source)
    if not callable(getattr(source, "read", None)):
        raise VideoReadError(f"The VIDEO's stream source is a {type(source).__name__}, neither a file path nor a buffer.")
    source.seek(0)
    with tempfile.NamedTemporaryFile(prefix="wan_vae_video_", dir=comfy_host.temp_directory(), delete=False) as copy:
        while block := source.read(1 << 24):
            copy.write(block)
    return Path(copy.name)


def _from_components(video) -> VideoFrames:
    what = f"{type(video).__module__}.{type(video).__qualname__}"
    try:
        parts = video.get_components()
        images = parts.images
    except Exception as error:
        raise VideoReadError(f"This VIDEO ({what}) gives neither a file nor frames ({type(error).__name__}: {error}). Save it "
                             "with core Save Video and load the file with Load Video.") from error  # fmt: skip
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0 or images.shape[-1] not in (3, 4):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise VideoReadError(f"This VIDEO ({what}) has no frames [frames, height, width, 3]: its images are {shape}.")
    alpha = getattr(parts, "alpha", None)
    if alpha is not None and images.shape[-1] == 3:
        images = torch.cat([images, alpha.reshape(*images.shape[:3], 1).to(images)], dim=-1)
    rate = Fraction(parts.frame_rate).limit_denominator(1001) if parts.frame_rate else Fraction(1)

    def read(channels, consume, deep=False):
        return consume(_chunks(images, channels))

    return VideoFrames(images.shape[2], images.shape[1], images.shape[0], rate, images.shape[-1] == 4, parts.audio, read, images)


def _chunks(images: torch.Tensor, channels: int) -> Iterator[torch.Tensor]:
    for chunk in images.split(CHUNK_FRAMES):
        if chunk.shape[-1] == channels:
            yield chunk
        elif channels == 3:
            yield chunk[..., :3]
        else:
            yield torch.cat([chunk, torch.ones_like(chunk[..., :1])], dim=-1)
