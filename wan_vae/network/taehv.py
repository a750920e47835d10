"""Tiny Wan decoders of the TAEHV architecture: taew2_1 / taew2_2 (madebyollin/taehv) and LightX2V's lighttaew2_1 /
lighttaew2_2. About 11M parameters instead of 73M, lossy, many times faster. taew2_2_super (taehv, July 2026) is
the "Super" layout: a 1x1 entry conv (no input clamp), ConvNeXt-style memory blocks (a depthwise 7x7 conv and an
inverted 1x1 bottleneck) on wider stages, and pixel-shuffle upsampling; the same streaming rules.

The decoder is 2-D convolutions per frame, with time carried by "memory blocks": a block sees its own input at
the previous time step (zeros at the first), and two "grow" layers turn each frame into 2 (so each latent frame
into 4). The video starts 3 frames early: they are dropped, giving 1 + 4(T - 1) frames like the full VAEs.
Decoding a chunk of latent frames needs only each memory block's last input of the chunk before: `TinyState`
keeps those, so chunks of any size give the whole-video result.

Latents: taew2_x take the diffusion model's (normalized) latents and lighttaew2_x the VAE's (raw) latents; the
files have the same layout, so the file name tells (LightX2V's own rule: "lighttae" in the path means raw).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import CheckpointError
from ..files.checkpoint import check_against
from ..files.config import CONFIGS

log = logging.getLogger("wan_vae")

WIDTHS = (256, 128, 64, 64)  # channels of the three stages and the head
SUPER_WIDTHS = (512, 256, 128, 64)  # the Super layout's
PATCH = {16: 1, 48: 2}  # latent channels -> pixel-shuffle patch of the output (Wan 2.2's 16 px cells)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Three 3x3 convs over [this frame, the block's previous input], plus the frame itself."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.conv = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1))  # fmt: skip

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], 1)) + x)


class SuperMemBlock(nn.Module):
    """The Super layout's memory block: over [this frame, the block's previous input], a depthwise 7x7 conv, a 1x1 conv
    to twice the channels, ReLU, a 1x1 conv back; plus the frame itself (no activation after)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.conv = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 7, padding=3, groups=2 * c, bias=False), nn.Conv2d(2 * c, 4 * c, 1),
                                  nn.ReLU(), nn.Conv2d(4 * c, c, 1, bias=False))  # fmt: skip

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, past], 1)) + x


class TGrow(nn.Module):
    """Each frame becomes `stride` frames: a 1x1 conv to stride x channels, split in time order."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).reshape(-1, x.shape[1], *x.shape[2:])


def tiny_decoder(latent_channels: int) -> nn.Sequential:
    """The decoder with the files' layer indices (decoder.1 is the entry conv, decoder.22 the exit conv)."""
    a, b, c, d = WIDTHS
    layers: list[nn.Module] = [Clamp(), nn.Conv2d(latent_channels, a, 3, padding=1), nn.ReLU()]
    for n_in, n_out, stride in ((a, b, 1), (b, c, 2), (c, d, 2)):
        layers += [MemBlock(n_in), MemBlock(n_in), MemBlock(n_in), nn.Upsample(scale_factor=2), TGrow(n_in, stride),
                   nn.Conv2d(n_in, n_out, 3, padding=1, bias=False)]  # fmt: skip
    return nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(d, 3 * PATCH[latent_channels] ** 2, 3, padding=1))


def super_decoder(latent_channels: int) -> nn.Sequential:
    """The Super layout with the files' indices (decoder.0 the 1x1 entry conv, decoder.22 the exit conv)."""
    widths = SUPER_WIDTHS
    layers: list[nn.Module] = [nn.Conv2d(latent_channels, widths[0], 1, bias=False)]
    for n_in, n_out, stride in zip(widths, widths[1:], (1, 2, 2)):
        layers += [SuperMemBlock(n_in), SuperMemBlock(n_in), SuperMemBlock(n_in), nn.Conv2d(n_in, 4 * n_out, 3, padding=1), nn.ReLU(),
                   nn.PixelShuffle(2), TGrow(n_out, stride)]  # fmt: skip
    return nn.Sequential(*layers, nn.Conv2d(widths[-1], 3 * PATCH[latent_channels] ** 2, 3, padding=1))


LAYOUTS = {"base": tiny_decoder, "super": super_decoder}
MEMORY_BLOCKS = (MemBlock, SuperMemBlock)


@dataclass
class TinyState:
    """Streaming state of one video: every memory block's last input, and whether the 3 early frames are gone."""

    past: dict[int, torch.Tensor] = field(default_factory=dict)
    started: bool = False


