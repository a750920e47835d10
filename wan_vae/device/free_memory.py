"""How much memory a device has free, and handing freed memory back: what the network and the planner both need."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch


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
