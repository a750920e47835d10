"""The Wan VAE network (Wan 2.1 and Wan 2.2) in plain PyTorch, streaming over time.

Module names reproduce the original Wan checkpoint keys (`decoder.upsamples.4.residual.2.weight`), so
original and ComfyUI files load without renaming; `checkpoint.py` maps diffusers names onto them.

Every causal layer continues a video chunk by chunk through an explicit `StreamState`. The numerics
contract (shared/reference/wan_reference.md section 1.3) is kept by construction, so any chunking of
time gives the same numbers as the reference's one-latent-frame-at-a-time loop:
  - a 3x3x3 causal conv sees two zero frames before the first frame, then the last two input frames
    of the previous chunk;
  - each temporal upsample passes frame 0 through untouched and doubles frames 1.. with their own
    two zero frames in front (the reference's "Rep" marker);
  - each temporal downsample (encoder) passes frame 0 through and runs its stride-2 conv over the
    whole sequence starting at frame 0;
  - the Wan 2.2 DupUp3D shortcut drops its first (factor_t - 1) frames once.
Tensors are [B, C, T, H, W] throughout; the decoder works in channels_last_3d memory when given it,
which makes the per-frame 2-D views free. In half precision only the heavy convs run in fp16/bf16
(`set_precision`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .config import WanVAEConfig
from .free_memory import release_free_memory

CACHE_T = 2  # history frames a 3x3x3 causal conv needs


class Workspace:
    """Reusable activation buffers, shared by the passes of one decode.

    A freshly allocated large tensor costs page faults as the OS maps and zeroes it; on the CPU that
    was a quarter of the decode time (4.3M faults, 12.5 s of system time in a 24 s decode). Buffers
    taken here go back with `give` and are handed out again for the next chunk of the same shape.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[torch.Tensor]] = {}

    def take(self, like: torch.Tensor, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        """An uninitialised tensor of `shape` with the device and memory layout of `like` (and its dtype by default)."""
        fmt, dtype = _layout(like), dtype or like.dtype
        free = self._free.get((tuple(shape), dtype, like.device, fmt))
        if free:
            return free.pop()
        return torch.empty(shape, dtype=dtype, device=like.device, memory_format=fmt)

    def give(self, t: torch.Tensor) -> None:
        self._free.setdefault((tuple(t.shape), t.dtype, t.device, _layout(t)), []).append(t)

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
        if kept is not None and kept.shape == frames.shape and _layout(kept) == _layout(frames):
            kept.copy_(frames)
        else:
            self._memory[layer] = frames.clone(memory_format=torch.preserve_format)

    def mark(self, layer: nn.Module) -> None:
        """Remember that a first-chunk rule of `layer` has been applied."""
        self._memory[layer] = _STARTED


_STARTED = torch.empty(0, 0, 0, 0, 0)  # a history of no frames


def _layout(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 5 and t.shape[1] > 1 and t.stride(1) == 1:
        return torch.channels_last_3d
    return torch.contiguous_format


def _empty(like: torch.Tensor, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised tensor of `shape` in the same memory layout (NCDHW or channels_last_3d) as `like`."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=_layout(like))


def _frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W] (a view for channels_last_3d tensors)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _unframes(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]."""
    bt, c, h, w = x.shape
    return x.view(batch, bt // batch, c, h, w).transpose(1, 2)


class RMSNorm(nn.Module):
    """`F.normalize(x, dim=1) * sqrt(C) * gamma`, optionally followed by SiLU, written into `out`.

    When x or `out` is half precision (`out` is then a half-precision conv's input buffer), the norm
    is computed in fp32 and rounded once on the way out: an fp16 zero vector would give 0/0 = NaN
    (diffusers takes the norm in fp32 too since PR #13316), and mixed-dtype elementwise ops on the
    CPU go through full-size fp32 temporaries (measured 241 ms vs 16 ms in fp32 for [1, 96, 4, 240, 416]).
    """

    SLICE_ELEMENTS = 1 << 20  # fp32 scratch per step of the half-precision path: 4 MB, reused by malloc

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None, silu: bool = False) -> torch.Tensor:
        if out is None:
            out = _empty(x, x.shape) if x.dim() == 5 else torch.empty_like(x)
        if x.dtype == out.dtype == torch.float32:
            return self._normalize(x, out, silu)
        frames = [(x, out)] if x.dim() == 4 else [(x[:, :, t], out[:, :, t]) for t in range(x.shape[2])]
        for xf, of in frames:  # [B, C, H, W] each, processed in bands of rows
            rows = max(1, self.SLICE_ELEMENTS // (xf[0, :, 0].numel()))
            for y in range(0, xf.shape[2], rows):
                band = xf[:, :, y : y + rows]
                src = band if band.dtype == torch.float32 else band.float()
                of[:, :, y : y + rows].copy_(self._normalize(src, torch.empty_like(src) if src is band else src, silu))
        return out

    def _normalize(self, x: torch.Tensor, out: torch.Tensor, silu: bool) -> torch.Tensor:
        """The norm of fp32 x into fp32 `out` (which may be x)."""
        gamma = self.gamma if x.dim() == self.gamma.dim() + 1 else self.gamma.squeeze(-1)  # bands are 4-D
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        torch.div(x, norm.clamp_min_(1e-12), out=out)
        out.mul_(gamma.float() * self.scale)
        return F.silu(out, inplace=True) if silu else out


class CausalConv3d(nn.Conv3d):
    """A Conv3d that is causal in time and continues across chunks through a `StreamState`.

    Kernels of time size 3 see the last two frames of the previous chunk (two zero frames at the
    start of a video); 1x1x1 kernels need no history. The input is built in one buffer so that a
    producer (the norm before the conv) can write its output straight into it:
    `buf, slot = conv.input_buffer(x, state)`, fill `slot`, then `conv.run(buf, state)`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding=0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding)
        self.compute_dtype = torch.float32  # see set_precision
        self.causal = self.kernel_size[0] > 1
        self.spatial_padding = (0, *self.padding[1:])

    def input_buffer(self, x: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, torch.Tensor]:
        """A buffer [B, C, history + T, H, W] in this conv's dtype, history in front, and the view for x's frames."""
        b, c, t, h, w = x.shape
        history = state.get(self)
        if history is None and t == 1:
            # First frame of a video: the two zero frames in front only meet zero taps (see `run`).
            buf = _empty(x, (b, c, 1, h, w), self.compute_dtype)  # used once per video: not worth keeping
            return buf, buf
        buf = state.workspace.take(x, (b, c, CACHE_T + t, h, w), self.compute_dtype)
        known = 0 if history is None else history.shape[2]
        if known < CACHE_T:
            buf[:, :, : CACHE_T - known].zero_()
        if known:
            buf[:, :, CACHE_T - known : CACHE_T].copy_(history)
        return buf, buf[:, :, CACHE_T:]

    def params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias in `compute_dtype` (cast on the fly when stored otherwise)."""
        if self.weight.dtype == self.compute_dtype:
            return self.weight, self.bias
        return self.weight.to(self.compute_dtype), None if self.bias is None else self.bias.to(self.compute_dtype)

    def run(self, buf: torch.Tensor, state: StreamState) -> torch.Tensor:
        state.put(self, buf[:, :, -CACHE_T:])
        weight, bias = self.params()
        if buf.shape[2] == 1:
            # Only the last temporal tap meets a non-zero frame: a conv2d with that tap is exact.
            out = F.conv2d(buf[:, :, 0], weight[:, :, -1], bias, padding=self.spatial_padding[1:]).unsqueeze(2)
        else:
            out = F.conv3d(buf, weight, bias, padding=self.spatial_padding)
            state.workspace.give(buf)
        # PyTorch runs small CPU convs (N*C*D*H <= 20480) with a kernel that returns NCDHW; keep the
        # layout, or every later layer would leave channels_last too.
        return out.contiguous(memory_format=_layout(buf))

    def run_taps(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        """The same causal conv for layers with few output channels (the decoder head: 96 -> 3).

        One conv2d per frame with the three temporal taps stacked as outputs gives each frame's
        contribution to itself and to the next two frames; what is owed to frames of the next piece
        is carried as two frames of output channels instead of two frames of (many) input channels.
        """
        b, _, t, h, w = x.shape
        co = self.out_channels
        weight, bias = self.params()
        taps = weight.permute(2, 0, 1, 3, 4).reshape(3 * co, self.in_channels, *self.kernel_size[1:])
        per_frame = _unframes(F.conv2d(_frames(x.to(taps.dtype)), taps, padding=self.spatial_padding[1:]), b)
        oldest, middle, current = per_frame.split(co, dim=1)  # weights for frames t-2, t-1, t
        owed = torch.zeros(b, co, t + 2, h, w, dtype=per_frame.dtype, device=x.device)
        owed[:, :, 1 : t + 1] += middle
        owed[:, :, 2 : t + 2] += oldest
        carried = state.get(self)
        if carried is not None:
            owed[:, :, :2] += carried
        state.put(self, owed[:, :, t:])
        return current.add(owed[:, :, :t]).add_(bias.view(1, co, 1, 1, 1))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if not self.causal:
            weight, bias = self.params()
            return F.conv3d(x.to(weight.dtype), weight, bias)
        buf, slot = self.input_buffer(x, state)
        slot.copy_(x)
        return self.run(buf, state)


class ResidualBlock(nn.Module):
    """RMS norm, SiLU, 3x3x3 conv, RMS norm, SiLU, 3x3x3 conv, plus the (1x1x1 when widths differ) shortcut.

    `residual` keeps the original Wan indices (0 norm, 2 conv, 3 norm, 6 conv); 1, 4, 5 hold no weights.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.ModuleList([
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1),
        ])  # fmt: skip
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor, state: StreamState, keep_input: bool = False) -> torch.Tensor:
        """The sum goes into an existing buffer: h's, or when half-precision convs feed an fp32 sum,
        the skip's, which is x itself without a shortcut (x is then overwritten unless `keep_input`)."""
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        h = _norm_silu_conv(norm1, conv1, x, state)
        h = _norm_silu_conv(norm2, conv2, h, state)
        skip = x if self.shortcut is None else self.shortcut(x)
        if h.dtype == skip.dtype:
            return h.add_(skip)
        return x + h if skip is x and keep_input else skip.add_(h)


def _norm_silu_conv(norm: RMSNorm, conv: CausalConv3d, x: torch.Tensor, state: StreamState) -> torch.Tensor:
    buf, slot = conv.input_buffer(x, state)
    norm(x, out=slot, silu=True)
    return conv.run(buf, state)


class AttentionBlock(nn.Module):
    """Single-head self-attention within each frame (tokens = h*w positions, head size = C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        qkv = F.conv2d(self.norm(_frames(x)), *_fp32(self.to_qkv))  # [B*T, 3C, h, w]
        q, k, v = qkv.flatten(2).transpose(1, 2).unsqueeze(1).chunk(3, dim=-1)  # [B*T, 1, h*w, C] each
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return x.add(_unframes(F.conv2d(out, *_fp32(self.proj)), b))  # x first: the sum keeps x's memory layout


class Resample(nn.Module):
    """Spatial x2 up/down-sampling per frame, with an optional causal x2 in time (`time_conv`).

    `resample` keeps the original indices: 0 is the parameter-free nearest upsample / zero pad, 1 the conv.
    """

    def __init__(self, dim: int, mode: str, out_dim: int | None = None) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0), nn.Conv2d(dim, out_dim, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))
        else:
            self.time_conv = None

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, state)
        conv = self.resample[1]
        frames = _frames(x)
        if self.mode.startswith("upsample"):
            frames = _upsample_conv(frames, *_fp32(conv))
        else:
            frames = F.conv2d(F.pad(frames, (0, 1, 0, 1)), *_fp32(conv), stride=2)
        x = _unframes(frames, x.shape[0])
        if self.mode == "downsample3d":
            x = self._halve_frames(x, state)
        return x

    def _double_frames(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        """[B, C, T] -> [B, C, 2T] frames; at the start of a video frame 0 passes through alone (2T - 1)."""
        first = state.get(self.time_conv) is None
        head, rest = (x[:, :, :1], x[:, :, 1:]) if first else (None, x)
        if rest.shape[2] == 0:
            state.mark(self.time_conv)  # started; the next chunk begins with zero history
            return head
        pairs = self.time_conv(rest, state)  # [B, 2C, T', H, W]: channels [:C] make frame 2i, [C:] 2i+1
        b, c, t, h, w = rest.shape
        out = _empty(x, (b, c, (head is not None) + 2 * t, h, w))
        if head is not None:
            out[:, :, :1] = head
        body = out[:, :, int(head is not None) :]
        body[:, :, 0::2] = pairs[:, :c]
        body[:, :, 1::2] = pairs[:, c:]
        return out

    def _halve_frames(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        """Stride-2 causal conv over time: [f0] + conv(f0 f1 f2), conv(f2 f3 f4), ... across chunks."""
        history = state.get(self.time_conv)
        if history is not None:
            history = history.clone()  # `put` below overwrites the kept frame in place
        state.put(self.time_conv, x[:, :, -1:])
        if history is None:
            if x.shape[2] < 3:
                return x[:, :, :1]
            return torch.cat([x[:, :, :1], F.conv3d(x, *_fp32(self.time_conv), stride=(2, 1, 1))], dim=2)
        return F.conv3d(torch.cat([history, x], dim=2), *_fp32(self.time_conv), stride=(2, 1, 1))


def _fp32(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a layer outside the half-precision blocks, in fp32 whatever their storage."""
    return conv.weight.float(), conv.bias.float()


def _upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv2d(nearest_x2(x), weight, bias, padding=1) without building the x2 image.

    Output pixel (2i+a, 2j+c) sees input rows {i-1, i} (a=0) or {i, i+1} (a=1), each upsampled row
    hit by one or two kernel rows; so each of the four phases is a 2x2 conv on x with summed kernel
    rows and columns. 2.25x fewer multiply-adds, and no 4x-size intermediate.
    """
    n, _, h, w = x.shape
    k = weight
    out = torch.empty(n, weight.shape[0], 2 * h, 2 * w, dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if x.stride(1) == 1 else torch.contiguous_format)  # fmt: skip
    for a in (0, 1):
        rows = torch.stack([k[:, :, 0], k[:, :, 1] + k[:, :, 2]] if a == 0 else [k[:, :, 0] + k[:, :, 1], k[:, :, 2]], 2)
        for c in (0, 1):
            cols = [rows[..., 0], rows[..., 1] + rows[..., 2]] if c == 0 else [rows[..., 0] + rows[..., 1], rows[..., 2]]
            phase = F.conv2d(x, torch.stack(cols, -1), bias, padding=1)  # windows start at -1
            out[:, :, a::2, c::2] = phase[:, :, a : a + h, c : c + w]
    return out


def avg_down_3d(x: torch.Tensor, out_channels: int, factor_t: int, factor_s: int) -> torch.Tensor:
    """Wan 2.2 encoder shortcut: fold (factor_t, factor_s, factor_s) blocks into channels and average groups.

    Time is zero-padded in front to a multiple of factor_t; that only happens at the start of a video,
    since later chunks hold a multiple of factor_t frames.
    """
    pad_t = (factor_t - x.shape[2] % factor_t) % factor_t
    x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // factor_t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # channel index c*F + a*fs^2 + b*fs + d
    factor = factor_t * factor_s * factor_s
    x = x.reshape(b, out_channels, c * factor // out_channels, t // factor_t, h // factor_s, w // factor_s)
    return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Wan 2.2 decoder shortcut: repeat channels and unfold them into (factor_t, factor_s, factor_s) blocks."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        self.repeats = out_dim * factor_t * factor_s * factor_s // in_dim

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        b, _, t, h, w = x.shape
        ft, fs = self.factor_t, self.factor_s
        x = x.repeat_interleave(self.repeats, dim=1).reshape(b, self.out_dim, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        if state.get(self) is None:
            state.mark(self)  # the first chunk's leading frames are dropped once
            x = x[:, :, ft - 1 :]
        return x


class DownStage(nn.Module):
    """Wan 2.2 encoder stage: residual blocks and a downsample, plus the AvgDown3D shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, down: bool) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ResidualBlock(in_dim if i == 0 else out_dim, out_dim) for i in range(num_res_blocks)]
        if down:
            blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.ModuleList(blocks)
        self.out_dim = out_dim
        self.factor_t, self.factor_s = (2 if temporal and down else 1), (2 if down else 1)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        h = self.downsamples[0](x, state, keep_input=True)  # x is still needed for the shortcut
        for block in self.downsamples[1:]:
            h = block(h, state)
        return h.add_(avg_down_3d(x, self.out_dim, self.factor_t, self.factor_s))