class TinyDecoder(nn.Module):
    def __init__(self, latent_channels: int, layout: str = "base") -> None:
        super().__init__()
        self.latent_channels, self.layout = latent_channels, layout
        self.patch = PATCH[latent_channels]
        self.decoder = LAYOUTS[layout](latent_channels)
        self.early_frames = 2 ** sum(isinstance(m, TGrow) and m.stride == 2 for m in self.decoder) - 1

    def decode_chunk(self, z: torch.Tensor, state: TinyState) -> torch.Tensor:
        """Latents [N, C, T, h, w] in the decoder's space, continuing `state` -> frames [N, 3, F, H, W] in [0, 1]."""
        n, t = z.shape[0], z.shape[2]
        x = z.permute(0, 2, 1, 3, 4).reshape(n * t, *z.shape[1:2], *z.shape[3:])
        for i, layer in enumerate(self.decoder):
            if isinstance(layer, MEMORY_BLOCKS):
                frames = x.view(n, -1, *x.shape[1:])
                before = state.past.get(i, torch.zeros_like(frames[:, :1]))
                past = torch.cat([before, frames[:, :-1]], 1).flatten(0, 1)
                state.past[i] = frames[:, -1:]
                x = layer(x, past)
            else:
                x = layer(x)
        if self.patch > 1:
            x = F.pixel_shuffle(x, self.patch)
        x = x.clamp_(0, 1).view(n, -1, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        if not state.started:
            state.started = True
            x = x[:, :, self.early_frames :]
        return x


# ----------------------------------------------------------------------------------------- files


def is_tiny(sd: Mapping[str, object]) -> bool:
    """A TAEHV-architecture file: memory blocks at decoder.3 / encoder.4, or the exit conv at decoder.22."""
    return any(k in sd for k in ("decoder.3.conv.0.weight", "decoder.22.weight", "encoder.4.conv.0.weight"))


@dataclass(frozen=True)
class TinyInfo:
    source: str
    name: str  # taew2_1, lighttaew2_2, ...
    version: str  # the Wan VAE whose latents it decodes
    raw_latents: bool  # lighttae: the VAE's raw latents; taew: the normalized (diffusion-space) latents
    parameters: int

    def describe(self) -> str:
        space = "raw (VAE-space) latents" if self.raw_latents else "normalized (diffusion-space) latents"
        return (f"{self.name}: tiny TAEHV-architecture decoder for Wan {self.version} latents "
                f"({CONFIGS[self.version].z_dim} channels), fed {space}; {self.parameters / 1e6:.1f}M decoder parameters; "
                "fast and lossy")  # fmt: skip


def load_tiny(sd: Mapping[str, torch.Tensor], source: str) -> tuple[TinyDecoder, TinyInfo]:
    """The decoder of a TAEHV-family file (the encoder, if present, is not used), checked tensor by tensor."""
    decoder = {k: v for k, v in sd.items() if k.startswith("decoder.")}
    if not decoder:
        raise CheckpointError(f"{source} is a TAEHV encoder without its decoder (only encoder.* tensors); "
                              "decoding needs the full file (taew2_1 / taew2_2 / lighttaew2_x).")  # fmt: skip
    # The Super layout's entry is decoder.0 (a 1x1 conv; decoder.1 is a memory block), the base layout's decoder.1.
    layout = "super" if "decoder.0.weight" in decoder and "decoder.1.weight" not in decoder else "base"
    entry_key = "decoder.0.weight" if layout == "super" else "decoder.1.weight"
    entry = decoder.get(entry_key)
    channels = entry.shape[1] if isinstance(entry, torch.Tensor) and entry.dim() == 4 else None
    if channels not in PATCH:
        found = f"{entry_key} {list(entry.shape)}" if isinstance(entry, torch.Tensor) else f"no {entry_key}"
        raise CheckpointError(f"{source} looks like a TAEHV-architecture decoder, but not one for Wan latents ({found}; "
                              "taew2_1 takes 16 channels, taew2_2 48). TAEHV for Hunyuan (taehv, taehv1_5, their Super "
                              "files) or CogVideoX is not supported.")  # fmt: skip
    version = {16: "2.1", 48: "2.2"}[channels]
    model = TinyDecoder(channels, layout)
    expected = model.state_dict()
    decoder = dict(decoder)
    for i, layer in enumerate(model.decoder):
        key = f"decoder.{i}.conv.weight"
        if isinstance(layer, TGrow) and key in decoder and decoder[key].shape[0] > expected[key].shape[0]:
            # a grow layer trained to double time but used without (the first stage): its last time step's channels
            decoder[key] = decoder[key][-expected[key].shape[0] :]
    what = "a TAEHV Super decoder" if layout == "super" else "a TAEHV-architecture decoder"
    check_against(decoder, {k: v.shape for k, v in expected.items()}, f"{source} ({what})")
    model.load_state_dict({k: v.float() for k, v in decoder.items()})
    stem = source.replace("\\", "/").rsplit("/", 1)[-1].lower()
    raw = "lighttae" in stem
    name = next((n for n in (f"lighttaew{version.replace('.', '_')}", f"taew{version.replace('.', '_')}") if n in stem),
                ("lighttaew" if raw else "taew") + version.replace(".", "_"))  # fmt: skip
    name += "_super" if layout == "super" else ""
    params = sum(v.numel() for v in model.state_dict().values())
    return model.eval().requires_grad_(False), TinyInfo(source, name, version, raw, params)
