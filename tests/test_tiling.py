"""Exact tiles: the receptive field they rest on, tiled == untiled everywhere, the grid, the planner and bad settings."""

import logging

import pytest
import torch

from reference import latents, reference_decode, reference_model, rel_l2
from wan_vae import SettingsError, load_vae
from wan_vae.plan.memory import estimate, figures, grid_cost, plan_for_budget
from wan_vae.network.blocks import unpatchify
from wan_vae.network.stream import StreamState
from wan_vae.plan.tiling import MIN_TILE_CELLS, axis_spans, plan_grid, plan_tiles, tile_cells, window

TOL = 1e-5  # fp32 max abs: conv kernels may sum in another order for another input size


@pytest.fixture(scope="module")
def vaes():
    return {v: load_vae(reference_model(v).state_dict()) for v in ("2.1", "2.2")}


@pytest.fixture(scope="module")
def real_vaes():
    return {v: load_vae(reference_model(v, real=True).state_dict()) for v in ("2.1", "2.2")}


def max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


# ------------------------------------------------------------------------------ the receptive field


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_the_radius_is_read_off_the_network(vaes, version):
    decoder = vaes[version].model.decoder
    # Walked back from the head: 3 residual blocks (2 convs each) per stage, +1 for each upsample's conv.
    assert decoder.receptive_radii() == [13, 12, 10, 7, 0]
    assert decoder.stage_scales == [2, 2, 2, 1]


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_one_middle_cell_moves_no_pixel_beyond_the_radius_and_some_within_a_cell_of_it(vaes, version):
    vae = vaes[version]
    decoder, s = vae.model.decoder, vae.spatial_scale
    radius = decoder.receptive_radii()[0]
    h = w = 2 * radius + 6
    z = vae.model.conv2(latents(version, (1, 2, h, w), seed=1)).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        middle = decoder.middle_pass(z, StreamState())
        nudged = middle.clone()
        cy, cx = radius + 2, radius + 3
        nudged[:, :, :, cy, cx] += 5.0

        def up(x):
            return unpatchify(torch.cat(list(decoder.up_pass(x, StreamState())), dim=2), vae.config.patch_size)

        moved = (up(middle) - up(nudged)).abs().amax(dim=(0, 1, 2)) > 0  # [H, W]
    rows, cols = moved.any(dim=1).nonzero().flatten(), moved.any(dim=0).nonzero().flatten()
    for lo, hi, c in ((rows.min(), rows.max(), cy), (cols.min(), cols.max(), cx)):
        assert (c - radius) * s <= lo and hi < (c + radius + 1) * s  # nothing outside the radius moves
        assert lo < (c - radius + 1) * s and hi >= (c + radius) * s  # the radius is tight to a cell


# ------------------------------------------------------------------------------ tiled == untiled


@pytest.fixture(scope="module")
def untiled(vaes):
    """A batch of 2 videos at an odd size that no tile divides, and its untiled decode, per version."""
    z = {v: latents(v, (2, 3, 13, 17), seed=5) for v in vaes}
    return {v: (z[v], vaes[v].decode(z[v])) for v in vaes}


@pytest.mark.parametrize("version", ["2.1", "2.2"])
@pytest.mark.parametrize("tile,frames_per_chunk", [(MIN_TILE_CELLS, 1), (MIN_TILE_CELLS, 3), (13, 2)])
def test_tiled_decode_equals_the_untiled_decode(vaes, untiled, version, tile, frames_per_chunk):
    vae, (z, full) = vaes[version], untiled[version]
    tiled = vae.decode(z, tiling="on", tile_size=tile * vae.spatial_scale, frames_per_chunk=frames_per_chunk)
    assert len(plan_tiles(13, 17, tile)) > 1
    assert max_diff(tiled, full) <= TOL


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_tiled_decode_still_matches_diffusers(vaes, version):
    z = latents(version, (1, 2, 17, 11), seed=7)
    out = vaes[version].decode(z, tiling="on", tile_size=MIN_TILE_CELLS * vaes[version].spatial_scale)
    assert rel_l2(out, reference_decode(reference_model(version), z)) <= 1e-5


@pytest.mark.parametrize("version,shape", [("2.1", (1, 2, 17, 17)), ("2.2", (1, 1, 9, 10))])
def test_tiled_decode_of_the_real_networks_equals_the_untiled_decode(real_vaes, version, shape):
    vae = real_vaes[version]
    z = latents(version, shape, seed=3)
    tiled = vae.decode(z, tiling="on", tile_size=MIN_TILE_CELLS * vae.spatial_scale)
    assert max_diff(tiled, vae.decode(z)) <= TOL


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_streamed_tiles_equal_the_untiled_decode(vaes, untiled, version):
    vae, (z, full) = vaes[version], untiled[version]
    chunks = list(vae.decode_frames(z, tiling="on", tile_size=MIN_TILE_CELLS * vae.spatial_scale, frames_per_chunk=2))
    assert [c.shape[0] for c in chunks] == [1, 8] * 2
    images = ((full.permute(0, 2, 3, 4, 1) + 1) / 2).reshape(-1, *chunks[0].shape[1:])
    assert max_diff(torch.cat(chunks), images) <= TOL


