"""Reading written videos back with the bundled ffmpeg, and their metadata the way the ComfyUI front end does."""

from __future__ import annotations

import json
import re
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
MP4_READ_LIMIT = 64 * 2**20  # what the front end reads of an MP4 (isobmff.ts)
WEBM_READ_LIMIT = 2 * 2**20  # and of a WebM/MKV (ebml.ts)


def probe(path) -> dict:
    """Stream facts from `ffmpeg -i` plus exact frame timing from framemd5."""
    info = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    out: dict = {"raw": info}
    video = re.search(r"Stream #\d+:\d+.*?: Video: (\w+)[^,]*?(?:\((\w+) / 0x[0-9A-Fa-f]+\))?, (\w+)(?:\(([^)]*)\))?,.*? (\d+)x(\d+)", info)
    if video:
        out.update(codec=video[1], tag=video[2], pix_fmt=video[3], color=video[4] or "", width=int(video[5]), height=int(video[6]))
    audio = re.search(r"Audio: (\w+).*?, (\d+) Hz, (\w+)", info)
    if audio:
        out.update(audio_codec=audio[1], sample_rate=int(audio[2]), channels=audio[3])
    md5 = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
                         capture_output=True, text=True).stdout  # fmt: skip
    tb = re.search(r"#tb 0: (\d+)/(\d+)", md5)
    pts = [int(line.split(",")[2]) for line in md5.splitlines() if line and not line.startswith("#")]
    out["frames"] = len(pts)
    if tb and pts:
        timebase = Fraction(int(tb[1]), int(tb[2]))
        out["pts"] = [p * timebase for p in pts]
    return out


def audio_duration(path) -> float:
    """Seconds of decoded audio (samples / rate), measured by decoding."""
    pcm = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
                          "-ar", "48000", "-f", "f32le", "-"], capture_output=True).stdout  # fmt: skip
    return len(pcm) / 4 / 48000


def read_frames(path, rgb48: bool = False) -> np.ndarray:
    """All frames as [N, H, W, 3] uint8 (or uint16), decoded with the stream's own colour tags."""
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb48le" if rgb48 else "rgb24", bpp=6 if rgb48 else 3)
    meta = next(gen)
    w, h = meta["size"]
    dtype = "<u2" if rgb48 else np.uint8
    return np.stack([np.frombuffer(f, dtype=dtype).reshape(h, w, 3) for f in gen])


def read_rgba(path) -> np.ndarray:
    """All frames as [N, H, W, 4] uint8 with their alpha (VP9 through libvpx, whose decoder reads the alpha stream;
    a PNG folder frame by frame)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("frame_*.png"))
        return np.concatenate([read_rgba(f) for f in files])
    vp9 = ["-c:v", "libvpx-vp9"] if path.suffix == ".webm" else []
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgba", bpp=4, input_params=vp9)
    meta = next(gen)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, dtype=np.uint8).reshape(h, w, 4) for f in gen])


# ----------------------------------------------------------------------------- metadata, as the front end reads it


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size < 8 or pos + size > end:
            return
        yield kind, pos + 8, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes):
    return next(((s, e) for k, s, e in _boxes(data, start, end) if k == kind), None)


def mp4_metadata(path) -> dict:
    """prompt/workflow from moov/udta/meta keys+ilst within the first 64 MiB, JSON-decoded (isobmff.ts rules)."""
    data = Path(path).read_bytes()[:MP4_READ_LIMIT]
    moov = _child(data, 0, len(data), b"moov")
    udta = moov and _child(data, *moov, b"udta")
    meta = udta and _child(data, *udta, b"meta")
    if not meta:
        return {}
    body = (meta[0] + 4, meta[1])  # meta is a full box: version and flags first
    keys_box, ilst = _child(data, *body, b"keys"), _child(data, *body, b"ilst")
    if not keys_box or not ilst:
        return {}
    count = struct.unpack(">I", data[keys_box[0] + 4 : keys_box[0] + 8])[0]
    keys, pos = {}, keys_box[0] + 8
    for index in range(1, count + 1):
        size = struct.unpack(">I", data[pos : pos + 4])[0]
        keys[index] = data[pos + 8 : pos + size].decode("utf-8")
        pos += size
    found = {}
    for kind, start, end in _boxes(data, *ilst):
        name = keys.get(struct.unpack(">I", kind)[0], "")
        value = _child(data, start, end, b"data")
        if name.lower() in ("prompt", "workflow") and value:
            text = data[value[0] + 8 : value[1]].decode("utf-8")
            found[name.lower()] = json.loads(text[text.index("{") :])
    return found


def matroska_metadata(path) -> dict:
    """prompt/workflow SimpleTags within the first 2 MiB of a WebM/MKV (ebml.ts rules)."""
    data = Path(path).read_bytes()[:WEBM_READ_LIMIT]
    assert data[:4] == b"\x1a\x45\xdf\xa3", "not an EBML file"
    found, pos = {}, 0
    while True:
        pos = data.find(b"\x67\xc8", pos)  # SimpleTag
        if pos < 0:
            return found
        size, n = _vint(data, pos + 2)
        body = data[pos + 2 + n : pos + 2 + n + size]
        name_at, value_at = body.find(b"\x45\xa3"), body.find(b"\x44\x87")  # TagName, TagString
        if name_at >= 0 and value_at >= 0:
            nsize, nn = _vint(body, name_at + 2)
            vsize, vn = _vint(body, value_at + 2)
            name = body[name_at + 2 + nn : name_at + 2 + nn + nsize].decode("utf-8")
            if name in ("PROMPT", "WORKFLOW"):  # ffmpeg writes Matroska tag names upper-case; ebml.ts matches them so
                found[name.lower()] = json.loads(body[value_at + 2 + vn : value_at + 2 + vn + vsize].decode("utf-8"))
        pos += 2


def _vint(buf: bytes, pos: int) -> tuple[int, int]:
    """An EBML variable-size integer at `pos`: (value, length in bytes)."""
    first = buf[pos]
    length = 8 - first.bit_length() + 1
    value = first & (0xFF >> length)
    for b in buf[pos + 1 : pos + length]:
        value = (value << 8) | b
    return value, length


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
