"""`TinyVAE`: a tiny TAEHV-family decoder (network/taehv.py) behind WanVAE's decode API, so nodes and scripts take either.

Decode only; no tiles (a 720p frame needs a few hundred MB) and one device. It gives the decode driver
(run/decode.py) its steps: `middle` passes the latents through, `up` runs the whole network on a chunk.
Chunks of any size give the frames of the whole video (the memory blocks' state carries over).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import torch

from .errors import SettingsError
from .files.config import CONFIGS
from .network.taehv import TinyDecoder, TinyInfo, TinyState, load_tiny
from .run.decode import Decodes
from .run.inputs import check_latents
from .run.options import Options

log = logging.getLogger("wan_vae")


class TinyVAE(Decodes):
    has_encoder = False
    tileable = False
    default_options = Options(frames_per_chunk=4)  # 16 frames per pass: still small
    video_dtype = torch.float32

    def __init__(self, model: TinyDecoder, info: TinyInfo) -> None:
        self.model, self.info, self.config = model, info, CONFIGS[info.version]

    version = property(lambda self: self.info.version)
    latent_channels = property(lambda self: self.config.z_dim)
    spatial_scale = property(lambda self: self.config.spatial_scale)
    output_scale = spatial_scale
    out_channels = 3
    temporal_scale = 4
    dtype = property(lambda self: next(self.model.parameters()).dtype)
    device = property(lambda self: next(self.model.parameters()).device)

    @property
    def title(self) -> str:
        return f"{self.info.name} (tiny decoder for Wan {self.version} latents)"

    kind = title

    def __repr__(self) -> str:
        return f"TinyVAE({self.info.describe()}, {self.dtype}, {self.device})"

    def __str__(self) -> str:
        return self.info.name

    def to(self, device=None, dtype: torch.dtype | None = None) -> TinyVAE:
        self.model.to(device=device, dtype=dtype)
        return self

    def release_replicas(self) -> None:
        """Nothing to release: tiny decoders use one device."""

    def replica(self, device) -> TinyVAE:
        return self

    def encode(self, *args, **kwargs):
        raise SettingsError(f"{self.info.name} is a decoder only; encode with the full Wan {self.version} VAE.")

    encode_frames = encode

    # ----------------------------------------------------------------------------- the decode steps (run/decode.py's Steps)

    def prepare_latents(self, latents, normalized: bool) -> torch.Tensor:
        """The latents in the space this decoder was trained on (the file name tells, see network/taehv.py)."""
        z = check_latents(latents, self).to(self.device, torch.float32)
        mean = torch.tensor(self.config.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.config.latents_std, device=z.device).view(1, -1, 1, 1, 1)
        if normalized and self.info.raw_latents:
            z = z * std + mean
        elif not normalized and not self.info.raw_latents:
            z = (z - mean) / std
        return z.to(self.dtype)

    def new_state(self, workspace) -> TinyState:
        return TinyState()

    def middle(self, z: torch.Tensor, state: TinyState, final: bool) -> torch.Tensor:
        return z

    def up(self, x: torch.Tensor, state: TinyState, window, max_frames: int, final: bool) -> Iterator[torch.Tensor]:
        yield self.model.decode_chunk(x, state).mul_(2).sub_(1)

    def work_devices(self, options: Options) -> None:
        if options.devices is not None and len(options.devices) > 1:
            log.info("%s decodes on one device (%s)", self.info.name, self.device)
        return None


def load_tiny_vae(sd: Mapping[str, torch.Tensor], source: str, device="cpu", dtype: torch.dtype = torch.float32) -> TinyVAE:
    model, info = load_tiny(sd, source)
    return TinyVAE(model.to(device=device, dtype=dtype), info)
