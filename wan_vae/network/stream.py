"""The state one pass carries through a video, chunk by chunk, and the buffers its chunks reuse.

`StreamState` maps each causal layer to what it remembers between chunks (its last input frames, or
that a first-chunk rule has run); `Workspace` hands out activation buffers again for the next chunk of
the same shape. Tensors are [B, C, T, H, W], in NCDHW or channels_last_3d memory (`memory_layout`);
`to_frames` / `from_frames` view them as per-frame [B*T, C, H, W] images for the 2-D ops.
"""

from __future__ import annotations

import torch
from torch import nn

from ..device.free_memory import release_free_memory

CACHE_T = 2  # history frames a 3x3x3 causal conv needs


class Workspace:
    """Reusable activation buffers, shared by the passes of one decode.

    A freshly allocated large tensor costs page faults as the OS maps and zeroes it; on the CPU that
    was a quarter of the decode time (4.3M faults, 12.5 s of system time in a 24 s decode). Buffers
    taken here go back with `give` and are handed out again for the next chunk of the same shape.
    `cached` keeps what a decode derives from the weights once (the GPU path's casts and phase kernels).
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._made: dict[tuple, object] = {}

    def cached(self, key: tuple, make):
        """make()'s result, made once per workspace (one decode or encode): weights cast or rearranged for it."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def take(self, like: torch.Tensor, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        """An uninitialised tensor of `shape` with the device and memory layout of `like` (and its dtype by default)."""
        fmt, dtype = memory_layout(like), dtype or like.dtype
        free = self._free.get((tuple(shape), dtype, like.device, fmt))
        if free:
            return free.pop()
        return torch.empty(shape, dtype=dtype, device=like.device, memory_format=fmt)

    def give(self, t: torch.Tensor) -> None:
        self._free.setdefault((tuple(t.shape), t.dtype, t.device, memory_layout(t)), []).append(t)

    def clear(self) -> None:
        """Let go of every free buffer (when work moves to another resolution, they would only sit idle)."""
        self._free.clear()
        release_free_memory()


class StreamState:
    """Streaming state of one pass over one video (or one spatial tile of it).

    Maps each causal layer to what it must remember between chunks: the last input frames of a
    causal conv, or that a first-chunk rule has already been applied. A fresh state means that the
    next chunk starts the video. Two decodes never share one, so they cannot interfere.
    `final` is set while the last piece a layer will ever see runs: it then keeps no history.
    """

    def __init__(self, workspace: Workspace | None = None) -> None:
        self._memory: dict[nn.Module, torch.Tensor] = {}
        self.workspace = workspace if workspace is not None else Workspace()
        self.final = False

    def get(self, layer: nn.Module) -> torch.Tensor | None:
        return self._memory.get(layer)

    def put(self, layer: nn.Module, frames: torch.Tensor) -> None:
        """Remember `frames` for `layer` (a copy, reusing the previous one's storage when it fits)."""
        if self.final:
            self._memory.pop(layer, None)
            return
        kept = self._memory.get(layer)
        if kept is not None and kept.shape == frames.shape and memory_layout(kept) == memory_layout(frames):
            kept.copy_(frames)
        else:
            self._memory[layer] = frames.clone(memory_format=torch.preserve_format)

    def mark(self, layer: nn.Module) -> None:
        """Remember that a first-chunk rule of `layer` has been applied."""
        self._memory[layer] = STARTED


STARTED = torch.empty(0, 0, 0, 0, 0)  # a history of no frames


def memory_layout(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 5 and t.shape[1] > 1 and t.stride(1) == 1:
        return torch.channels_last_3d
    return torch.contiguous_format


def empty_in_layout(like: torch.Tensor, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised tensor of `shape` in the same memory layout (NCDHW or channels_last_3d) as `like`."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_layout(like))


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W] (a view for channels_last_3d tensors)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def from_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]."""
    bt, c, h, w = x.shape
    return x.view(batch, bt // batch, c, h, w).transpose(1, 2)

