"""`Options`: how a decode or an encode runs, in one frozen object from the caller to the planner.

The node builds it once from its widgets and the command line once from its flags; the library takes
it as it is. Whoever must change a setting (the auto budget, the out-of-memory retry) makes a new one
with `dataclasses.replace` and says why in the log, so a reader can follow `tile_size` from the
widget to the tile grid without running anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import SettingsError

TILING_MODES = ("off", "on", "auto")
DEFAULT_TILE_SIZE = 512  # px; ComfyUI's VAEDecodeTiled default
DEFAULT_TILE_OVERLAP = 64  # px; kept for saved workflows, tiles are exact
DEFAULT_FRAMES_PER_CHUNK = 1  # latent frames per pass (4 video frames)


@dataclass(frozen=True)
class Options:
    """Settings of one decode or encode; every field has the meaning of the node input of the same name.

    normalized: the latents are (decode) or should be (encode) in the normalized space of diffusers
        pipelines and kijai's wrapper, (raw - mean) / std; False is ComfyUI's raw space.
    tiling: "off"; "on": tiles of at most `tile_size` px; "auto": the tile grid with the least work
        whose estimated peak fits `memory_budget` bytes (by default the device's free memory).
    tile_size: the largest tile edge in pixels with tiling "on".
    tile_overlap: changes nothing (tiles are exact); checked so that old settings keep their errors.
    frames_per_chunk: latent frames per pass; any value gives the same numbers.
    devices: several devices to spread tiles over (None: the VAE's own).
    memory_budget: bytes tiling "auto" may plan for (None: what is free on the device).
    """

    normalized: bool = False
    tiling: str = "off"
    tile_size: int = DEFAULT_TILE_SIZE
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK
    devices: tuple[torch.device | str, ...] | None = None
    memory_budget: int | None = None

    def __post_init__(self) -> None:
        if self.tiling not in TILING_MODES:
            raise SettingsError(f"tiling must be one of {', '.join(TILING_MODES)}; got {self.tiling!r}.")
        for name in ("tile_size", "tile_overlap", "frames_per_chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SettingsError(f"{name} must be a whole number, got {value!r}.")
        if self.frames_per_chunk < 1:
            raise SettingsError(f"frames_per_chunk must be a whole number of latent frames >= 1, got {self.frames_per_chunk!r}.")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise SettingsError(f"memory_budget must be a positive number of bytes, got {self.memory_budget!r}.")
        if isinstance(self.devices, list):  # frozen: a list would still change under us
            object.__setattr__(self, "devices", tuple(self.devices))

    @classmethod
    def from_widgets(cls, latent_space: str, tiling: str, tile_size: int, tile_overlap: int = DEFAULT_TILE_OVERLAP,
                     frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK, devices=None) -> Options:  # fmt: skip
        """From the node inputs (or the command line's flags) of the same names."""
        if latent_space not in ("raw", "normalized"):
            raise SettingsError(f"latent_space must be 'raw' or 'normalized', got {latent_space!r}.")
        return cls(latent_space == "normalized", tiling, tile_size, tile_overlap, frames_per_chunk, devices)

    def merged(self, normalized: bool | None, settings: dict) -> Options:
        """These options with keyword settings (the public methods' `tiling=...`, ...) on top."""
        if normalized is not None:
            settings = {**settings, "normalized": bool(normalized)}
        unknown = set(settings) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **settings) if settings else self
