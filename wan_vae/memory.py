"""Peak-memory estimates for a decode, and the tile size `tiling="auto"` picks from them.

Placeholder coefficients; replaced by measured ones below.
"""

from __future__ import annotations

import os

import torch


def free_bytes(device: torch.device) -> int:
    """Memory a decode may use on `device`: free CUDA memory, or available RAM for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def pick_tile_size(vae, h, w, frames_per_chunk, budget, streaming):
    return None
