"""Stand-ins of kijai's ComfyUI-WanVideoWrapper (not installable from PyPI): its VAE objects and the calls its nodes make.

Two versions, as read: 1.0.6 (the fetchable snapshot, 2025-03) and the 2026 files (wanvideo/wan_video_vae.py @bc83757,
nodes.py @b812726). The VAE objects hold the network under `model.` with the original Wan names, as the wrapper's do;
their own decode and encode fail if ever reached, so a test passing through them proves the pack's ran instead.
The node functions repeat what WanVideoDecode / WanVideoEncode / WanVideoImageToVideoEncode hand the VAE and do with
what comes back (argument names, tile units, casts, the min-max or [-1, 1] mapping).
"""

from __future__ import annotations

import torch
from torch import nn

from reference import original_state_dict
from wan_vae.files.config import CONFIGS
from wan_vae.network.model import WanVAEModel


def _network(version: str, **channels) -> nn.Module:
    cfg = CONFIGS[version]
    model = WanVAEModel(cfg.with_widths(*{"2.1": (16, 16), "2.2": (16, 32)}[version]))
    model.load_state_dict(original_state_dict(version, **channels))
    return model.eval().requires_grad_(False)


class _Base(nn.Module):
    def __init__(self, version: str, dtype=torch.float32):
        super().__init__()
        cfg = CONFIGS[version]
        self.dtype, self.z_dim, self.upsampling_factor = dtype, cfg.z_dim, cfg.spatial_scale
        self.model = _network(version).to(dtype)

    def _own(self, *args, **kwargs):
        raise AssertionError("the wrapper's own decode/encode ran")


class WanVideoVAE106(_Base):
    """1.0.6: mean, std and scale; decode/encode without end_, pbar, output_device or sample."""

    def __init__(self, version: str = "2.1", dtype=torch.float32):
        super().__init__(version, dtype)
        self.mean = torch.tensor(CONFIGS[version].latents_mean)
        self.std = torch.tensor(CONFIGS[version].latents_std)
        self.scale = [self.mean, 1.0 / self.std]

    def decode(self, hidden_states, device, tiled=False, tile_size=(34, 34), tile_stride=(18, 16)):
        self._own()

    def encode(self, videos, device, tiled=False, tile_size=(34, 34), tile_stride=(18, 16)):
        self._own()


class WanVideoVAE2026(_Base):
    """The 2026 versions: mean and inv_std as [1, C, 1, 1, 1]; end_, pbar, output_device/dtype, sample."""

    def __init__(self, version: str = "2.1", dtype=torch.float32):
        super().__init__(version, dtype)
        self.mean = torch.tensor(CONFIGS[version].latents_mean).view(1, -1, 1, 1, 1)
        self.inv_std = (1.0 / torch.tensor(CONFIGS[version].latents_std)).view(1, -1, 1, 1, 1)

    def decode(self, hidden_states, device, tiled=False, end_=False, tile_size=(34, 34), tile_stride=(18, 16), pbar=True,
               output_device=None, output_dtype=None):  # fmt: skip
        self._own()

    def encode(self, videos, device, tiled=False, end_=False, tile_size=None, tile_stride=None, pbar=True, sample=False):
        self._own()


def wrapper_class(name: str, base: type) -> type:
    """`base` under the wrapper's own class name (the pack tells the wrapper's classes apart by name)."""
    return type(name, (base,), {"__module__": "custom_nodes.ComfyUI-WanVideoWrapper.wanvideo.wan_video_vae"})


VERSIONS = {
    "1.0.6": {"2.1": wrapper_class("WanVideoVAE", WanVideoVAE106)},
    "2026": {"2.1": wrapper_class("WanVideoVAE", WanVideoVAE2026), "2.2": wrapper_class("WanVideoVAE38", WanVideoVAE2026)},
}


# ------------------------------------------------------------------------------------------ what its nodes do


