"""Reading video files through imageio-ffmpeg's bundled ffmpeg, a chunk of frames at a time, never whole.

    info = probe_video("control.mp4")                     # size, frames, frame rate, without decoding frames
    for chunk in read_video_frames("control.mp4"):        # uint8 [N, H, W, 3], 16 frames at a time
        ...
    audio = read_audio_file("control.mp4")                # ComfyUI AUDIO

`start` and `duration` (seconds; duration 0: to the end) keep the frames whose timestamps fall in
[start, start + duration), as ComfyUI's own VideoFromFile trims (newer ComfyUI's Load Video / Trim Video).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..errors import VideoReadError
from .formats import ffmpeg_exe

STDERR_TAIL = 2000  # characters of ffmpeg's stderr quoted in errors


@dataclass(frozen=True)
class VideoFileInfo:
    width: int
    height: int
    frames: int
    fps: Fraction
    alpha: bool  # the video stream's pixel format has an alpha plane
    decoder: tuple[str, ...] = ()  # input options that pick the decoder (VP9's alpha needs libvpx's)

    @property
    def duration(self) -> float:
        return float(self.frames / self.fps)


def _window(start: float, duration: float) -> list[str]:
    """ffmpeg's trim filter for [start, start + duration): the frames ComfyUI's trimmed VideoFromFile keeps."""
    passthrough = ["-fps_mode", "passthrough"]  # each decoded frame once: no frames repeated to fill a constant rate
    if not start and not duration:
        return passthrough
    end = f":end={start + duration!r}" if duration else ""
    return ["-vf", f"trim=start={max(0.0, start)!r}{end}", *passthrough]


def _checked(path) -> Path:
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise VideoReadError(f"No video file at '{path}'{' (it is a folder)' if path.is_dir() else ''}.")
    return path


def _ffmpeg_reason(path: Path, stderr: str) -> VideoReadError:
    lines = stderr.strip().splitlines()
    return VideoReadError(f"ffmpeg cannot read '{path}' as a video: {lines[-1] if lines else 'no video stream'}")


def probe_video(path, start: float = 0.0, duration: float = 0.0) -> VideoFileInfo:
    """The video stream's size, frame rate, alpha and frame count (in the window, if one is given): the container's
    packets are counted without decoding them, unless a window needs the frames' timestamps."""
    path = _checked(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough"]
    cmd += (_window(start, duration)[:2] + ["-f", "null", "-"]) if start or duration else ["-c", "copy", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    log = proc.stderr
    stream = re.search(r"Stream #0:\d+[^:]*: Video: (.*)", log)
    if proc.returncode or stream is None:
        raise _ffmpeg_reason(path, log[-STDERR_TAIL:])
    size = re.search(r", (\d{2,5})x(\d{2,5})\b", stream.group(1))
    rate = re.search(r"([\d.]+)(k?) (?:fps|tbr)", stream.group(1))
    frames = re.findall(r"frame=\s*(\d+)", log)
    if size is None or rate is None:
        raise VideoReadError(f"ffmpeg found no frame size or rate in '{path}': {stream.group(1)[:200]}")
    fps = Fraction(rate.group(1)) * (1000 if rate.group(2) else 1)
    for base in (24, 30, 60):  # ffmpeg prints 23.98 / 29.97 / 59.94 for the NTSC rates
        if abs(float(fps) - base * 1000 / 1001) < 0.006:
            fps = Fraction(base * 1000, 1001)
    pix_fmt = stream.group(1).split(",")[1].strip().split("(")[0] if "," in stream.group(1) else ""
    alpha = pix_fmt.startswith(("yuva", "rgba", "bgra", "argb", "abgr", "gbrap", "ya", "pal8"))
    decoder = ()
    if re.search(r"alpha_mode\s*:\s*1", log) and stream.group(1).startswith("vp"):  # WebM keeps VP8/9 alpha beside the frames
        alpha, decoder = True, ("-c:v", "libvpx-vp9" if stream.group(1).startswith("vp9") else "libvpx")
    return VideoFileInfo(int(size.group(1)), int(size.group(2)), int(frames[-1]) if frames else 0, fps, alpha, decoder)


def read_video_frames(path, channels: int = 3, per_chunk: int = 16, start: float = 0.0, duration: float = 0.0,
                      decoder: tuple[str, ...] = ()) -> Iterator[torch.Tensor]:  # fmt: skip
    """The video's frames as uint8 chunks [N, H, W, channels] (4: with alpha, opaque where the file has none), read as
    they are needed: ffmpeg decodes ahead by a pipe's worth, nothing more is held. `decoder`: probe_video's."""
    import imageio_ffmpeg

    path = _checked(path)
    pix_fmt = "rgba" if channels == 4 else "rgb24"
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt=pix_fmt, bpp=channels, input_params=list(decoder),
                                     output_params=_window(start, duration))
    try:
        meta = next(reader)
        w, h = meta["size"]
        chunk = []
        for data in reader:
            chunk.append(torch.frombuffer(bytearray(data), dtype=torch.uint8).view(h, w, channels))
            if len(chunk) == per_chunk:
                yield torch.stack(chunk)
                chunk = []
        if chunk:
            yield torch.stack(chunk)
    except (OSError, RuntimeError, StopIteration) as e:
        raise VideoReadError(f"ffmpeg cannot read '{path}': {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
    finally:
        reader.close()


def read_audio_file(path, sample_rate: int = 48000, start: float = 0.0, duration: float = 0.0, required: bool = True) -> dict | None:
    """Any audio (or video with sound) file as ComfyUI AUDIO, decoded by the bundled ffmpeg to stereo at `sample_rate`,
    cut to [start, start + duration) when given. Without an audio stream: VideoReadError, or None if not `required`."""
    path = _checked(path)
    window = (["-ss", repr(start)] if start else []) + (["-t", repr(duration)] if duration else [])
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), *window, "-vn",
                           "-map", "0:a:0?", "-ac", "2", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"], capture_output=True)  # fmt: skip
    if proc.returncode or not proc.stdout:
        if not required and (not proc.returncode or b"does not contain any stream" in proc.stderr):
            return None
        tail = proc.stderr.decode("utf-8", "replace")[-STDERR_TAIL:].strip() or "no audio stream"
        raise VideoReadError(f"Cannot read audio from '{path}': {tail}")
    samples = torch.from_numpy(np.frombuffer(proc.stdout, dtype="<f4").copy()).view(-1, 2).t()
    return {"waveform": samples.unsqueeze(0), "sample_rate": sample_rate}
