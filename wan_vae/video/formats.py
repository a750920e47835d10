"""The output formats: how each is encoded, which bit depths and alpha it keeps, which this machine can write.

`FORMATS` maps a format's name (the nodes' `format` widget, the command line's `--format`) to a `VideoFormat`;
`quality` (0-100) maps onto each codec's own scale in `_CODEC_ARGS`. Hardware encoders (NVENC) are offered only
where ffmpeg can open them (`encoder_error`: a two-frame trial, once per process). RGBA frames keep their alpha in
the formats whose `alpha_bit_depths` say so (`check_alpha`). ffmpeg is imageio-ffmpeg's, never the system's.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass, field

from ..errors import VideoWriteError

DEFAULT_QUALITY = 80  # 0-100, higher is better and larger; 80 is visually lossless for H.264 (crf 19)
# prores_ks's profiles by name (VideoHelperSuite's ProRes choices); "auto" picks 422 by quality, 4444 for alpha.
PRORES_PROFILES = {"auto": None, "proxy": 0, "lt": 1, "standard": 2, "hq": 3, "4444": 4, "4444xq": 5}


@dataclass(frozen=True)
class VideoFormat:
    """How one output format is encoded. `quality` (0-100) maps onto the codec's own scale."""

    name: str
    extension: str
    muxer: str
    description: str
    bit_depths: tuple[int, ...] = (8,)
    even_size: bool = False  # 4:2:0 chroma needs even width and height
    audio_codec: str | None = None
    tags: str | None = None  # "mov" (udta/meta/keys+ilst) or "matroska" (SimpleTags)
    sequence: bool = False  # a folder of numbered images
    yuv: bool = True  # converted to YUV with the BT.709 matrix
    browser: bool = False  # plays inline in a browser
    hardware: str | None = None  # an encoder that needs a device (NVENC): offered only where ffmpeg can open it
    alpha_bit_depths: tuple[int, ...] = ()  # bit depths at which it keeps an alpha channel (RGBA frames)
    extra: tuple[str, ...] = field(default=())

    def video_args(self, quality: int, bit_depth: int, alpha: bool = False, loop_count: int = 0,
                   prores_profile: str = "auto") -> list[str]:  # fmt: skip
        args = _CODEC_ARGS[self.name](quality, bit_depth)
        if "-loop" in args:  # GIF and WebP: the times the player repeats (0: forever), written in the file
            args[args.index("-loop") + 1] = str(loop_count)
        if self.name == "prores-mov":
            profile = PRORES_PROFILES[prores_profile]
            profile = (4 if alpha else int(args[args.index("-profile:v") + 1])) if profile is None else profile
            args[args.index("-profile:v") + 1] = str(profile)
            if profile >= 4:  # the 4444 profiles: full chroma
                args[args.index("-pix_fmt") + 1] = "yuv444p10le"
        if alpha:  # the same codec with an alpha plane: only the pixel format (ProRes: a 4444 profile) changes
            args[args.index("-pix_fmt") + 1] = _ALPHA_PIX_FMT[self.name](quality, bit_depth)
            if self.name == "prores-mov":
                args += ["-alpha_bits", "16"]
        return args + list(self.extra)


def _crf(worst: int, per_quality: float, quality: int) -> str:
    return str(max(0, round(worst - per_quality * quality)))