def wan_video_decode(version: str, vae, samples: dict, enable_vae_tiling: bool, tile_x=272, tile_y=272, tile_stride_x=144,
                     tile_stride_y=128, normalization="default", device="cpu") -> torch.Tensor:  # fmt: skip
    """WanVideoDecode.decode: the IMAGE [F, H, W, 3]; `raw=True` on the result's attribute gives the frames before the mapping."""
    vae.to(device)
    latents = samples["samples"].to(device=device, dtype=vae.dtype)
    if version == "1.0.6":
        size, stride = (tile_x, tile_y), (tile_stride_x, tile_stride_y)  # 1.0.6 passed the pixels as they were
        image = vae.decode(latents, device=device, tiled=enable_vae_tiling, tile_size=size, tile_stride=stride)[0]
        vae.to("cpu")
        vae.model.clear_cache()
        wan_video_decode.before_mapping = image.clone()
        image = (image - image.min()) / (image.max() - image.min())
        return torch.clamp(image, 0.0, 1.0).permute(1, 2, 3, 0).cpu().float()
    end_image = samples.get("end_image")
    images = vae.decode(latents, device=device, end_=end_image is not None, tiled=enable_vae_tiling and end_image is None,
                        tile_size=(tile_x // 8, tile_y // 8), tile_stride=(tile_stride_x // 8, tile_stride_y // 8))[0]  # fmt: skip
    images = images.cpu().float()
    wan_video_decode.before_mapping = images.clone()
    if normalization == "minmax":
        images.sub_(images.min()).div_(images.max() - images.min())
    else:
        images.clamp_(-1.0, 1.0).add_(1.0).div_(2.0)
    if end_image is not None:
        images = images[:, 0:-1]
    vae.to("cpu")
    return images.clamp_(0.0, 1.0).permute(1, 2, 3, 0)


def wan_video_encode(version: str, vae, image: torch.Tensor, enable_vae_tiling: bool, tile_x=272, tile_y=272, tile_stride_x=144,
                     tile_stride_y=128, device="cpu") -> dict:  # fmt: skip
    """WanVideoEncode.encode on IMAGE [F, H, W, 3]: the LATENT (normalized)."""
    vae.to(device)
    if version == "1.0.6":
        video = (image.clone() * 2.0 - 1.0).to(vae.dtype).to(device).unsqueeze(0).permute(0, 4, 1, 2, 3)
        latents = vae.encode(video, device=device, tiled=enable_vae_tiling, tile_size=(tile_x, tile_y),
                             tile_stride=(tile_stride_x, tile_stride_y))  # fmt: skip
    else:
        video = image.clone()[..., :3].to(vae.dtype).to(device).unsqueeze(0).permute(0, 4, 1, 2, 3)
        f = vae.upsampling_factor
        latents = vae.encode(video * 2.0 - 1.0, device=device, tiled=enable_vae_tiling, tile_size=(tile_x // f, tile_y // f),
                             tile_stride=(tile_stride_x // f, tile_stride_y // f))  # fmt: skip
    vae.to("cpu")
    vae.model.clear_cache()
    return {"samples": latents}


def image_to_video_encode(vae, start_image: torch.Tensor, num_frames: int, end_image: torch.Tensor | None = None, device="cpu"):
    """WanVideoImageToVideoEncode's VAE call: the start image (and end image) then zero frames, one video, encoded
    with end_ when there is an end image; the latents [C, T, h, w] it keeps."""
    frames = [start_image.permute(3, 0, 1, 2)]  # [3, 1, H, W] in [0, 1]
    blank = num_frames - 1 - (end_image is not None)
    frames.append(torch.zeros(3, blank, *start_image.shape[1:3]))
    if end_image is not None:
        frames.append(end_image.permute(3, 0, 1, 2))
    video = torch.cat(frames, 1) * 2 - 1
    vae.to(device)
    return vae.encode([video.to(device, vae.dtype)], device, end_=end_image is not None, tiled=False)[0]
