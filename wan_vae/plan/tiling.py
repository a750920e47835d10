"""Exact spatial tiling: tiles that decode to the untiled pixels, not a blend of approximations.

The decoder's entry conv and middle block run on the whole latent frame (their attention sees all of
it, at latent resolution, where it is cheap). Everything after them is local: 3x3 convs, per-pixel
norms and nearest upsampling, so a tile of the output depends only on a window of the middle block's
output `radius` cells wider than the tile on each side (`Decoder.receptive_radii`: 13 cells for both
Wan VAEs). Each tile runs the upsampling path on its window and keeps only its own pixels; where the
window meets the frame's border the zero padding is the untiled decode's own. The window shrinks stage
by stage (each stage computes only what the later stages read), so the extra work of the halo falls
mostly on the cheap low-resolution stages.

Tiles partition the latent frame: they do not overlap and need no blending. Time is never tiled:
chunks of latent frames continue the causal history exactly (see network/blocks.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import SettingsError

MIN_TILE_CELLS = 8  # smaller tiles are exact too, but mostly halo: several times the work

Region = tuple[int, int, int, int]  # rows [y0, y1) and columns [x0, x1), in pixels of one stage


@dataclass(frozen=True)
class Tile:
    """Latent cells [y0, y1) x [x0, x1) of the output, decoded as one piece."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def cells(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


@dataclass(frozen=True)
class Window:
    """What one tile's `up_pass` (or the encoder's `down_pass`) runs on: `regions[i]` is stage i's input
    region (absolute, in that stage's pixels, clipped to the frame), `regions[-1]` the tile's own output
    at the last stage. `scales[i]` is stage i's upsampling (or with `down`, downsampling) factor."""

    regions: tuple[Region, ...]
    scales: tuple[int, ...]
    down: bool = False

    def crop(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """The part of x covering regions[i]; x covers regions[i - 1] scaled by scales[i - 1], or for
        i = 0 the whole frame (the middle block's output)."""
        y0, y1, x0, x1 = self.regions[i]
        if i == 0:
            oy = ox = 0
        elif self.down:
            oy, ox = self.regions[i - 1][0] // self.scales[i - 1], self.regions[i - 1][2] // self.scales[i - 1]
        else:
            oy, ox = self.regions[i - 1][0] * self.scales[i - 1], self.regions[i - 1][2] * self.scales[i - 1]
        if (y0 - oy, x0 - ox, y1 - y0, x1 - x0) == (0, 0, *x.shape[-2:]):
            return x
        part = x[..., y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        return part.contiguous(memory_format=torch.channels_last_3d if x.stride(1) == 1 else torch.contiguous_format)


def window(tile: Tile, height: int, width: int, radii: list[int], scales: list[int]) -> Window:
    """The regions stage by stage for `tile` of a `height` x `width` cell frame (see `Window`).

    radii: `Decoder.receptive_radii()`, one per stage input and 0 for the output.
    """
    regions = []
    level = 1  # pixels per latent cell at the current stage
    for i, radius in enumerate(radii):
        regions.append((max(tile.y0 * level - radius, 0), min(tile.y1 * level + radius, height * level),
                        max(tile.x0 * level - radius, 0), min(tile.x1 * level + radius, width * level)))  # fmt: skip
        level *= scales[i] if i < len(scales) else 1  # the output region is at the last stage's scale
    return Window(tuple(regions), tuple(scales))


def down_window(tile: Tile, height: int, width: int, encoder, stages: tuple[int, int] | None = None) -> Window:
    """The regions stage by stage of the encoder's `down_pass` over `stages` (all by default) for `tile` of a
    `height` x `width` cell frame of its output (encoder.Encoder.stage_intervals); regions[0] is in the
    first stage's input pixels (for the whole path: the encoder's input pixels, patches for Wan 2.2)."""
    ys = encoder.stage_intervals(tile.y0, tile.y1, height, stages)
    xs = encoder.stage_intervals(tile.x0, tile.x1, width, stages)
    first, last = stages or (0, len(encoder.stages))
    scales = tuple(encoder.stage_scales[first:last])
    return Window(tuple((y0, y1, x0, x1) for (y0, y1), (x0, x1) in zip(ys, xs)), scales, down=True)


def tile_cells(tile_size: int, tile_overlap: int, scale: int) -> int:
    """The largest tile edge in latent cells for `tile_size` pixels, with the checks that keep settings meaningful.

    `tile_overlap` no longer changes the result (tiles are exact); it is still checked, so a setting
    that used to be an error does not silently pass.
    """
    if tile_size < MIN_TILE_CELLS * scale:
        raise SettingsError(
            f"tile_size {tile_size} px is too small: the smallest tile is {MIN_TILE_CELLS} latent cells, "
            f"{MIN_TILE_CELLS * scale} px for a VAE with {scale} px per cell. Use tile_size {MIN_TILE_CELLS * scale} or more."
        )
    if tile_overlap < 0:
        raise SettingsError(f"tile_overlap must be 0 or more pixels, got {tile_overlap}.")
    if tile_overlap > tile_size:
        raise SettingsError(
            f"tile_overlap ({tile_overlap} px) is larger than tile_size ({tile_size} px). Tiles are exact now, "
            "so the overlap changes nothing: set it to 0 (or keep the default 64)."
        )
    return tile_size // scale


def axis_spans(length: int, count: int) -> list[tuple[int, int]]:
    """`length` cells split into `count` consecutive spans whose sizes differ by at most one cell."""
    bounds = [round(i * length / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def plan_grid(height: int, width: int, rows: int, cols: int) -> list[Tile]:
    """`rows` x `cols` tiles partitioning a `height` x `width` cell frame, row by row."""
    return [Tile(y0, y1, x0, x1) for y0, y1 in axis_spans(height, rows) for x0, x1 in axis_spans(width, cols)]


def plan_tiles(height: int, width: int, tile: int | None) -> list[Tile]:
    """The fewest tiles of at most `tile` x `tile` cells covering the frame; `tile=None` means one tile."""
    if tile is None:
        return plan_grid(height, width, 1, 1)
    return plan_grid(height, width, math.ceil(height / tile), math.ceil(width / tile))
