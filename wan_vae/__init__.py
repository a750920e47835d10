"""A self-contained Wan VAE (Wan 2.1 and Wan 2.2) in plain PyTorch, with streaming decode and video writing.

    vae = load_vae("wan_2.1_vae.safetensors")
    video = vae.decode(latents)                  # [B, 3, F, H, W] in [-1, 1]
    for frames in vae.decode_frames(latents):    # [N, H, W, 3] in [0, 1], as they are decoded
        ...
"""

from .errors import CheckpointError, DecodeCancelled, LatentError, SettingsError, VideoReadError, VideoWriteError, WanVAEError
from .files.checkpoint import CheckpointInfo
from .files.config import WAN21, WAN22, WanVAEConfig
from .run.options import Options
from .vae import WanVAE, load_vae
from .video.formats import FORMATS
from .video.reader import probe_video, read_video_frames
from .video.writer import write_video

__all__ = [
    "FORMATS", "WAN21", "WAN22", "CheckpointError", "CheckpointInfo", "DecodeCancelled", "LatentError", "Options", "SettingsError",
    "VideoReadError", "VideoWriteError", "WanVAE", "WanVAEConfig", "WanVAEError", "load_vae", "probe_video", "read_video_frames",
    "write_video",
]  # fmt: skip
