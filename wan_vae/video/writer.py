"""Writing frames to a video file through imageio-ffmpeg's bundled ffmpeg: streamed, exact, never half-written.

    write_video(frames, "out.mp4", fps=16)                      # H.264, yuv420p, BT.709
    write_video(vae.decode_frames(latents), "out.webm", 24, format="vp9-webm",
                metadata={"prompt": prompt, "workflow": workflow})

Frames are a tensor/array [N, H, W, 3] (or 4: RGBA, where the format keeps alpha; float in [0, 1], or uint8) or an
iterator of such chunks; each chunk is converted and piped to ffmpeg as it arrives, so memory does not grow
with the video.
The file appears under its name only once ffmpeg has finished successfully: it is written to a hidden
temporary name in the same folder and renamed; on any failure the temporary file is removed, and one that a
killed process left behind is removed before the next write there (files/partials.py).

Colour: RGB is converted to YUV with the BT.709 matrix, tv range, and the stream is tagged so
(untagged streams get decoded as BT.601 and shift colours). Sizes are never rescaled; codecs that need
even sizes (H.264, H.265 in 4:2:0) get the last row/column repeated, with a log line saying so.
Metadata (ComfyUI's `prompt` and `workflow`) is stored as separate tags the ComfyUI front end reads
back when the file is dropped on it: MP4/MOV `udta/meta/keys+ilst` with the index at the front
(`+faststart`, the front end reads only the first 64 MiB), WebM/MKV SimpleTags near the start.
The formats themselves (codec arguments, bit depths, alpha, what this machine can encode) are in formats.py.
Over 400 lines because one ffmpeg process is the unit here: its command line, the frames piped in, the
audio muxed with them, the metadata, and the rename or clean-up when it ends belong to one lifetime.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..errors import VideoWriteError
from ..files import partials
from .formats import DEFAULT_QUALITY, FORMATS, PRORES_PROFILES, VideoFormat, check_alpha, encoder_error, ffmpeg_exe
from .pingpong import pingpong as ping_ponged

log = logging.getLogger("wan_vae")

MAX_FPS = 1000
STDERR_TAIL = 2000  # characters of ffmpeg's stderr quoted in errors
CHUNK_FRAMES = 8  # frames converted at a time from a whole-video tensor


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8, rounding half up (what video tools do: clip(x * 255 + 0.5))."""
    return frames.float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def frame_rate(fps: float) -> Fraction:
    """fps as an exact rational: NTSC rates typed as decimals (23.976, 29.97, 59.94) mean n*1000/1001."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not 0 < fps <= MAX_FPS:
        raise VideoWriteError(f"fps must be a number above 0 and at most {MAX_FPS}, got {fps!r}.")
    for base in (24, 30, 48, 60, 120):
        if abs(fps - base * 1000 / 1001) < 0.0015:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


# ----------------------------------------------------------------------------------------- frames


class _FrameSource:
    """Turns the caller's frames into bytes for ffmpeg, chunk by chunk, checking each chunk."""

    def __init__(self, frames, high_bit_depth: bool, even_size: bool) -> None:
        self.high = high_bit_depth
        self.even = even_size
        self.alpha = False  # RGBA frames (the first chunk decides; the others must agree)
        self.channels: int | None = None
        self.count = 0
        self.size: tuple[int, int] | None = None  # (height, width) of the first chunk
        self._chunks = self._iter_chunks(frames)
        self._first = next(self._chunks, None)
        if self._first is None:
            raise VideoWriteError("No frames to write: the video is empty.")
        self._first = self._check(self._first)

    @staticmethod
    def _iter_chunks(frames) -> Iterator:
        if isinstance(frames, (torch.Tensor, np.ndarray)):
            if frames.ndim == 3:
                yield frames
                return
            for start in range(0, frames.shape[0], CHUNK_FRAMES):
                yield frames[start : start + CHUNK_FRAMES]
        elif isinstance(frames, Iterable):
            yield from frames
        else:
            raise VideoWriteError(f"Frames must be a tensor/array [N, H, W, 3] or an iterator of them, not {type(frames).__name__}.")

    def _check(self, chunk) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(chunk)) if isinstance(chunk, np.ndarray) else chunk
        if not isinstance(x, torch.Tensor):
            raise VideoWriteError(f"A chunk of frames is a {type(chunk).__name__}, not a tensor or array.")
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4:
            raise VideoWriteError(f"Frames must be [N, H, W, channels]; got shape {list(x.shape)}.")
        if x.shape[0] == 0:
            return x
        channels = x.shape[-1]
        if channels not in (1, 3, 4):
            raise VideoWriteError(
                f"Frames must have 3 (RGB) channels in the last dimension; got shape {list(x.shape)}. "
                "Channels-first tensors need .permute(0, 2, 3, 1)."
            )
        if self.size is None:
            self.size, self.channels, self.alpha = tuple(x.shape[1:3]), channels, channels == 4
            if channels == 1:
                log.info("write_video: grey frames are written as RGB")
        elif tuple(x.shape[1:3]) != self.size:
            raise VideoWriteError(f"All frames must have one size; frame {self.count} is {tuple(x.shape[1:3])}, not {self.size}.")
        elif channels != self.channels:
            raise VideoWriteError(f"All frames must have the same channels; frame {self.count} has {channels}, the first had {self.channels}.")
        if x.dtype == torch.uint8:
            return x
        if not x.is_floating_point():
            raise VideoWriteError(f"Frames must be float in [0, 1] or uint8, got {x.dtype}.")
        if not torch.isfinite(x).all():
            raise VideoWriteError(f"Frames {self.count}-{self.count + x.shape[0] - 1} contain NaN or infinite values.")
        return x

    def __iter__(self) -> Iterator[bytes]:
        chunk, self._first = self._first, None
        while chunk is not None:
            if chunk.shape[0]:
                yield self._to_bytes(chunk)
                self.count += chunk.shape[0]
            nxt = next(self._chunks, None)
            chunk = None if nxt is None else self._check(nxt)

    def _to_bytes(self, x: torch.Tensor) -> bytes:
        x = x.detach().cpu()
        if x.shape[-1] == 1:
            x = x.expand(*x.shape[:-1], 3)
        if self.high:  # 16 bits per channel keep float precision for 10-bit and 16-bit outputs
            x = x.to(torch.int32) * 257 if x.dtype == torch.uint8 else x.float().mul(65535).add_(0.5).clamp_(0, 65535)
            x = x.to(torch.int32).numpy().astype("<u2")
        else:
            x = (x if x.dtype == torch.uint8 else to_uint8(x)).numpy()
        if self.even:
            x = np.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)), mode="edge")
        return np.ascontiguousarray(x).tobytes()