def test_tiling_in_bf16_is_as_close_to_fp32_as_untiled_bf16(vaes):
    vae = load_vae(reference_model("2.1").state_dict(), dtype=torch.bfloat16)
    z = latents("2.1", (1, 2, 13, 17), seed=4)
    exact = vaes["2.1"].decode(z)
    # Another summation order (another conv size) moves some bf16 roundings by an ulp; no more than that.
    assert rel_l2(vae.decode(z, tiling="on", tile_size=64), exact) < 1e-2 and rel_l2(vae.decode(z), exact) < 1e-2


# ------------------------------------------------------------------------------ the grid


@pytest.mark.parametrize("length,count", [(l, c) for l in (1, 7, 13, 60, 104) for c in (1, 2, 3, 7) if c <= l])
def test_spans_partition_the_axis_evenly(length, count):
    spans = axis_spans(length, count)
    assert spans[0][0] == 0 and spans[-1][1] == length and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    sizes = [b - a for a, b in spans]
    assert max(sizes) - min(sizes) <= 1


def test_windows_grow_by_the_radius_and_stop_at_the_frame():
    radii, scales = [13, 12, 10, 7, 0], [2, 2, 2, 1]
    tiles = plan_grid(30, 40, 2, 2)
    assert [(t.y0, t.y1, t.x0, t.x1) for t in tiles] == [(0, 15, 0, 20), (0, 15, 20, 40), (15, 30, 0, 20), (15, 30, 20, 40)]
    win = window(tiles[3], 30, 40, radii, scales)  # bottom right: a halo only up and left
    assert win.regions == ((2, 30, 7, 40), (18, 60, 28, 80), (50, 120, 70, 160), (113, 240, 153, 320), (120, 240, 160, 320))


def test_tile_size_in_pixels_becomes_latent_cells():
    assert tile_cells(512, 64, 8) == 64 and tile_cells(512, 0, 16) == 32 and tile_cells(64, 64, 8) == 8


@pytest.mark.parametrize("kw,text", [
    ({"tile_size": 32}, r"too small: the smallest tile is 8 latent cells, 64 px .* Use tile_size 64"),
    ({"tile_size": 256, "tile_overlap": 300}, "larger than tile_size"),
    ({"tile_size": 256, "tile_overlap": -8}, "0 or more"),
])  # fmt: skip
def test_bad_tile_settings_are_refused_before_decoding(vaes, kw, text):
    with pytest.raises(SettingsError, match=text):
        vaes["2.1"].decode(latents("2.1"), tiling="on", **kw)


# ------------------------------------------------------------------------------ the planner


def test_auto_decodes_untiled_when_the_frame_fits(vaes, caplog):
    vae, z = vaes["2.1"], latents("2.1", (1, 2, 24, 40))
    with caplog.at_level(logging.INFO, logger="wan_vae"):
        assert torch.equal(vae.decode(z, tiling="auto", memory_budget=2**40), vae.decode(z))
    assert "no tiling" in caplog.text


def test_auto_picks_the_grid_with_least_work_that_fits_and_decodes_exactly(vaes, real_vaes, caplog):
    vae = real_vaes["2.1"]
    h, w = 60, 104  # 480x832
    fig = figures(vae)
    untiled = estimate(vae, h, w, 1, 1, fig=fig)
    plan = plan_for_budget(vae, h, w, 1, untiled // 2)
    assert plan.estimate <= untiled // 2 and plan.rows * plan.cols > 1
    # every grid that fits costs at least as much work
    for rows in range(1, h // MIN_TILE_CELLS + 1):
        for cols in range(1, w // MIN_TILE_CELLS + 1):
            if estimate(vae, h, w, rows, cols, fig=fig) <= untiled // 2:
                assert grid_cost(fig, h, w, rows, cols).work >= plan.work
    # more tiles cost more work (the halo), and the planner's grid decodes to the untiled pixels
    assert grid_cost(fig, h, w, 2, 2).work < grid_cost(fig, h, w, 4, 4).work
    small = vaes["2.1"]
    z = latents("2.1", (1, 2, 24, 40), seed=8)
    with caplog.at_level(logging.INFO, logger="wan_vae"):
        out = small.decode(z, tiling="auto", memory_budget=estimate(small, 24, 40, 2, 2))
    assert "tiles" in caplog.text and max_diff(out, small.decode(z)) <= TOL


def test_auto_falls_back_to_one_frame_per_chunk_when_that_is_what_fits(real_vaes):
    vae, h, w = real_vaes["2.1"], 60, 104
    smallest_at_4 = min(estimate(vae, h, w, r, c, 4) for r in range(1, 8) for c in range(1, 14))
    plan = plan_for_budget(vae, h, w, 4, smallest_at_4 - 1)
    assert plan.frames_per_chunk == 1


def test_a_budget_too_small_for_any_tile_is_refused_with_the_minimum(real_vaes):
    with pytest.raises(SettingsError, match=r"too small .* even the smallest tiles \(64 px, frames_per_chunk 1\) need about \d+\.\d\d GiB"):
        real_vaes["2.1"].decode(latents("2.1", (1, 2, 60, 104)), tiling="auto", memory_budget=2**20)


def test_streaming_with_tiles_holds_every_tile_s_history(real_vaes):
    vae = real_vaes["2.1"]
    assert estimate(vae, 60, 104, 2, 4, streaming=True) > estimate(vae, 60, 104, 2, 4)
    # the halos' history comes on top of the whole frame's (the transients still shrink with the tile)
    fig = figures(vae)
    assert grid_cost(fig, 60, 104, 2, 4).history_sum > grid_cost(fig, 60, 104, 1, 1).history_sum
