"""Spatial tiling: which latent regions to decode separately, and how to blend them back without seams.

Tiles are laid out in latent cells and spread evenly over each axis, so no tile is wasted on a sliver at
the border and every output pixel is covered. Neighbouring tiles overlap by at least `overlap` cells;
across each overlap the two tiles cross-fade linearly in pixel space. Blend weights are separable
(one ramp per axis) and normalised per axis, so they sum to exactly 1 for any overlap, including
overlaps covered by more than two tiles.

Time is never tiled: chunks of latent frames continue the causal cache and are exact (see network.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from .errors import SettingsError

MIN_TILE_CELLS = 8  # smaller tiles are mostly border; the decoder's 3x3 convs see zero padding there


@dataclass(frozen=True, eq=False)
class Tile:
    """One region: latent cells [y0, y1) x [x0, x1) and its blend weights over the output pixels."""

    y0: int
    y1: int
    x0: int
    x1: int
    weight_y: torch.Tensor  # [ (y1 - y0) * scale ]
    weight_x: torch.Tensor  # [ (x1 - x0) * scale ]

    @cached_property
    def weight(self) -> torch.Tensor:
        """[H_tile, W_tile] blend weights (1 everywhere for an untiled decode)."""
        return self.weight_y[:, None] * self.weight_x[None, :]


def tile_cells(tile_size: int, tile_overlap: int, scale: int) -> tuple[int, int]:
    """Pixels -> latent cells (rounded down), with the checks that keep every region decoded."""
    if tile_size < MIN_TILE_CELLS * scale:
        raise SettingsError(
            f"tile_size {tile_size} px is too small: tiles must be at least {MIN_TILE_CELLS} latent cells "
            f"({MIN_TILE_CELLS * scale} px for a VAE with {scale} px per cell)."
        )
    if tile_overlap < 0:
        raise SettingsError(f"tile_overlap must be 0 or more pixels, got {tile_overlap}.")
    tile, overlap = tile_size // scale, tile_overlap // scale
    if overlap >= tile:
        raise SettingsError(
            f"tile_overlap ({tile_overlap} px) must be smaller than tile_size ({tile_size} px); "
            f"a quarter of the tile size is a good overlap."
        )
    return tile, overlap


def axis_tiles(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Start cells and size of the tiles along one axis of `length` cells.

    The fewest tiles of at most `tile` cells that cover the axis with neighbours sharing at least
    `overlap` cells, each shrunk to just cover it (so `tile_size` is the largest tile, not every
    tile's size: no compute is spent on overlaps wider than asked), spread evenly.
    """
    if tile >= length:
        return [0], length
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    while True:
        starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
        if size >= tile or max(b - a for a, b in zip(starts, starts[1:])) <= size - overlap:
            return starts, size
        size += 1  # rounding the starts left a gap narrower than the overlap


def _axis_weights(starts: list[int], size: int, length: int, scale: int) -> list[torch.Tensor]:
    """Per tile, a ramp over each pixel of the tile, normalised over all tiles covering that pixel."""
    pixels = torch.arange(size * scale, dtype=torch.float64) + 0.5
    raw = []
    for i, start in enumerate(starts):
        w = torch.ones(size * scale, dtype=torch.float64)
        if i > 0:  # fade in across the overlap with the previous tile
            ramp = (starts[i - 1] + size - start) * scale
            if ramp > 0:
                w = torch.minimum(w, pixels / ramp)
        if i + 1 < len(starts):  # fade out across the overlap with the next tile
            ramp = (start + size - starts[i + 1]) * scale
            if ramp > 0:
                w = torch.minimum(w, (size * scale - pixels) / ramp)
        raw.append(w)
    total = torch.zeros(length * scale, dtype=torch.float64)
    for start, w in zip(starts, raw):
        total[start * scale : start * scale + w.numel()] += w
    return [(w / total[s * scale : s * scale + w.numel()]).float() for s, w in zip(starts, raw)]


def plan_tiles(height: int, width: int, tile: int | None, overlap: int, scale: int) -> list[Tile]:
    """Tiles covering a latent frame of `height` x `width` cells; `tile=None` means one tile (no tiling)."""
    tile = tile if tile is not None else max(height, width)
    (ys, th), (xs, tw) = axis_tiles(height, tile, overlap), axis_tiles(width, tile, overlap)
    wys, wxs = _axis_weights(ys, th, height, scale), _axis_weights(xs, tw, width, scale)
    return [Tile(y, y + th, x, x + tw, wy, wx) for y, wy in zip(ys, wys) for x, wx in zip(xs, wxs)]


def seam_score(frames: torch.Tensor, tiles: list[Tile], scale: int, band: int = 0, margin: int = 8) -> float:
    """How visible tile borders are in decoded `frames` [N, H, W, 3]: about 1.0 means not at all.

    Mean absolute difference between neighbouring rows (and columns) within `band` px of the pixel
    rows where a tile starts or ends, divided by the same around latent-cell boundaries at least
    `margin` px from any tile border (tile borders are cell boundaries, and steps inside a cell differ
    in kind). A seam can also show as a ratio below 1: zero padding at a tile edge flattens both sides
    of it (seen with Wan 2.2); `band` > 0 averages over a few steps around each boundary. The larger
    of the row and column ratios; NaN when no axis has a border.
    """
    x = frames.float()
    scores = []
    for axis, spans in ((1, [(t.y0, t.y1) for t in tiles]), (2, [(t.x0, t.x1) for t in tiles])):
        size = x.shape[axis]
        borders = {lo * scale for lo, _ in spans if lo > 0} | {hi * scale for _, hi in spans if hi * scale < size}
        if not borders:
            continue
        steps = (x.narrow(axis, 1, size - 1) - x.narrow(axis, 0, size - 1)).abs()
        steps = steps.mean(dim=[d for d in range(4) if d != axis])  # steps[i]: between pixels i and i + 1

        cells = [c for c in range(scale, size, scale) if min(abs(c - b) for b in borders) >= margin]
        if not cells:
            continue
        scores.append((steps[_steps_around(borders, band, size)].mean() / steps[_steps_around(cells, band, size)].mean()).item())
    return max(scores) if scores else float("nan")


def _steps_around(edges, band: int, size: int) -> list[int]:
    """Indices of the pixel steps within `band` of each edge (step i lies between pixels i and i + 1)."""
    return sorted({i for e in edges for i in range(e - 1 - band, e + band) if 0 <= i < size - 1})