# ----------------------------------------------------------------------------------------- metadata and audio


def _escape_ffmetadata(text: str) -> str:
    for ch in ("\\", "=", ";", "#", "\n"):
        text = text.replace(ch, "\\" + ch)
    return text


def _write_ffmetadata(path: Path, metadata: Mapping[str, object]) -> None:
    """An FFMETADATA file: values of any size (a command line caps one argument at 128 KiB)."""
    lines = [";FFMETADATA1"]
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or any(c in key for c in "=;#\\\n"):
            raise VideoWriteError(f"Metadata keys must be plain non-empty strings, got {key!r}.")
        # JSON encoded exactly once: strings are stored as given, anything else as its JSON text.
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        lines.append(f"{key}={_escape_ffmetadata(text)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _audio_samples(audio: Mapping) -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO {"waveform": [B, C, S], "sample_rate": int} -> (checked [channels, samples] float32, rate)."""
    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (KeyError, TypeError, ValueError):
        raise VideoWriteError('audio must be ComfyUI AUDIO: {"waveform": [batch, channels, samples], "sample_rate": int}.') from None
    w = torch.as_tensor(waveform).detach().cpu().float()
    if w.ndim == 3:
        if w.shape[0] > 1:
            log.info("write_video: the audio batch has %d clips; the first is used", w.shape[0])
        w = w[0]
    if w.ndim == 1:
        w = w.unsqueeze(0)
    if w.ndim != 2 or w.shape[0] not in range(1, 9) or w.shape[1] == 0 or rate <= 0:
        raise VideoWriteError(f"audio waveform must be [batch, channels (1-8), samples] with a positive sample rate; got {list(torch.as_tensor(waveform).shape)} at {rate} Hz.")
    if not torch.isfinite(w).all():
        raise VideoWriteError("The audio contains NaN or infinite samples.")
    return w, rate


def _write_audio(path: Path, audio: Mapping) -> tuple[int, int]:
    """The audio as raw interleaved f32le in `path`; (rate, channels)."""
    w, rate = _audio_samples(audio)
    w.t().contiguous().numpy().astype("<f4").tofile(path)
    return rate, w.shape[0]


# ----------------------------------------------------------------------------------------- writing


def check_output(path, fps: float, format: str = "h264-mp4", quality: int | None = None, overwrite: bool = False,
                 bit_depth: int = 8, audio: Mapping | None = None, alpha: bool = False, loop_count: int = 0,
                 prores_profile: str = "auto") -> tuple[VideoFormat, int, int, Fraction, Path]:  # fmt: skip
    """What `write_video` checks before it reads any frame, for callers that must know before decoding (`alpha`: the
    frames will be RGBA): (format, quality, bit depth, exact frame rate, target path), or VideoWriteError."""
    if isinstance(loop_count, bool) or not isinstance(loop_count, int) or not 0 <= loop_count <= 65535:
        raise VideoWriteError(f"loop_count must be a whole number from 0 (forever) to 65535, got {loop_count!r}.")
    if prores_profile not in PRORES_PROFILES:
        raise VideoWriteError(f"Unknown prores_profile {prores_profile!r}; choose one of: {', '.join(PRORES_PROFILES)}.")
    if audio is not None:
        _audio_samples(audio)
    fmt = FORMATS.get(format)
    if fmt is None:
        raise VideoWriteError(f"Unknown format {format!r}; choose one of: {', '.join(FORMATS)}.")
    quality = DEFAULT_QUALITY if quality is None else quality
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        raise VideoWriteError(f"quality must be a whole number from 0 to 100, got {quality!r}.")
    if bit_depth not in (8, 10):
        raise VideoWriteError(f"bit_depth must be 8 or 10, got {bit_depth!r}.")
    if bit_depth > max(fmt.bit_depths):
        deep = [name for name, f in FORMATS.items() if max(f.bit_depths) >= bit_depth]
        raise VideoWriteError(f"{fmt.name} has no {bit_depth}-bit form; choose bit_depth 8, or one of {', '.join(deep)}.")
    if fmt.hardware is not None and (reason := encoder_error(fmt.hardware)) is not None:
        raise VideoWriteError(f"{fmt.name} needs NVIDIA's hardware encoder ({fmt.hardware}), which ffmpeg cannot open here: "
                              f"{reason}. Choose {fmt.name.replace('-nvenc', '')}, the same codec on the CPU.")  # fmt: skip
    if bit_depth not in fmt.bit_depths:
        log.info("write_video: %s is %s-bit only; writing it so", fmt.name, "/".join(map(str, fmt.bit_depths)))
        bit_depth = fmt.bit_depths[-1]
    if alpha:
        check_alpha(fmt, bit_depth, prores_profile)
    rate = frame_rate(fps)
    target = Path(os.fspath(path)).expanduser()
    folder = target.parent
    if not folder.is_dir():
        raise VideoWriteError(f"The folder {folder} does not exist{' (it is a file)' if folder.exists() else ''}; create it first.")
    if target.exists() and not overwrite:
        raise VideoWriteError(f"{target} already exists; choose another name or pass overwrite=True.")
    if target.exists() and target.is_dir() != fmt.sequence:
        raise VideoWriteError(f"{target} exists and is a {'folder' if target.is_dir() else 'file'}; it cannot be replaced by a {fmt.name}.")

    return fmt, quality, bit_depth, rate, target

def write_video(
    frames,
    path,
    fps: float,
    format: str = "h264-mp4",
    quality: int | None = None,
    audio: Mapping | None = None,
    metadata: Mapping[str, object] | None = None,
    overwrite: bool = False,
    bit_depth: int = 8,
    pingpong: bool = False,
    loop_count: int = 0,
    prores_profile: str = "auto",
) -> Path:
    """Write `frames` to `path` and return the path written (a folder for "png").

    frames: [N, H, W, 3] float in [0, 1] or uint8 (tensor or array), or an iterator of such chunks.
        1-channel frames are written as grey RGB. RGBA frames [N, H, W, 4] keep their alpha in the formats that can
        (png, webp, prores-mov as ProRes 4444, vp9-webm, ffv1-mkv: `alpha_formats`); the others refuse them.
    fps: frames per second, any number in (0, 1000]; stored as an exact rational.
    format: one of FORMATS (h264-mp4, h265-mp4, vp9-webm, prores-mov, ffv1-mkv, gif, webp, png).
    quality: 0-100, higher is better and larger (default 80); each format maps it onto its codec (formats._CODEC_ARGS).
    audio: ComfyUI AUDIO dict; AAC in MP4/MOV, Opus in WebM/MKV, padded or cut to the video's length.
    metadata: tags such as {"prompt": {...}, "workflow": {...}}; non-string values are JSON-encoded once.
    overwrite: replace an existing file; otherwise an existing file is an error and is never touched.
    bit_depth: 8, or 10 for codecs that allow it (16-bit PNG); others fall back to what they support.
    pingpong: the frames forward, then backward without the two ends (2N - 2 frames; pingpong.py).
    loop_count: GIF and WebP: how many times players repeat it, 0 forever (the others ignore it).
    prores_profile: prores-mov's profile (PRORES_PROFILES: proxy, lt, standard, hq, 4444, 4444xq); auto picks 422 HQ,
        standard or LT by quality, 4444 for alpha.
    """
    fmt, quality, bit_depth, rate, target = check_output(path, fps, format, quality, overwrite, bit_depth, loop_count=loop_count,
                                                         prores_profile=prores_profile)  # fmt: skip
    folder = target.parent

    source = _FrameSource(ping_ponged(frames) if pingpong else frames, high_bit_depth=bit_depth > 8, even_size=fmt.even_size)
    if source.alpha:
        check_alpha(fmt, bit_depth, prores_profile)
    with tempfile.TemporaryDirectory(prefix="wan_vae_") as work:  # audio and metadata inputs for ffmpeg
        work = Path(work)
        partials.remove_stale(folder)  # what killed writers left here
        partial = partials.partial_path(target, fmt.extension)
        try:
            if fmt.sequence:
                partial.mkdir()
            else:
                partial.open("xb").close()  # fails here, clearly, if the folder cannot be written
        except OSError as e:
            raise VideoWriteError(f"Cannot write in {folder}: {e.strerror or e}.") from None
        try:
            codec_args = fmt.video_args(quality, bit_depth, source.alpha, loop_count, prores_profile)
            _run_ffmpeg(source, fmt, rate, codec_args, audio, metadata, partial, work)
            _publish(partial, target, overwrite)
        except BaseException:
            _remove(partial)
            raise
    log.info("write_video: %d frames %dx%d at %s fps -> %s", source.count, source.size[1], source.size[0], rate, target)
    return target


def _run_ffmpeg(source: _FrameSource, fmt: VideoFormat, rate: Fraction, codec_args: list[str], audio, metadata, partial: Path,
                work: Path) -> None:  # fmt: skip
    """Encode the frames into `partial`; with audio, in two passes so the audio is cut exactly at the last frame.

    A video streamed from an iterator has no known length until it ends, and `-shortest` only
    approximates the cut (measured 0.42 s too long with FFV1), so pass 1 writes the video and pass 2
    copies it next to the audio, padded and cut to exactly frames / fps. Metadata goes in the last pass.
    """
    height, width = source.size
    if fmt.even_size and (height % 2 or width % 2):
        log.info("write_video: %s needs even sizes; %dx%d padded to %dx%d by repeating the edge pixels",
                 fmt.name, width, height, width + width % 2, height + height % 2)  # fmt: skip
        height, width = height + height % 2, width + width % 2
    with_audio = audio is not None and fmt.audio_codec is not None
    if audio is not None and not with_audio:
        log.info("write_video: %s holds no audio; the audio is left out", fmt.name)
    if metadata and fmt.tags is None:
        log.info("write_video: %s cannot hold workflow metadata; it is left out", fmt.name)
        metadata = None
    if metadata:
        _write_ffmetadata(work / "metadata.txt", metadata)
    if with_audio:
        sample_rate, channels = _write_audio(work / "audio.f32", audio)

    video_out = partial.with_name(partial.name + ".video" + fmt.extension) if with_audio else partial
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", ("rgba64le" if source.high else "rgba") if source.alpha else ("rgb48le" if source.high else "rgb24"),
           "-s", f"{width}x{height}",
           "-r", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0"]  # fmt: skip
    if metadata and not with_audio:
        cmd += ["-f", "ffmetadata", "-i", str(work / "metadata.txt"), "-map_metadata", "1"]
    cmd += (["-map", "0:v"] if fmt.name != "gif" else []) + codec_args
    if fmt.yuv:
        # setparams tags the frames themselves: ffmpeg 9 takes primaries and transfer from the frames, and
        # output options alone left them "unknown" (seen in a real ComfyUI run).
        cmd += ["-vf", "scale=out_color_matrix=bt709:out_range=tv,"
                "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv",
                "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]  # fmt: skip
    if fmt.tags == "mov" and not with_audio:
        cmd += ["-movflags", "+faststart+use_metadata_tags"]
    cmd += ["-f", fmt.muxer, str(video_out / "frame_%05d.png") if fmt.sequence else str(video_out)]
    try:
        _ffmpeg(cmd, work, fmt, lambda: source.count, stdin=source)
        if with_audio:
            duration = Fraction(source.count) / rate
            cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video_out),
                   "-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", str(work / "audio.f32")]  # fmt: skip
            if metadata:
                cmd += ["-f", "ffmetadata", "-i", str(work / "metadata.txt"), "-map_metadata", "2"]
            cmd += ["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", fmt.audio_codec, "-b:a", "192k",
                    "-af", "apad", "-t", f"{float(duration):.6f}"]  # fmt: skip
            if fmt.tags == "mov":
                cmd += ["-movflags", "+faststart+use_metadata_tags"]
            _ffmpeg(cmd + ["-f", fmt.muxer, str(partial)], work, fmt, lambda: source.count)
    finally:
        if video_out != partial:
            _remove(video_out)