# Per format: codec arguments for quality q (0-100) and bit depth b. Defaults (q = 80): x264 crf 19
# (what VideoHelperSuite uses), x265 crf 23, VP9 crf 23, ProRes 422 HQ, GIF 205 colours, WebP q80.
_CODEC_ARGS = {
    "h264-mp4": lambda q, b: ["-c:v", "libx264", "-crf", _crf(51, 0.4, q), "-preset", "medium",
                              "-pix_fmt", "yuv420p10le" if b == 10 else "yuv420p"],
    "h265-mp4": lambda q, b: ["-c:v", "libx265", "-crf", _crf(51, 0.35, q), "-preset", "medium", "-tag:v", "hvc1",
                              "-x265-params", "log-level=error", "-pix_fmt", "yuv420p10le" if b == 10 else "yuv420p"],
    "vp9-webm": lambda q, b: ["-c:v", "libvpx-vp9", "-crf", _crf(63, 0.5, q), "-b:v", "0", "-row-mt", "1",
                              "-pix_fmt", "yuv420p10le" if b == 10 else "yuv420p"],
    "prores-mov": lambda q, b: ["-c:v", "prores_ks", "-profile:v", "3" if q >= 70 else "2" if q >= 40 else "1",
                                "-vendor", "apl0", "-pix_fmt", "yuv422p10le"],
    "ffv1-mkv": lambda q, b: ["-c:v", "ffv1", "-level", "3", "-g", "1", "-pix_fmt", "gbrp10le" if b == 10 else "bgr0"],
    "gif": lambda q, b: ["-filter_complex",
                         f"[0:v]split[a][b];[a]palettegen=stats_mode=single:max_colors={max(16, min(256, round(2.56 * q)))}[p];"
                         "[b][p]paletteuse=new=1:dither=sierra2_4a", "-loop", "0"],
    "webp": lambda q, b: ["-c:v", "libwebp_anim", "-loop", "0", "-compression_level", "4"]
                         + (["-lossless", "1", "-pix_fmt", "bgra"] if q >= 100 else ["-quality", str(q), "-pix_fmt", "yuv420p"]),
    "png": lambda q, b: ["-c:v", "png", "-pix_fmt", "rgb48be" if b == 10 else "rgb24"],
    # SVT-AV1 crf 31 at q = 80 (its own default is 35); NVENC's constant-quality scale is x264's.
    "av1-mp4": lambda q, b: _svtav1(q, b),
    "av1-webm": lambda q, b: _svtav1(q, b),
    "h264-nvenc-mp4": lambda q, b: ["-c:v", "h264_nvenc", "-preset", "p5", "-tune", "hq", "-rc", "vbr", "-cq",
                                    _crf(51, 0.4, q), "-b:v", "0", "-pix_fmt", "yuv420p"],
    "h265-nvenc-mp4": lambda q, b: ["-c:v", "hevc_nvenc", "-preset", "p5", "-tune", "hq", "-rc", "vbr", "-cq",
                                    _crf(51, 0.4, q), "-b:v", "0", "-tag:v", "hvc1", "-pix_fmt", "p010le" if b == 10 else "yuv420p"],
}  # fmt: skip


# Pixel formats with alpha, checked by decoding the alpha back (ffmpeg 9 from imageio-ffmpeg): PNG, lossless WebP
# and 8-bit FFV1 exactly, VP9 (alpha as a second stream), lossy WebP, ProRes 4444 and 10-bit FFV1 within 1/255.
_ALPHA_PIX_FMT = {
    "png": lambda q, b: "rgba64be" if b == 10 else "rgba",
    "webp": lambda q, b: "bgra" if q >= 100 else "yuva420p",
    "vp9-webm": lambda q, b: "yuva420p",
    "prores-mov": lambda q, b: "yuva444p10le",
    "ffv1-mkv": lambda q, b: "gbrap10le" if b == 10 else "bgra",
}


def _svtav1(quality: int, bit_depth: int) -> list[str]:
    return ["-c:v", "libsvtav1", "-crf", _crf(63, 0.4, quality), "-preset", "8",
            "-pix_fmt", "yuv420p10le" if bit_depth == 10 else "yuv420p"]  # fmt: skip

