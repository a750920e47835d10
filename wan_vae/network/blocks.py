"""The building blocks of the Wan VAE, each continuing a video chunk by chunk through a `StreamState`.

Module names reproduce the original Wan checkpoint keys (`residual.2.weight`, `resample.1.weight`), so
original and ComfyUI files load without renaming; `files/key_names.py` maps diffusers names onto them.

Every block takes and gives [B, C, T, H, W] (channels_last_3d memory when given it, which makes the
per-frame 2-D views free). The numerics contract (shared/reference/wan_reference.md section 1.3) is kept
by construction, so any chunking of time gives the reference's numbers:
  - a 3x3x3 causal conv sees two zero frames before the first frame, then the last two input frames
    of the previous chunk;
  - each temporal upsample passes frame 0 through untouched and doubles frames 1.. with their own
    two zero frames in front (the reference's "Rep" marker);
  - each temporal downsample (encoder) passes frame 0 through and runs its stride-2 conv over the
    whole sequence starting at frame 0;
  - the Wan 2.2 DupUp3D shortcut drops its first (factor_t - 1) frames once.
Over 400 lines because each rule above lives in the block it governs, beside that block's fast path; the
encoder, decoder and model (encoder.py, decoder.py, model.py) only assemble these blocks.
Convs run in their `compute_dtype` (fp32, or fp16/bf16 in the heavy blocks or in every conv but the heads:
model.set_precision), the other layers in their input's precision; the norms compute in fp32 at every precision.
On the GPU path (device/gpu.py) the same numbers are cut differently: weights cast and phase kernels made once per
decode (`cast_once`, `Workspace.cached`), the upsample's phases in one conv, a conv's bias left to the next norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..device.gpu import gpu_shaped
from ..kernels import norm as _norm_op  # noqa: F401  (registers torch.ops.wan_vae.rms_norm)
from .stream import CACHE_T, StreamState, empty_in_layout, from_frames, memory_layout, to_frames


class RMSNorm(nn.Module):
    """`F.normalize(x, dim=1) * sqrt(C) * gamma`, optionally after adding a bias (a conv's, deferred) and followed by
    SiLU, written into `out` (often a conv's input buffer, in its dtype). One fused op, `wan_vae::rms_norm`
    (kernels/norm.py): a Triton kernel on CUDA, torch elsewhere, computed in fp32 and rounded once on the way out."""

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None, silu: bool = False,
                bias: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        if out is None:
            out = empty_in_layout(x, x.shape) if x.dim() == 5 else torch.empty_like(x)
        torch.ops.wan_vae.rms_norm(x, self.gamma, bias, out, self.scale, silu)
        return out


class CausalConv3d(nn.Conv3d):
    """A Conv3d that is causal in time and continues across chunks through a `StreamState`.

    Kernels of time size 3 see the last two frames of the previous chunk (two zero frames at the
    start of a video); kernels of time size 1 (1x1x1, and an image VAE's 1x3x3) need no history. The input is built in one buffer so that a
    producer (the norm before the conv) can write its output straight into it:
    `buf, slot = conv.input_buffer(x, state)`, fill `slot`, then `conv.run(buf, state)`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding=0, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, groups=groups)
        self.compute_dtype = torch.float32  # see set_precision
        self.causal = self.kernel_size[0] > 1
        self.spatial_padding = (0, *self.padding[1:])

    def input_buffer(self, x: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, torch.Tensor]:
        """A buffer [B, C, history + T, H, W] in this conv's dtype, history in front, and the view for x's frames."""
        b, c, t, h, w = x.shape
        history = state.get(self) if self.causal else None
        if not self.causal:
            buf = empty_in_layout(x, (b, c, t, h, w), self.compute_dtype)
            return buf, buf
        if history is None and t == 1:
            # First frame of a video: the two zero frames in front only meet zero taps (see `run`).
            buf = empty_in_layout(x, (b, c, 1, h, w), self.compute_dtype)  # used once per video: not worth keeping
            return buf, buf
        buf = state.workspace.take(x, (b, c, CACHE_T + t, h, w), self.compute_dtype)
        known = 0 if history is None else history.shape[2]
        if known < CACHE_T:
            buf[:, :, : CACHE_T - known].zero_()
        if known:
            buf[:, :, CACHE_T - known : CACHE_T].copy_(history)
        return buf, buf[:, :, CACHE_T:]

    def params(self, state: StreamState | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias in `compute_dtype`: cast on the fly when stored otherwise, once per decode on the GPU path."""
        if self.weight.dtype == self.compute_dtype:
            return self.weight, self.bias
        return cast_once(self, state, self.compute_dtype)

    def run(self, buf: torch.Tensor, state: StreamState, with_bias: bool = True) -> torch.Tensor:
        """The conv of a filled `input_buffer`; without its bias when a fused norm adds it later (`with_bias=False`)."""
        if self.causal:
            state.put(self, buf[:, :, -CACHE_T:])
        weight, bias = self.params(state)
        bias = bias if with_bias else None
        if buf.shape[2] == 1:
            # Only the last temporal tap meets a non-zero frame: a conv2d with that tap is exact.
            out = F.conv2d(buf[:, :, 0], weight[:, :, -1], bias, padding=self.spatial_padding[1:], groups=self.groups).unsqueeze(2)
        else:
            out = F.conv3d(buf, weight, bias, padding=self.spatial_padding, groups=self.groups)
            if self.causal:  # a workspace buffer (`input_buffer`)
                state.workspace.give(buf)
        # PyTorch runs small CPU convs (N*C*D*H <= 20480) with a kernel that returns NCDHW; keep the
        # layout, or every later layer would leave channels_last too.
        return out.contiguous(memory_format=memory_layout(buf))

    def run_taps(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        """The same causal conv for layers with few output channels (the decoder head: 96 -> 3).

        One conv2d per frame with the three temporal taps stacked as outputs gives each frame's
        contribution to itself and to the next two frames; what is owed to frames of the next piece
        is carried as two frames of output channels instead of two frames of (many) input channels.
        """
        if not self.causal:
            return self(x, state)
        b, _, t, h, w = x.shape
        co = self.out_channels
        weight, bias = self.params(state)

        def stacked() -> torch.Tensor:
            return weight.permute(2, 0, 1, 3, 4).reshape(3 * co, self.in_channels, *self.kernel_size[1:])

        taps = state.workspace.cached((self, "taps"), stacked) if gpu_shaped(x) else stacked()
        per_frame = from_frames(F.conv2d(to_frames(x.to(taps.dtype)), taps, padding=self.spatial_padding[1:]), b)
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
            weight, bias = self.params(state)
            return F.conv3d(x.to(weight.dtype), weight, bias, padding=self.spatial_padding, groups=self.groups)
        buf, slot = self.input_buffer(x, state)
        slot.copy_(x)
        return self.run(buf, state)


def conv3x3(in_dim: int, out_dim: int, t: int = 3) -> CausalConv3d:
    """A 3x3 spatial conv, causal over `t` frames (3; 1 in an image VAE, whose kernels are 2-D)."""
    return CausalConv3d(in_dim, out_dim, (t, 3, 3), padding=(t // 2, 1, 1))


class ResidualBlock(nn.Module):
    """RMS norm, SiLU, 3x3x3 conv, RMS norm, SiLU, 3x3x3 conv, plus the (1x1x1 when widths differ) shortcut.

    `residual` keeps the original Wan indices (0 norm, 2 conv, 3 norm, 6 conv); 1, 4, 5 hold no weights.
    """

    def __init__(self, in_dim: int, out_dim: int, t: int = 3) -> None:
        super().__init__()
        self.residual = nn.ModuleList([
            RMSNorm(in_dim), nn.SiLU(), conv3x3(in_dim, out_dim, t),
            RMSNorm(out_dim), nn.SiLU(), nn.Identity(), conv3x3(out_dim, out_dim, t),
        ])  # fmt: skip
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor, state: StreamState, keep_input: bool = False) -> torch.Tensor:
        """The sum goes into an existing buffer: h's, or when half-precision convs feed an fp32 sum,
        the skip's, which is x itself without a shortcut (x is then overwritten unless `keep_input`)."""
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        if gpu_shaped(x):  # conv1's bias is added by norm2's fused kernel: one pass over h fewer
            h = norm_silu_conv(norm1, conv1, x, state, with_bias=False)
            h = norm_silu_conv(norm2, conv2, h, state, bias=conv1.params(state)[1])
        else:
            h = norm_silu_conv(norm1, conv1, x, state)
            h = norm_silu_conv(norm2, conv2, h, state)
        skip = x if self.shortcut is None else self.shortcut(x, state)
        if h.dtype == skip.dtype:
            return h.add_(skip)
        return x + h if skip is x and keep_input else skip.add_(h)


def norm_silu_conv(norm: RMSNorm, conv: CausalConv3d, x: torch.Tensor, state: StreamState, with_bias: bool = True,
                   bias: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """conv(silu(norm(x + bias))), the norm written straight into the conv's input buffer."""
    buf, slot = conv.input_buffer(x, state)
    norm(x, out=slot, silu=True, bias=bias)
    return conv.run(buf, state, with_bias)


def cast_once(conv: nn.Module, state: StreamState | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`conv`'s weight and bias in `dtype`: on the GPU path made once per decode and kept in its workspace (a copy of
    the weights that need it, at most the model's size again), elsewhere cast per use (no memory kept)."""

    def cast() -> tuple[torch.Tensor, torch.Tensor | None]:
        return conv.weight.to(dtype), None if conv.bias is None else conv.bias.to(dtype)

    if state is None or not gpu_shaped(conv.weight):
        return cast()
    return state.workspace.cached((conv, dtype), cast)


class AttentionBlock(nn.Module):
    """Single-head self-attention within each frame (tokens = h*w positions, head size = C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        qkv = F.conv2d(self.norm(to_frames(x)), *full_params(self.to_qkv, x, state))  # [B*T, 3C, h, w]
        q, k, v = qkv.flatten(2).transpose(1, 2).unsqueeze(1).chunk(3, dim=-1)  # [B*T, 1, h*w, C] each
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return x.add(from_frames(F.conv2d(out, *full_params(self.proj, out, state)), b))  # x first: the sum keeps x's memory layout


class Resample(nn.Module):
    """Spatial x2 up/down-sampling per frame, with an optional causal x2 in time (`time_conv`).

    `resample` keeps the original indices: 0 is the parameter-free nearest upsample / zero pad, 1 the conv.
    """

    def __init__(self, dim: int, mode: str, out_dim: int | None = None, t: int = 3) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0), nn.Conv2d(dim, out_dim, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (t, 1, 1), padding=(t // 2, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = nn.Conv3d(dim, dim, (t, 1, 1), stride=(2, 1, 1))
        else:
            self.time_conv = None

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, state)
        conv = self.resample[1]
        frames = to_frames(x)
        if self.mode.startswith("upsample") and gpu_shaped(frames):
            frames = upsample_conv_stacked(frames, *state.workspace.cached((conv, "phases", frames.dtype), lambda: (
                stacked_phase_kernels(*full_params(conv, frames)))))  # fmt: skip
        elif self.mode.startswith("upsample"):
            frames = upsample_conv(frames, *full_params(conv, frames, state))
        else:
            frames = F.conv2d(F.pad(frames, (0, 1, 0, 1)), *full_params(conv, frames, state), stride=2)
        x = from_frames(frames, x.shape[0])
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
        out = empty_in_layout(x, (b, c, (head is not None) + 2 * t, h, w))
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
            return torch.cat([x[:, :, :1], F.conv3d(x, *full_params(self.time_conv, x, state), stride=(2, 1, 1))], dim=2)
        return F.conv3d(torch.cat([history, x], dim=2), *full_params(self.time_conv, x, state), stride=(2, 1, 1))


def full_params(conv: nn.Module, like: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a layer outside the residual blocks' causal convs, in fp32 whatever their storage, or in
    like's dtype where that is float64 (a float64 model) or half (a model in half precision everywhere)."""
    dtype = like.dtype if like.dtype in (torch.float64, torch.float16, torch.bfloat16) else torch.float32
    if conv.weight.dtype == dtype:
        return conv.weight, conv.bias
    return cast_once(conv, state, dtype)


def phase_kernels(weight: torch.Tensor) -> list[torch.Tensor]:
    """The four 2x2 kernels of a 3x3 conv after a nearest x2 upsample, phase (a, c) at index 2a + c.

    Output pixel (2i+a, 2j+c) sees input rows {i-1, i} (a=0) or {i, i+1} (a=1), each upsampled row hit by one or
    two kernel rows; so each phase is a 2x2 conv on x with summed kernel rows and columns (windows start at -1)."""
    k, kernels = weight, []
    for a in (0, 1):
        rows = torch.stack([k[:, :, 0], k[:, :, 1] + k[:, :, 2]] if a == 0 else [k[:, :, 0] + k[:, :, 1], k[:, :, 2]], 2)
        for c in (0, 1):
            kernels.append(torch.stack([rows[..., 0], rows[..., 1] + rows[..., 2]] if c == 0 else
                                       [rows[..., 0] + rows[..., 1], rows[..., 2]], -1))  # fmt: skip
    return kernels


def _upsampled_like(x: torch.Tensor, channels: int) -> torch.Tensor:
    n, _, h, w = x.shape
    return torch.empty(n, channels, 2 * h, 2 * w, dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if x.stride(1) == 1 else torch.contiguous_format)  # fmt: skip


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv2d(nearest_x2(x), weight, bias, padding=1) without building the x2 image: the four phases (`phase_kernels`)
    as four 2x2 convs on x. 2.25x fewer multiply-adds, and no 4x-size intermediate."""
    h, w = x.shape[2:]
    out = _upsampled_like(x, weight.shape[0])
    for p, kernel in enumerate(phase_kernels(weight)):
        a, c = divmod(p, 2)
        out[:, :, a::2, c::2] = F.conv2d(x, kernel, bias, padding=1)[:, :, a : a + h, c : c + w]
    return out


def stacked_phase_kernels(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four phase kernels as one conv's [4 * C_out, C_in, 2, 2] weight (phase-major) and its bias; in the
    weight's memory layout (channels last on the GPU path). Made once per decode on the GPU path."""
    kernels = torch.cat(phase_kernels(weight), 0)
    like_weight = torch.channels_last if weight.dim() == 4 and weight.stride(1) == 1 else torch.contiguous_format
    return kernels.contiguous(memory_format=like_weight), bias.repeat(4)


def upsample_conv_stacked(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`upsample_conv` in one convolution of the four phases' stacked kernels (one large conv is what a GPU runs
    well), then each phase's window into its pixels of the x2 frame."""
    h, w = x.shape[2:]
    co = kernels.shape[0] // 4
    phases = F.conv2d(x, kernels, bias, padding=1)  # [N, 4 * C_out, h + 1, w + 1]
    out = _upsampled_like(x, co)
    for p in range(4):
        a, c = divmod(p, 2)
        out[:, :, a::2, c::2] = phases[:, p * co : (p + 1) * co, a : a + h, c : c + w]
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

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, down: bool, t: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ResidualBlock(in_dim if i == 0 else out_dim, out_dim, t) for i in range(num_res_blocks)]
        if down:
            blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d", t=t))
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

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, up: bool, t: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ResidualBlock(in_dim if i == 0 else out_dim, out_dim, t) for i in range(num_res_blocks + 1)]
        if up:
            blocks.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim, t))
        self.upsamples = nn.ModuleList(blocks)
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up else None

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        h = self.upsamples[0](x, state, keep_input=True)  # x is still needed for the shortcut
        for block in self.upsamples[1:]:
            h = block(h, state)
        return h if self.avg_shortcut is None else h.add_(self.avg_shortcut(x, state))


def head_layers(dim: int, out_dim: int, t: int = 3) -> nn.ModuleList:
    return nn.ModuleList([RMSNorm(dim), nn.SiLU(), conv3x3(dim, out_dim, t)])



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


def pixel_shuffle(x: torch.Tensor, s: int) -> torch.Tensor:
    """An upscale decoder's head output [B, C*s*s, F, H, W] -> [B, C, F, H*s, W*s], frame by frame as
    `F.pixel_shuffle` orders it (channel c*s*s + i*s + j goes to row offset i, column offset j)."""
    if s == 1:
        return x
    return F.pixel_shuffle(x.transpose(1, 2), s).transpose(1, 2)
