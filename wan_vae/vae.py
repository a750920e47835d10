"""`WanVAE`: a loaded Wan 2.1 or Wan 2.2 VAE, and `load_vae`, which reads any supported file into one.

The class holds the weights and says what they are; its public methods build a plan and hand it to
the drivers (run/decode.py for decoding, run/encode.py for encoding), to which it supplies its per-chunk
steps (`middle`, `up`). Settings travel as one `Options` (run/options.py); the methods also take them
as keywords.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import torch

from .device.precision import default_mixed, warn_if_slow_on_cpu
from .errors import LatentError
from .files.checkpoint import CheckpointInfo, check_against, prepare_state_dict, read_state_dict, strip_prefix
from .files.config import WanVAEConfig
from .network.blocks import pixel_shuffle, unpatchify
from .network.model import WanVAEModel, full_precision, is_mixed, lay_out_weights, precision, set_precision
from .network.stream import StreamState, Workspace
from .network.flash_vaed import is_flash_vaed
from .network.taehv import is_tiny
from .run import multidevice
from .run.decode import Cancel, Decodes, Progress, Tracker
from .run.encode import encode_stream, encode_video
from .run.inputs import check_latents
from .run.options import Options
from .flash_vae import load_flash_vae
from .tiny_vae import load_tiny_vae


class WanVAE(Decodes):
    """A loaded Wan 2.1 or Wan 2.2 VAE (or a variant: RGBA, an upscale decoder, decoder only). Build it with `load_vae`."""

    tileable = True

    def __init__(self, model: WanVAEModel, info: CheckpointInfo | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.config: WanVAEConfig = model.config
        self.checkpoint = info
        self.channels_last = True  # NDHWC convolutions: faster on CPU and CUDA, free per-frame 2-D views
        self._replicas: dict[torch.device, WanVAE] = {}  # copies on other devices (run/multidevice.py)
        self._replica_lock = threading.Lock()

    version = property(lambda self: self.config.version)
    latent_channels = property(lambda self: self.config.z_dim)
    spatial_scale = property(lambda self: self.config.spatial_scale, doc="pixels per latent cell of the video it encodes")
    output_scale = property(lambda self: self.config.output_scale, doc="decoded pixels per latent cell (x upscale)")
    out_channels = property(lambda self: self.config.out_channels, doc="3 (RGB) or 4 (RGBA)")
    in_channels = property(lambda self: self.config.in_channels)
    has_encoder = property(lambda self: self.config.has_encoder)
    temporal_scale = property(lambda self: self.config.temporal_scale)
    latents_mean = property(lambda self: torch.tensor(self.config.latents_mean))
    latents_std = property(lambda self: torch.tensor(self.config.latents_std))
    dtype = property(lambda self: precision(self.model), doc="float32 (or float64), or the heavy convs' bf16/fp16 (model.set_precision)")
    full_dtype = property(lambda self: full_precision(self.model), doc="what runs outside the heavy convs: float32 or float64")
    mixed = property(lambda self: is_mixed(self.model), doc="half precision in the heavy convs only (set_precision)")
    device = property(lambda self: self.model.conv2.weight.device)

    def to(self, device=None, dtype: torch.dtype | None = None, mixed: bool | None = None) -> WanVAE:
        """Move the weights and/or change the precision (`mixed`: see set_precision; by default as it was, or for a
        half precision newly asked for, what suits the device: `precision.default_mixed`)."""
        if dtype is not None:
            if mixed is None:
                mixed = self.mixed if dtype == self.dtype else default_mixed(device if device is not None else self.device)
            set_precision(self.model, dtype, mixed)
        self.model.to(device=device)
        lay_out_weights(self.model)
        return self

    kind = property(lambda self: f"the {self.config.name()}", doc="what it is, without the widths: 'the Wan 2.1 RGBA VAE'")

    @property
    def title(self) -> str:
        """What it is, in a user's words: "the Wan 2.1 VAE", "the Wan 2.1 RGBA VAE", a pruned one (LightX2V's LightVAE)."""
        pruned = self.config.pruning()
        return self.kind + (f" {pruned}" if pruned else "")

    def __repr__(self) -> str:
        return f"WanVAE(version={self.version!r}, dtype={self.dtype}, device={self.device})"

    def replica(self, device) -> WanVAE:
        """This VAE on `device`: itself if it is there, else a copy of the weights made once and kept
        for later decodes (`release_replicas` frees them)."""
        device = multidevice.check_devices([device])[0]
        if device == multidevice.check_devices([self.device])[0]:
            return self
        with self._replica_lock:
            if device not in self._replicas:
                with torch.device("meta"):
                    model = WanVAEModel(self.config)
                model.load_state_dict({k: v.to(device) for k, v in self.model.state_dict().items()}, assign=True)
                set_precision(model, self.dtype, self.mixed)
                lay_out_weights(model)
                replica = WanVAE(model, self.checkpoint)
                replica.channels_last = self.channels_last
                self._replicas[device] = replica
            return self._replicas[device]

    def release_replicas(self) -> None:
        """Free the copies of the weights that decodes on several devices made."""
        with self._replica_lock:
            self._replicas.clear()

    def work_devices(self, options: Options) -> list[torch.device] | None:
        """None for work on this VAE's own device alone, else the checked list of `options.devices`."""
        if options.devices is None:
            return None
        devices = multidevice.check_devices(options.devices)
        return None if devices == multidevice.check_devices([self.device]) else devices

    def normalization(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents_mean and 1 / latents_std as [1, C, 1, 1, 1] in like's dtype and device.

        Normalized latents are (raw - mean) * inv_std; the reference keeps the reciprocal (section 1.3).
        """
        view = (1, -1, 1, 1, 1)
        return self.latents_mean.to(like).view(view), (1.0 / self.latents_std).to(like).view(view)

    # ----------------------------------------------------------------------------- the decode steps (run/decode.py's Steps)

    def prepare_latents(self, latents, normalized: bool) -> torch.Tensor:
        z = check_latents(latents, self)
        if normalized:  # mapped back at (at least) fp32
            z = z.to(device=self.device, dtype=torch.promote_types(z.dtype, self.full_dtype))
            mean, inv_std = self.normalization(z)
            z = z / inv_std + mean  # the reference divides by the reciprocal (section 1.3)
        return z.to(device=self.device, dtype=self.full_dtype)  # the entry convs are fp32 (or float64) at every precision

    def new_state(self, workspace: Workspace) -> StreamState:
        return StreamState(workspace)

    def middle(self, z: torch.Tensor, state: StreamState, final: bool) -> torch.Tensor:
        z = self.model.conv2(z, state)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last_3d)
        return self.model.decoder.middle_pass(z, state, final)

    def up(self, x: torch.Tensor, state: StreamState, window, max_frames: int, final: bool) -> Iterator[torch.Tensor]:
        for piece in self.model.decoder.up_pass(x, state, window, max_frames, final):
            yield pixel_shuffle(unpatchify(piece, self.config.patch_size), self.config.upscale)

    def receptive_field(self) -> tuple[list[int], list[int]]:
        """The decoder's window radii and stage scales (tiling.window)."""
        return self.model.decoder.receptive_radii(), self.model.decoder.stage_scales

    def check_encoder(self) -> None:
        """LatentError unless this file has an encoder (decoder fine-tunes may ship without one)."""
        if not self.has_encoder:
            raise LatentError(
                f"{self.title[0].upper()}{self.title[1:]} has no encoder: the file holds decoder weights only. Encode with "
                f"the full {self.config.title} VAE file (its latents are the same), and decode with this one."
            )

    # ----------------------------------------------------------------------------- public methods

    @torch.inference_mode()
    def encode(self, video: torch.Tensor, normalized: bool | None = None, *, options: Options | None = None,
               progress: Progress | None = None, cancel: Cancel | None = None, strict_range: bool = True,
               **settings) -> torch.Tensor:  # fmt: skip
        """Encode video [B, 3, F, H, W] in [-1, 1] (or [3, F, H, W]) to latents [B, C, T, h, w] (posterior mean).

        An RGBA VAE takes [B, 4, F, H, W] (RGB frames get alpha 1, as ComfyUI pads them). F must be 1 + 4k (the
        reference silently drops the rest; this refuses). H and W must be multiples of the spatial scale (8 or 16). `normalized=True` returns (mean - latents_mean) / std, the form
        diffusers pipelines use; the default is the raw form ComfyUI samplers use. `strict_range=False` encodes values
        outside the range too (finite ones), as the reference does. Other settings as in `decode` (run/encode.py),
        `frames_per_chunk` in latent frames (4 video frames each) after the first.
        """
        options = self.resolve_options(options, normalized, settings)
        self.check_encoder()
        warn_if_slow_on_cpu(self.device, self.dtype)
        return encode_video(self, video, options, Tracker(0, progress, cancel), strict_range)

    @torch.inference_mode()
    def encode_frames(self, frames: Iterable[torch.Tensor], normalized: bool | None = None, *, options: Options | None = None,
                      trim: bool = False, total_frames: int | None = None, progress: Progress | None = None,
                      cancel: Cancel | None = None, **settings) -> torch.Tensor:  # fmt: skip
        """Encode one video given as consecutive chunks of frames [N, H, W, 3] (float in [0, 1] as ComfyUI's IMAGE,
        or uint8), never holding more than a chunk of it (run/encode.py's encode_stream); returns latents [1, C, T, h, w].
        `trim` crops to the size multiple and drops trailing frames that do not make 1 + 4k instead of refusing
        them; `total_frames`, if known, sizes the progress. Other arguments as in `encode`."""
        options = self.resolve_options(options, normalized, settings)
        self.check_encoder()
        warn_if_slow_on_cpu(self.device, self.dtype)
        tracker = Tracker(0, progress, cancel)
        return encode_stream(self, frames, options, tracker, trim=trim, total_frames=total_frames)


def load_vae(source, device="cpu", dtype: torch.dtype = torch.float32, name: str | None = None, mixed: bool | None = None):
    """Load a Wan 2.1 or Wan 2.2 VAE from a file, a diffusers folder or a state dict (see files/checkpoint.py): a `WanVAE`,
    or for the tiny TAEHV-family decoders (taew2_1, lighttaew2_2, ...) a `TinyVAE`, for Flash-VAED's decoder a `FlashVAE`,
    with the same decode API.
    `name` names a state dict in messages (and tells a tiny decoder's file name). A half-precision `dtype` runs every
    conv in it on CUDA devices and the heavy ones only elsewhere, unless `mixed` says (network/model.set_precision)."""
    raw, read_name = read_state_dict(source)
    name = name or read_name
    stripped, _ = strip_prefix(raw)
    if is_tiny(stripped):
        return load_tiny_vae(stripped, name, device=device, dtype=dtype)
    if is_flash_vaed(stripped):
        return load_flash_vae(stripped, name, device=device, dtype=dtype)
    sd, info = prepare_state_dict(raw, name)
    with torch.device("meta"):
        model = WanVAEModel(info.config)
    check_against(sd, {k: v.shape for k, v in model.state_dict().items()}, info.source)
    model.load_state_dict(sd, strict=True, assign=True)
    model.to(device=device)
    set_precision(model, dtype, default_mixed(device) if mixed is None else mixed)
    lay_out_weights(model)
    return WanVAE(model, info)
