"""Peak-memory estimates for a decode, and the tile size `tiling="auto"` picks from them.

A decode holds, besides the weights:
  - the causal history: two frames of every causal conv's input, proportional to the decoded area;
  - transients of the piece being decoded, proportional to the area times the frames in flight.
Both were measured as peak live tensor bytes (torch profiler memory events) per output pixel, on the
CPU, decoding 5 latent frames (17 frames) at 240x416 with the real-size networks; they are linear in
area (12,845 vs 12,857 B/px at 240x416 and 160x288 for Wan 2.1 fp32, an earlier measurement):

    version  precision  frames_per_chunk  peak live    history      transient = peak - history
    2.1      fp32       1                 11,751 B/px  8,714 B/px   3,037
    2.1      fp32       2                 16,430 B/px  8,714 B/px   7,716
    2.1      bf16       1                  7,470 B/px  5,258 B/px   2,212
    2.1      bf16       2                 11,316 B/px  5,258 B/px   6,058
    2.2      fp32       1                 13,305 B/px  6,650 B/px   6,655
    2.2      fp32       2                 22,026 B/px  6,650 B/px  15,376
    2.2      bf16       1                 10,259 B/px  3,962 B/px   6,297
    2.2      bf16       2                 18,212 B/px  3,962 B/px  14,250

Half precision does not halve it: only the heavy convs run in half precision (network.set_precision),
and their fp32 sums and norm scratch sit beside half-size buffers. fp16 is taken to be bf16. Longer
chunks are extrapolated linearly from the two measured ones. A safety factor covers allocator slack
and backend workspaces (oneDNN's conv scratch measured ~73 MB at 240x416; cuDNN's varies).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import torch

from .tiling import MIN_TILE_CELLS

log = logging.getLogger("wan_vae")

# bytes per output pixel by (version, half precision): history, and transient at 1 and 2 frames_per_chunk
HISTORY_BYTES_PER_PIXEL = {("2.1", False): 8714, ("2.1", True): 5258, ("2.2", False): 6650, ("2.2", True): 3962}
TRANSIENT_BYTES_PER_PIXEL = {
    ("2.1", False): (3037, 7716), ("2.1", True): (2212, 6058),
    ("2.2", False): (6655, 15376), ("2.2", True): (6297, 14250),
}  # fmt: skip
SAFETY = 1.25
FIXED_OVERHEAD = 256 * 2**20


def free_bytes(device) -> int:
    """Memory a decode may use on `device`: free CUDA memory (plus what torch holds in cache), or available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB
        return 8 * 2**30


def estimate_peak_bytes(vae, height_px: int, width_px: int, frames_per_chunk: int, tile_px: int | None = None,
                        streaming: bool = False) -> int:  # fmt: skip
    """Estimated peak device memory of decoding a `height_px` x `width_px` video, weights included.

    `tile_px` is the tile edge (None: untiled). When streaming with tiles, every tile's history is
    held at once (time runs outermost), so the history covers the whole frame.
    """
    half = vae.dtype != torch.float32
    frame = height_px * width_px
    tile = frame if tile_px is None else min(tile_px, height_px) * min(tile_px, width_px)
    one, two = TRANSIENT_BYTES_PER_PIXEL[vae.version, half]
    history = HISTORY_BYTES_PER_PIXEL[vae.version, half] * (frame if streaming else tile)
    transient = (one + (two - one) * (frames_per_chunk - 1)) * tile
    weights = sum(p.numel() * p.element_size() for p in vae.model.parameters())
    return int(weights + FIXED_OVERHEAD + SAFETY * (history + transient))


def pick_tile_size(vae, h: int, w: int, frames_per_chunk: int, budget: int, streaming: bool) -> int | None:
    """The largest tile edge in pixels whose estimated peak fits `budget` bytes; None if no tiling is needed.

    h, w: latent cells. Tile edges step by whole latent cells; the smallest tile is MIN_TILE_CELLS.
    """
    s = vae.spatial_scale
    if estimate_peak_bytes(vae, h * s, w * s, frames_per_chunk, None, streaming) <= budget:
        return None
    for cells in range(max(h, w), MIN_TILE_CELLS - 1, -1):
        if estimate_peak_bytes(vae, h * s, w * s, frames_per_chunk, cells * s, streaming) <= budget:
            return cells * s
    need = estimate_peak_bytes(vae, h * s, w * s, frames_per_chunk, MIN_TILE_CELLS * s, streaming)
    log.warning("tiling=auto: even %d px tiles need about %.1f GiB (budget %.1f GiB); decoding with them anyway",
                MIN_TILE_CELLS * s, need / 2**30, budget / 2**30)  # fmt: skip
    return MIN_TILE_CELLS * s


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand memory that is already free back to the OS (glibc keeps freed blocks under 32 MB in its heap).

    Measured on the CPU decode of 5 frames at 240x416: 150-350 MB of peak RSS was such retained free
    memory. Nothing live is touched; elsewhere than glibc this does nothing.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