class UpStage(nn.Module):
    """Wan 2.2 decoder stage: residual blocks and an upsample, plus the DupUp3D shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, up: bool) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ResidualBlock(in_dim if i == 0 else out_dim, out_dim) for i in range(num_res_blocks + 1)]
        if up:
            blocks.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim))
        self.upsamples = nn.ModuleList(blocks)
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up else None

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        h = self.upsamples[0](x, state, keep_input=True)  # x is still needed for the shortcut
        for block in self.upsamples[1:]:
            h = block(h, state)
        return h if self.avg_shortcut is None else h.add_(self.avg_shortcut(x, state))


def _head(dim: int, out_dim: int) -> nn.ModuleList:
    return nn.ModuleList([RMSNorm(dim), nn.SiLU(), CausalConv3d(dim, out_dim, 3, padding=1)])


class Encoder(nn.Module):
    """Video [B, 3*p*p, F, H, W] -> [B, 2*z_dim, T, H/8, W/8] (mean and log-variance), streaming over time.

    Two passes per chunk of frames, the decoder's mirror: `down_pass` (the entry conv and the downsampling
    stages) is local, every spatial op a 3x3 conv, a per-pixel norm or a stride-2 conv, so a tile of its
    output depends only on a bounded window of the input (`stage_intervals`) and it can run on that window
    alone (`tiling.Window`); `middle_pass` (the middle block, whose attention sees the whole frame, and the
    head) runs on the whole frame at latent resolution.
    """

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        dims = cfg.encoder_dims
        self.conv1 = CausalConv3d(cfg.image_channels, dims[0], 3, padding=1)
        last = len(cfg.dim_mult) - 1
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and cfg.temporal_downsample[i]
            if cfg.is_residual:
                layers.append(DownStage(in_dim, out_dim, cfg.num_res_blocks, temporal, down=i < last))
                continue
            layers += [ResidualBlock(in_dim if j == 0 else out_dim, out_dim) for j in range(cfg.num_res_blocks)]
            if i < last:
                layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.ModuleList(layers)
        self.stages: list[list[nn.Module]] = [[self.conv1]]  # each ends in a x2 downsample, but the last
        for layer in layers:
            self.stages[-1].append(layer)
            if _halves(layer) and layer is not layers[-1]:
                self.stages.append([])
        self.middle = nn.ModuleList([ResidualBlock(dims[-1], dims[-1]), AttentionBlock(dims[-1]), ResidualBlock(dims[-1], dims[-1])])
        self.head = _head(dims[-1], cfg.z_dim * 2)

    @property
    def stage_scales(self) -> list[int]:
        """Spatial downsampling factor of each stage of `down_pass` (2, or 1 for the last)."""
        return [2 if _halves(stage[-1]) else 1 for stage in self.stages]

    def stage_intervals(self, a: int, b: int, length: int, stages: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Along one axis: what `down_pass` over `stages` [first, last) (all of them by default) must see for
        its output cells [a, b) of a frame `length` cells long.

        One interval per stage input, in that stage's pixels, then [a, b) itself. Walked backwards over
        the modules (a conv with padding p widens by p; the stride-2 conv reads 2j .. 2j+2 for cell j),
        clipped to the frame, and widened to even bounds where the stage halves, so that the window's
        stride grid is the frame's.
        """
        first, last = stages or (0, len(self.stages))
        scales = self.stage_scales  # read off the modules: once, not per stage (the planner calls this per tile)
        intervals = [(a, b)]
        size = length
        for i in reversed(range(first, last)):
            for layer in reversed(self.stages[i]):
                a, b = _interval_before(layer, a, b)
            size *= scales[i]
            a, b = max(a, 0), min(b, size)
            if scales[i] == 2:
                a, b = a - a % 2, b + b % 2
            intervals.append((a, b))
        return intervals[::-1]

    def down_pass(self, x: torch.Tensor, state: StreamState, window=None, stages: tuple[int, int] | None = None) -> torch.Tensor:
        """Entry conv and downsampling stages for one chunk (or only `stages` [first, last), x being the input
        of stage `first`); with a `window`, x covers `window.regions[0]`, each stage runs on what the tile
        needs and the output is the tile's own cells."""
        first, last = stages or (0, len(self.stages))
        for i in range(first, last):
            if window is not None and i > first:
                x = window.crop(i - first, x)
            for layer in self.stages[i]:
                x = layer(x, state)
        return x if window is None else window.crop(last - first, x)

    def middle_pass(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        """Middle block and head for one chunk, always on the whole latent frame."""
        for layer in self.middle:
            x = layer(x, state)
        return _norm_silu_conv(self.head[0], self.head[2], x, state)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        return self.middle_pass(self.down_pass(x, state), state)


def _halves(layer: nn.Module) -> bool:
    """Whether an encoder layer halves the frame (a stride-2 Resample, or a Wan 2.2 stage ending in one)."""
    return isinstance(layer, Resample) and layer.mode.startswith("downsample") or isinstance(layer, DownStage) and layer.factor_s == 2


def _interval_before(layer: nn.Module, a: int, b: int) -> tuple[int, int]:
    """The input interval (one axis) that an encoder layer's output cells [a, b) depend on."""
    if isinstance(layer, DownStage):  # its AvgDown3D shortcut reads 2j .. 2j+1: the main path is the wider one
        for block in reversed(layer.downsamples):
            a, b = _interval_before(block, a, b)
        return a, b
    if isinstance(layer, ResidualBlock):
        pad = layer.residual[2].padding[-1] + layer.residual[6].padding[-1]
        return a - pad, b + pad
    if isinstance(layer, Resample) and layer.mode.startswith("downsample"):
        return 2 * a, 2 * b + 1  # zero pad right/bottom by one, then a 3x3 conv of stride 2
    if isinstance(layer, CausalConv3d):
        return a - layer.padding[-1], b + layer.padding[-1]
    raise TypeError(f"no receptive field rule for {type(layer).__name__}")


class Decoder(nn.Module):
    """Latent [B, z_dim, T, h, w] -> [B, 3*p*p, 1 + 4(T-1), 8h, 8w] at the start of a video, 4T later.

    Two passes per chunk of latent frames: `middle_pass` (entry conv and middle block, whose attention
    sees the whole frame, at latent resolution) and `up_pass` (the upsampling stages and the head).
    Every spatial op of `up_pass` is a 3x3 (or 1x1) conv, a per-pixel norm or a nearest upsample, so
    a tile of its output depends only on a bounded window of the middle output (`receptive_radii`):
    `up_pass` can run on one tile's window (`tiling.Window`) and give exactly the untiled pixels.

    `up_pass` yields the output in consecutive time pieces: after each stage the frames are split into
    pieces of at most `max_frames` that run through the rest of the network one after the other.
    Smaller pieces bound the memory of the full-resolution stages; larger ones give bigger, faster
    convolutions. Both give the same numbers (every later layer is causal and keeps its history).
    """

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        dims = cfg.decoder_dims
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.ModuleList([ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0])])
        last = len(cfg.dim_mult) - 1
        blocks: list[nn.Module] = []
        self.stages: list[list[nn.Module]] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and cfg.temporal_upsample[i]
            if cfg.is_residual:
                blocks.append(UpStage(in_dim, out_dim, cfg.num_res_blocks, temporal, up=i < last))
                self.stages.append([blocks[-1]])
                continue
            stage = [ResidualBlock((in_dim // 2 if i > 0 else in_dim) if j == 0 else out_dim, out_dim) for j in range(cfg.num_res_blocks + 1)]
            if i < last:
                stage.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim // 2))
            blocks.extend(stage)
            self.stages.append(stage)
        self.upsamples = nn.ModuleList(blocks)
        self.head = _head(dims[-1], cfg.image_channels)

    @property
    def stage_scales(self) -> list[int]:
        """Spatial upsampling factor of each stage of `up_pass` (2, or 1 for the last)."""
        return [2 if any(isinstance(m, Resample) for layer in stage for m in layer.modules()) else 1 for stage in self.stages]

    def receptive_radii(self) -> list[int]:
        """How far, in pixels of each stage's input, the output of `up_pass` looks: one radius per stage, then 0.

        Walked backwards from the head over the modules themselves: a conv with spatial padding p widens
        the window by p; a nearest x2 upsample followed by its conv halves it (rounded up). For Wan 2.1
        and 2.2 this gives 13 latent cells at the middle block's output.
        """
        radius = self.head[2].padding[-1]
        radii = [0]
        for stage in reversed(self.stages):
            for layer in reversed(stage):
                radius = _radius_before(layer, radius)
            radii.append(radius)
        return radii[::-1]

    def middle_pass(self, z: torch.Tensor, state: StreamState, final: bool = False) -> torch.Tensor:
        """Entry conv and middle block for one chunk of latent frames, always on the whole frame."""
        state.final = final
        x = self.conv1(z, state)
        for layer in self.middle:
            x = layer(x, state)
        return x

    def up_pass(self, x: torch.Tensor, state: StreamState, window=None, max_frames: int | None = None,
                final: bool = False) -> Iterator[torch.Tensor]:  # fmt: skip
        """The upsampling stages and head for one chunk of `middle_pass` output; `final` if no chunk follows
        (layers then keep no history). With a `window` (tiling.Window), x covers `window.regions[0]` and
        each stage runs on the part of its input that the tile's output needs; the output is the tile."""
        yield from self._run_stages(0, x, state, window, max_frames, final)

    def _run_stages(self, i: int, x: torch.Tensor, state: StreamState, window, max_frames: int | None,
                    final: bool) -> Iterator[torch.Tensor]:  # fmt: skip
        state.final = final  # set before this call's layers run; pieces below set their own
        state.workspace.clear()
        if window is not None and 0 < i < len(self.stages):
            x = window.crop(i, x)
        if i == len(self.stages):
            norm, _, conv = self.head
            act = state.workspace.take(x, x.shape)
            out = conv.run_taps(norm(x, out=act, silu=True), state)
            del x
            state.workspace.give(act)
            yield out if window is None else window.crop(i, out)  # the head ran on the last stage's window
            return
        for layer in self.stages[i]:
            x = layer(x, state)
        # The final chunk runs whole: splitting it would only build history for its own later pieces.
        pieces = list(x.split(max_frames, dim=2)) if max_frames and not final else [x]
        del x
        while pieces:
            # pop: once handed down, a piece is referenced only by the stage using it, so it is freed there.
            last = len(pieces) == 1
            yield from self._run_stages(i + 1, pieces.pop(0), state, window, max_frames, final and last)


def _radius_before(layer: nn.Module, radius: int) -> int:
    """The window radius at `layer`'s input that its output needs within `radius` (pixels of each side)."""
    if isinstance(layer, UpStage):  # its DupUp3D shortcut is per pixel: the main path is the wider one
        for block in reversed(layer.upsamples):
            radius = _radius_before(block, radius)
        return radius
    if isinstance(layer, ResidualBlock):
        return radius + layer.residual[6].padding[-1] + layer.residual[2].padding[-1]
    if isinstance(layer, Resample) and layer.mode.startswith("upsample"):
        return -(-(radius + layer.resample[1].padding[-1]) // 2)  # the conv runs on the x2 image
    raise TypeError(f"no receptive field rule for {type(layer).__name__}")


class WanVAEModel(nn.Module):
    """The whole network; its state-dict keys are the original Wan names (encoder., conv1., conv2., decoder.)."""

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)  # "quant conv": encoder output -> mean, logvar
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)  # "post-quant conv": latent -> decoder input
        self.decoder = Decoder(cfg)


def half_precision_blocks(model: WanVAEModel) -> list[ResidualBlock]:
    """The residual blocks at the encoder's and the decoder's two highest resolutions.

    Their 3x3x3 convs are most of the work: 72% of the Wan 2.1 decoder's multiply-adds, 70% of 2.2's.
    Measured with random real-size weights, rounding one conv of the decoder to bf16 (input, weight
    and output) adds 1.3e-3 to 5e-3 relative L2 at the output, evenly spread, and the errors add in
    quadrature; keeping the other 28% of the work in fp32 takes the total from 1.5e-2 to 8e-3.
    """
    decoder = [b for stage in model.decoder.stages[-2:] for layer in stage for b in layer.modules() if isinstance(b, ResidualBlock)]
    encoder, stages = [], 0
    for layer in model.encoder.downsamples:  # Wan 2.1: blocks and Resamples in one list; 2.2: DownStages
        encoder += [b for b in layer.modules() if isinstance(b, ResidualBlock)]
        stages += isinstance(layer, (Resample, DownStage))
        if stages == 2:
            break
    return encoder + decoder


def set_precision(model: WanVAEModel, dtype: torch.dtype) -> None:
    """fp32 everywhere, or fp16/bf16 in the convs of `half_precision_blocks` with everything else in fp32.

    Everything else is the residual sums, norms, attention, up/downsampling, the entry and exit convs
    and the low-resolution stages: in half precision they would double the error for little time
    (pure bf16 measured 2.4e-2 relative L2 against fp32 on the decoder benchmark). Their weights keep
    the precision they were loaded in and are cast to fp32 as they are used, so a bf16 file takes no
    more memory than in pure bf16 (Wan 2.2: 1.4 GB, not 2.7). Each conv casts its input to its compute
    dtype when filling its input buffer, so the boundaries need no other code.
    """
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, not {dtype}")
    heavy = {conv for block in half_precision_blocks(model) for conv in (block.residual[2], block.residual[6])}
    for module in model.modules():
        if isinstance(module, CausalConv3d):
            module.compute_dtype = dtype if module in heavy else torch.float32
    if dtype == torch.float32:
        model.float()
        return
    for conv in heavy:
        conv.to(dtype)


def precision(model: WanVAEModel) -> torch.dtype:
    """The dtype `set_precision` gave the model (its half-precision convs' dtype)."""
    return half_precision_blocks(model)[-1].residual[6].compute_dtype


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, F, H*p, W*p] -> [B, C*p*p, F, H, W] with channel index c*p*p + r*p + q, r the column offset.

    This is Wan's (c r q) einops order, not F.pixel_unshuffle's (c q r) order.
    """
    if p == 1:
        return x
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, f, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of `patchify`: [B, C*p*p, F, H, W] -> [B, C, F, H*p, W*p]."""
    if p == 1:
        return x
    b, cpp, f, h, w = x.shape
    x = x.reshape(b, cpp // (p * p), p, p, f, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, cpp // (p * p), f, h * p, w * p)