FORMATS = {
    f.name: f
    for f in (
        VideoFormat("h264-mp4", ".mp4", "mp4", "H.264 MP4: plays everywhere, browsers included", (8, 10), True, "aac", "mov",
                    browser=True),
        VideoFormat("h265-mp4", ".mp4", "mp4", "H.265/HEVC MP4 (hvc1): smaller files, Apple players", (8, 10), True, "aac", "mov",
                    browser=True),
        VideoFormat("vp9-webm", ".webm", "webm", "VP9 WebM: open format, browsers (keeps alpha, 8-bit)", (8, 10), False, "libopus",
                    "matroska", browser=True, alpha_bit_depths=(8,)),
        VideoFormat("prores-mov", ".mov", "mov", "ProRes 422 MOV (10-bit) for editors; ProRes 4444 with alpha", (10,), False, "aac",
                    "mov", alpha_bit_depths=(10,)),
        VideoFormat("ffv1-mkv", ".mkv", "matroska", "FFV1 MKV: lossless RGB (and alpha)", (8, 10), False, "libopus", "matroska",
                    yuv=False, alpha_bit_depths=(8, 10)),
        VideoFormat("gif", ".gif", "gif", "Animated GIF, palette per frame", yuv=False, browser=True),
        VideoFormat("webp", ".webp", "webp", "Animated WebP (quality 100: lossless; keeps alpha)", yuv=False, browser=True,
                    alpha_bit_depths=(8,)),
        VideoFormat("png", "", "image2", "PNG frame sequence in a folder (bit_depth 10: 16-bit PNG; keeps alpha)", (8, 10), yuv=False,
                    sequence=True, alpha_bit_depths=(8, 10)),
        VideoFormat("av1-mp4", ".mp4", "mp4", "AV1 MP4 (SVT-AV1): smaller than H.265, recent browsers and players", (8, 10), True,
                    "aac", "mov", browser=True),
        VideoFormat("av1-webm", ".webm", "webm", "AV1 WebM (SVT-AV1): open format, recent browsers", (8, 10), True, "libopus",
                    "matroska", browser=True),
        VideoFormat("h264-nvenc-mp4", ".mp4", "mp4", "H.264 MP4 on the NVIDIA GPU's encoder (NVENC): fast, larger files", (8,),
                    True, "aac", "mov", browser=True, hardware="h264_nvenc"),
        VideoFormat("h265-nvenc-mp4", ".mp4", "mp4", "H.265 MP4 on the NVIDIA GPU's encoder (NVENC)", (8, 10), True, "aac", "mov",
                    browser=True, hardware="hevc_nvenc"),
    )
}


def available_formats() -> list[str]:
    """The formats this machine can write: all but the hardware encoders ffmpeg cannot open here."""
    from concurrent.futures import ThreadPoolExecutor

    hardware = sorted({fmt.hardware for fmt in FORMATS.values() if fmt.hardware})
    with ThreadPoolExecutor(len(hardware)) as pool:  # the trial encodes at once: ComfyUI's start-up waits for them
        errors = dict(zip(hardware, pool.map(encoder_error, hardware)))
    return [name for name, fmt in FORMATS.items() if fmt.hardware is None or errors[fmt.hardware] is None]


@functools.cache
def encoder_error(encoder: str) -> str | None:
    """None if ffmpeg can open `encoder` (tried once per process on a tiny clip), else ffmpeg's reason.

    Whether a hardware encoder works depends on the driver and the GPU, which only opening it tells.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=black:size=256x256:rate=25",
           "-frames:v", "2", "-c:v", encoder, "-f", "null", "-"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return (lines[0] if lines else f"ffmpeg exited with {proc.returncode}").split("] ", 1)[-1]


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg (never the system's)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def alpha_formats(bit_depth: int = 8) -> list[str]:
    """The formats that keep an alpha channel at `bit_depth` (ProRes, 10-bit only, whatever is asked: as ProRes 4444)."""
    return [name for name, f in FORMATS.items() if f.alpha_bit_depths and (bit_depth in f.alpha_bit_depths or bit_depth not in f.bit_depths)]


def check_alpha(fmt: VideoFormat, bit_depth: int, prores_profile: str = "auto") -> None:
    """VideoWriteError unless `fmt` keeps RGBA frames' alpha at `bit_depth`: no format drops it without a word."""
    if fmt.name == "prores-mov" and prores_profile not in ("auto", "4444", "4444xq"):
        raise VideoWriteError(f"The frames have an alpha channel (RGBA), which ProRes {prores_profile} (a 4:2:2 profile) "
                              "cannot keep; choose prores_profile auto, 4444 or 4444xq.")  # fmt: skip
    if bit_depth in fmt.alpha_bit_depths:
        return
    if fmt.alpha_bit_depths:
        raise VideoWriteError(f"{fmt.name} keeps an alpha channel at {'/'.join(map(str, fmt.alpha_bit_depths))} bits only; choose "
                              f"bit_depth {fmt.alpha_bit_depths[0]}, or one of {', '.join(alpha_formats(bit_depth))} for {bit_depth}-bit alpha.")  # fmt: skip
    raise VideoWriteError(
        f"The frames have an alpha channel (RGBA), which {fmt.name} cannot keep. Choose a format that keeps it: "
        f"{', '.join(alpha_formats(bit_depth)).replace('prores-mov', 'prores-mov (ProRes 4444)')}; or drop the alpha first "
        "(core's 'Split Image with Alpha')."
    )
