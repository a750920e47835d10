"""A ping-pong: the frames forward, then backward without the two ends (VideoHelperSuite's `pingpong`), so a looping
player goes back and forth without showing the turning frames twice: N frames play as 2N - 2.

A tensor is walked backward in views. A stream (a decode chunk by chunk) is spilled to a temporary file as it
goes forward, and read back from it, so memory stays at a chunk whatever the length; the disk holds the frames once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator

import numpy as np
import torch

CHUNK_FRAMES = 8  # frames per chunk handed on from a tensor


def pingpong(frames) -> Iterator[torch.Tensor]:
    """`frames` ([N, H, W, C] tensor or array, or an iterator of such chunks) forward, then frames N-2 down to 1."""
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        x = torch.from_numpy(np.asarray(frames)) if isinstance(frames, np.ndarray) else frames
        yield from x.split(CHUNK_FRAMES)
        for top in range(x.shape[0] - 2, 0, -CHUNK_FRAMES):
            yield x[max(1, top - CHUNK_FRAMES + 1) : top + 1].flip(0)
        return
    yield from _spilled(frames)


def _spilled(chunks: Iterable) -> Iterator[torch.Tensor]:
    with tempfile.TemporaryFile(prefix="wan_vae_pingpong_") as spill:
        kept: list[tuple[int, tuple[int, ...], torch.dtype]] = []  # (offset, shape, dtype) of each chunk written
        for chunk in chunks:
            x = torch.from_numpy(np.asarray(chunk)) if isinstance(chunk, np.ndarray) else chunk
            yield x
            if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0]:
                data = x.detach().cpu().contiguous()
                kept.append((spill.tell(), tuple(data.shape), data.dtype))
                spill.write(data.view(torch.uint8).numpy().tobytes() if data.dtype != torch.uint8 else data.numpy().tobytes())
        total = sum(shape[0] for _, shape, _ in kept)
        seen = total
        for offset, shape, dtype in reversed(kept):
            seen -= shape[0]  # index of this chunk's first frame
            first, last = max(seen, 1), min(seen + shape[0], total - 1)  # frames 1 .. N-2 only
            if first >= last:
                continue
            frame_bytes = int(np.prod(shape[1:])) * torch.empty((), dtype=dtype).element_size()
            spill.seek(offset + (first - seen) * frame_bytes)
            raw = bytearray(spill.read((last - first) * frame_bytes))
            yield torch.frombuffer(raw, dtype=dtype).view(last - first, *shape[1:]).flip(0)