def _ffmpeg(cmd: list[str], work: Path, fmt: VideoFormat, frames_done, stdin: Iterable[bytes] | None = None) -> None:
    """Run ffmpeg, feeding `stdin` chunks if given; a failure raises VideoWriteError with its stderr tail."""
    with tempfile.TemporaryFile(dir=work) as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
        try:
            if stdin is not None:
                for data in stdin:
                    proc.stdin.write(data)
                proc.stdin.close()
            code = proc.wait()
        except (BrokenPipeError, OSError) as e:
            code = proc.wait()
            if code == 0:  # ffmpeg ended well yet stopped reading: report what we saw
                code = f"a write error ({e})"
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if code != 0:
            stderr.seek(0)
            tail = stderr.read().decode("utf-8", "replace")[-STDERR_TAIL:].strip()
            how = f"was killed by {_signal_name(-code)}" if isinstance(code, int) and code < 0 else f"failed ({code})"
            raise VideoWriteError(f"ffmpeg {how} while writing {fmt.name} after {frames_done()} frames; nothing was saved. {tail}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _publish(partial: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished file to its name; without overwrite, never replace a file that appeared meanwhile."""
    if overwrite:
        if target.is_dir() and partial.is_dir():
            _remove(target)
        os.replace(partial, target)
        return
    if partial.is_dir():
        if target.exists():
            raise VideoWriteError(f"{target} appeared while writing; the new frames were not saved over it.")
        os.rename(partial, target)
        return
    try:
        os.link(partial, target)  # atomic: fails if the name is taken
    except FileExistsError:
        raise VideoWriteError(f"{target} appeared while writing; the new video was not saved over it.") from None
    except OSError:  # no hard links here (some network or FAT filesystems)
        if target.exists():
            raise VideoWriteError(f"{target} appeared while writing; the new video was not saved over it.") from None
        os.replace(partial, target)
        return
    partial.unlink()


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            for child in path.iterdir():
                child.unlink()
            path.rmdir()
        elif path.exists():
            path.unlink()
    except OSError as e:
        log.warning("write_video: could not remove the partial output %s: %s", path, e)
