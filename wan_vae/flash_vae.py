"""`FlashVAE`: Flash-VAED's distilled Wan 2.1 decoder (network/flash_vaed.py) behind WanVAE's decode API.

Decode only (its encoder is the stock Wan 2.1 one: encode with wan_2.1_vae); no tiles, one device. It streams: the
causal history carries over between chunks, so a long video decodes in flat memory with the frames of a whole-video
decode. Its latents are the Wan 2.1 VAE's, in either space (`latent_space`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping

import torch

from .errors import CheckpointError, SettingsError
from .files.checkpoint import check_against
from .files.config import WAN21
from .network.flash_vaed import FlashModel, widths
from .network.stream import StreamState
from .run.decode import Decodes
from .run.inputs import check_latents
from .run.options import Options

log = logging.getLogger("wan_vae")


class FlashVAE(Decodes):
    has_encoder = False
    tileable = False
    default_options = Options(frames_per_chunk=2)
    video_dtype = torch.float32
    config = WAN21
    version = "2.1"
    latent_channels = WAN21.z_dim
    spatial_scale = output_scale = WAN21.spatial_scale
    out_channels = 3
    temporal_scale = 4

    def __init__(self, model: FlashModel, source: str) -> None:
        self.model, self.source = model.eval().requires_grad_(False), os.path.basename(str(source)) or str(source)

    dtype = property(lambda self: self.model.conv2.weight.dtype)
    device = property(lambda self: self.model.conv2.weight.device)
    full_dtype = dtype

    @property
    def title(self) -> str:
        parameters = sum(p.numel() for p in self.model.decoder.parameters()) / 1e6
        return f"{self.source} (Flash-VAED: a distilled Wan 2.1 decoder, {parameters:.2f}M parameters)"

    kind = property(lambda self: "Flash-VAED's distilled Wan 2.1 decoder")

    def __repr__(self) -> str:
        return f"FlashVAE({self.source}, {self.dtype}, {self.device})"

    def to(self, device=None, dtype: torch.dtype | None = None, mixed: bool | None = None) -> FlashVAE:
        self.model.to(device=device, dtype=dtype)
        return self

    def release_replicas(self) -> None:
        """Nothing to release: one device."""

    def replica(self, device) -> FlashVAE:
        return self

    def encode(self, *args, **kwargs):
        raise SettingsError(f"{self.source} is Flash-VAED's decoder only; encode with the full Wan 2.1 VAE (wan_2.1_vae), "
                            "whose latents it decodes.")  # fmt: skip

    encode_frames = encode

    def check_encoder(self) -> None:
        self.encode()

    # ----------------------------------------------------------------------------- the decode steps (run/decode.py's Steps)

    def prepare_latents(self, latents, normalized: bool) -> torch.Tensor:
        z = check_latents(latents, self).to(self.device, torch.float32)
        if normalized:  # back to raw, as the reference does: z / (1 / std) + mean
            mean = torch.tensor(WAN21.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
            inv_std = 1.0 / torch.tensor(WAN21.latents_std, device=z.device).view(1, -1, 1, 1, 1)
            z = z / inv_std + mean
        return z.to(self.dtype)

    def new_state(self, workspace) -> StreamState:
        return StreamState(workspace)

    def middle(self, z: torch.Tensor, state: StreamState, final: bool) -> torch.Tensor:
        state.final = final
        return self.model.decoder.middle_pass(self.model.conv2(z, state), state)

    def up(self, x: torch.Tensor, state: StreamState, window, max_frames: int, final: bool) -> Iterator[torch.Tensor]:
        state.final = final
        yield self.model.decoder.up_pass(x, state)

    def work_devices(self, options: Options) -> None:
        if options.devices is not None and len(options.devices) > 1:
            log.info("%s decodes on one device (%s)", self.source, self.device)
        return None


def load_flash_vae(sd: Mapping[str, torch.Tensor], source: str, device="cpu", dtype: torch.dtype = torch.float32) -> FlashVAE:
    """Flash-VAED's decoder from its state dict (the `.pth` as released: `conv1`, `conv2`, `decoder.*`), checked tensor by
    tensor; CheckpointError naming what is missing or of the wrong shape."""
    sd = {k: v for k, v in sd.items() if not k.startswith("encoder.")}  # its encoder is an Identity: nothing to load
    try:
        z_dim, dims = widths(sd)
    except KeyError as missing:
        raise CheckpointError(f"{source}: a Flash-VAED decoder without {missing}; the file is incomplete.") from None
    if z_dim != WAN21.z_dim:
        raise CheckpointError(f"{source}: a Flash-VAED decoder for {z_dim}-channel latents; the one known decodes Wan 2.1's (16).")
    with torch.device("meta"):
        model = FlashModel(z_dim, dims)
    check_against(sd, {k: v.shape for k, v in model.state_dict().items()}, f"{source} (Flash-VAED)")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    return FlashVAE(model.to(device=device, dtype=dtype), source)
