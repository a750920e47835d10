"""Exact encode: the margin tiles rest on, tiled == untiled == diffusers, streamed frames, devices, the planner, bad input."""

import pytest
import torch

from reference import reference_encode, reference_model, video
from wan_vae import LatentError, Options, SettingsError, load_vae
from wan_vae.plan import encode_memory
from wan_vae.plan.encode_memory import best_split, estimate, plan_for_budget
from wan_vae.run.encode import make_encode_plan
from wan_vae.network.blocks import patchify
from wan_vae.network.stream import StreamState
from wan_vae.plan.tiling import MIN_TILE_CELLS, Tile, down_window

TOL = 1e-5  # fp32 max abs


@pytest.fixture(scope="module")
def vaes():
    return {v: load_vae(reference_model(v).state_dict()) for v in ("2.1", "2.2")}


def max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def frames_of(x: torch.Tensor) -> torch.Tensor:
    """[1, 3, F, H, W] in [-1, 1] -> ComfyUI IMAGE frames [F, H, W, 3] in [0, 1]."""
    return ((x[0] + 1) / 2).permute(1, 2, 3, 0).contiguous()


# ------------------------------------------------------------------------------ the margin


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_one_input_pixel_moves_only_the_cells_whose_window_holds_it(vaes, version):
    vae = vaes[version]
    encoder, p, s = vae.model.encoder, vae.config.patch_size, vae.spatial_scale
    h, w = 6, 7
    x = video(version, (1, 1, h, w))

    def down(v):
        return encoder.down_pass(patchify(v, p), StreamState())

    base = down(x)
    for py, px in ((0, 0), (23, 30), (h * s - 1, w * s - 1), (2 * s + 3, 5 * s)):
        nudged = x.clone()
        nudged[..., py, px] += 0.5
        moved = (down(nudged) - base).abs().amax(dim=(0, 1, 2)) > 0
        assert moved.any()
        for cy in range(h):
            for cx in range(w):
                region = down_window(Tile(cy, cy + 1, cx, cx + 1), h, w, encoder).regions[0]  # patches
                inside = region[0] * p <= py < region[1] * p and region[2] * p <= px < region[3] * p
                if moved[cy, cx]:
                    assert inside, f"pixel {(py, px)} moved cell {(cy, cx)} outside its window {region}"
    # the margin is not wildly loose: a cell three cells away from a pixel is not in its window
    region = down_window(Tile(3, 4, 3, 4), h, w, encoder).regions[0]
    assert region[1] * p <= (3 + 4) * s and region[0] * p >= (3 - 3) * s


def test_windows_start_on_the_stride_grid(vaes):
    encoder = vaes["2.1"].model.encoder
    for tile in (Tile(3, 7, 5, 11), Tile(1, 2, 0, 13)):
        win = down_window(tile, 13, 17, encoder)
        for region, scale in zip(win.regions, win.scales):
            if scale == 2:
                assert all(v % 2 == 0 for v in region), region
        assert win.regions[-1] == (tile.y0, tile.y1, tile.x0, tile.x1)


# ------------------------------------------------------------------------------ exactness


@pytest.fixture(scope="module")
def clips(vaes):
    """Per version: an odd-sized batch of 2 videos of 9 frames and its untiled latents."""
    out = {}
    for version, vae in vaes.items():
        x = video(version, (2, 9, 13, 17), seed=4)
        out[version] = x, vae.encode(x)
    return out


@pytest.mark.parametrize("version", ["2.1", "2.2"])
@pytest.mark.parametrize("tile,frames_per_chunk", [(MIN_TILE_CELLS, 1), (MIN_TILE_CELLS, 3), (10, 2), (100, 1)])
def test_tiled_encode_equals_the_untiled_encode(vaes, clips, version, tile, frames_per_chunk):
    vae = vaes[version]
    x, untiled = clips[version]
    tiled = vae.encode(x, tiling="on", tile_size=tile * vae.spatial_scale, frames_per_chunk=frames_per_chunk)
    assert tiled.shape == untiled.shape == (2, vae.latent_channels, 3, 13, 17)
    assert max_diff(tiled, untiled) <= TOL


@pytest.mark.parametrize("version,stage,rest_tiled,tile,frames_per_chunk", [
    ("2.1", 1, True, MIN_TILE_CELLS, 1), ("2.1", 2, True, 10, 2), ("2.1", 3, True, MIN_TILE_CELLS, 3),
    ("2.1", 2, False, MIN_TILE_CELLS, 1), ("2.2", 1, False, 10, 1), ("2.2", 2, True, MIN_TILE_CELLS, 3),
    ("2.2", 3, False, MIN_TILE_CELLS, 2), ("2.2", 3, True, 10, 1),
])  # fmt: skip
def test_split_encodes_equal_the_untiled_encode(vaes, clips, version, stage, rest_tiled, tile, frames_per_chunk, monkeypatch):
    """Stages before `stage` over the whole video, tile by tile, then the rest on their kept output."""
    split = encode_memory.Split(stage, rest_tiled)
    monkeypatch.setattr(encode_memory, "best_split", lambda *a, **k: split)
    vae = vaes[version]
    x, untiled = clips[version]
    options = dict(tiling="on", tile_size=tile * vae.spatial_scale, frames_per_chunk=frames_per_chunk)
    plan = make_encode_plan(vae, 13 * vae.spatial_scale, 17 * vae.spatial_scale, 9, Options(**options), streaming=False)
    assert [seg.stages for seg in plan.segments] == [(0, stage), (stage, 4)]
    assert len(plan.segments[0].tiles) > 1 and (len(plan.tiles) > 1) == rest_tiled
    assert max_diff(vae.encode(x, **options), untiled) <= TOL
    if stage == 2:
        assert max_diff(vae.encode(x[:1], devices=["cpu", "cpu"], **options), untiled[:1]) <= TOL


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_untiled_and_tiled_encodes_are_within_1e_5_of_diffusers(vaes, version):
    vae, ref = vaes[version], reference_model(version)
    x = video(version, (1, 5, 11, 9), seed=2)
    expected = reference_encode(ref, x)  # latent_dist's mean
    mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
    for tiling in ("off", "on"):
        kw = dict(tiling=tiling, tile_size=MIN_TILE_CELLS * vae.spatial_scale)
        assert max_diff(vae.encode(x, **kw), expected) <= TOL
        assert max_diff(vae.encode(x, normalized=True, **kw), (expected - mean) / std) <= 5 * TOL  # / std (~0.5) doubles it


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_frames_as_comfyui_images_encode_like_the_video(vaes, clips, version):
    vae = vaes[version]
    x, untiled = clips[version]
    assert max_diff(vae.encode(frames_of(x[:1]), tiling="on", tile_size=MIN_TILE_CELLS * vae.spatial_scale), untiled[:1]) <= TOL


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_streamed_frames_encode_like_the_whole_video_whatever_the_chunks(vaes, clips, version):
    vae = vaes[version]
    x, untiled = clips[version]
    frames = frames_of(x[:1])
    for sizes in ([9], [1, 8], [3, 2, 4], [5, 4]):
        chunks, at = [], 0
        for n in sizes:
            chunks.append(frames[at : at + n])
            at += n
        for tiling in ("off", "on"):
            out = vae.encode_frames(iter(chunks), tiling=tiling, tile_size=MIN_TILE_CELLS * vae.spatial_scale, frames_per_chunk=2)
            assert max_diff(out, untiled[:1]) <= TOL, (sizes, tiling)


def test_streamed_uint8_frames_and_trim(vaes):
    vae = vaes["2.1"]
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (11, 50, 83, 3), dtype=torch.uint8, generator=g)
    out = vae.encode_frames([frames[:6], frames[6:]], trim=True)
    kept = frames[:9, 1:49, 1:81].float() / 255  # the centre, 1 + 4k frames
    assert out.shape == (1, 16, 3, 6, 10)
    assert max_diff(out, vae.encode(kept)) <= TOL
    with pytest.raises(LatentError, match="multiples of 8 px"):
        vae.encode_frames([frames])
    with pytest.raises(LatentError, match="this video has 11, which would lose 2"):
        vae.encode_frames([frames[:, :48, :80]])


def test_several_devices_give_the_same_latents(vaes, clips):
    vae = vaes["2.1"]
    x, untiled = clips["2.1"]
    kw = dict(tiling="on", tile_size=MIN_TILE_CELLS * 8, devices=["cpu", "cpu"])
    assert max_diff(vae.encode(x, **kw), untiled) <= TOL
    assert max_diff(vae.encode_frames([frames_of(x[1:])], **kw), untiled[1:]) <= TOL


@pytest.mark.parametrize("split", [None, encode_memory.Split(2, True)])
def test_progress_covers_every_tile_and_cancel_stops(vaes, clips, split, monkeypatch):
    monkeypatch.setattr(encode_memory, "best_split", lambda *a, **k: split)
    vae = vaes["2.1"]
    x, _ = clips["2.1"]
    seen = []
    vae.encode(x[:1], tiling="on", tile_size=MIN_TILE_CELLS * 8, progress=lambda d, t: seen.append((d, t)))
    steps = 3 * 6 * (1 if split is None else 2)  # 3 latent frames x 2x3 tiles, in each segment
    assert seen[-1] == (steps, steps) and len(seen) == steps
    from wan_vae import DecodeCancelled

    with pytest.raises(DecodeCancelled):
        vae.encode(x, cancel=lambda: True)


# ------------------------------------------------------------------------------ the planner


def test_auto_encodes_untiled_when_it_fits_and_in_tiles_when_not(vaes, clips):
    vae = vaes["2.1"]
    x, untiled = clips["2.1"]
    h, w, kw = 13, 17, dict(latent_frames=3, video_bytes=x.numel() * 4)  # as encode() plans it
    whole = estimate(vae, h, w, **kw)[0]
    assert plan_for_budget(vae, h, w, 1, 10 * whole, **kw).rows * plan_for_budget(vae, h, w, 1, 10 * whole, **kw).cols == 1
    tight = estimate(vae, h, w, 1, 2, **kw)[0]
    plan = plan_for_budget(vae, h, w, 1, tight, **kw)
    assert plan.rows * plan.cols > 1 and plan.estimate <= tight
    assert max_diff(vae.encode(x, tiling="auto", memory_budget=tight), untiled) <= TOL
    with pytest.raises(SettingsError, match="too small to encode"):
        vae.encode(x, tiling="auto", memory_budget=1 << 20)


def test_estimates_shrink_with_tiles_and_grow_with_the_chunk(vaes):
    vae = load_vae(reference_model("2.1", real=True).state_dict())
    one = estimate(vae, 60, 104)[0]
    assert estimate(vae, 60, 104, 2, 4)[0] < 0.6 * one
    assert estimate(vae, 60, 104, frames_per_chunk=2)[0] > one
    assert estimate(vae, 60, 104, 2, 4, streaming=True)[0] > estimate(vae, 60, 104, 2, 4)[0]  # every tile's history


def test_a_split_is_planned_where_it_saves_work_and_its_output_fits():
    vae = load_vae(reference_model("2.1", real=True).state_dict())
    h, w, video = 60, 104, 3 * 480 * 832 * 4  # 832x480 px, video bytes per frame (fp32)
    short, long = dict(latent_frames=3, video_bytes=9 * video), dict(latent_frames=81, video_bytes=321 * video)
    ways = encode_memory.splits(vae, True, same_tiles=True)
    assert ways == [None, *(encode_memory.Split(s, True) for s in (1, 2, 3))]
    costs = {s: estimate(vae, h, w, 2, 4, 1, False, **short, split=s) for s in ways}
    least = min(ways, key=lambda s: costs[s][1])
    assert costs[least][1] < 0.8 * costs[None][1]  # the margin no longer all at full resolution
    assert best_split(vae, h, w, 2, 4, 1, 1 << 40, **short) == least == encode_memory.Split(2, True)
    # 321 frames: what stages 0-1 keep (stage 2's input, every frame) outgrows the unsplit windows, so on
    # the unsplit peak a split there no longer fits and a later one is taken
    peaks = {s: estimate(vae, h, w, 2, 4, 1, False, **long, split=s)[0] for s in ways}
    assert peaks[encode_memory.Split(1, True)] > peaks[encode_memory.Split(2, True)] > peaks[None]
    chosen = best_split(vae, h, w, 2, 4, 1, peaks[None], **long)
    assert chosen == encode_memory.Split(3, True) and peaks[chosen] <= peaks[None]
    assert best_split(vae, h, w, 2, 4, 1, 1 << 20, **long) == min(ways, key=peaks.get)  # nothing fits: the least peak
    # auto on the unsplit 2x4 peak: a split fits there with less work, and may run its rest on the whole frame
    plan = plan_for_budget(vae, h, w, 1, costs[None][0], **short)
    assert plan.split is not None and plan.work < costs[None][1] and plan.estimate <= costs[None][0]
    # a budget nothing fits: the message quotes the least any grid and split needs (here a split's)
    with pytest.raises(SettingsError, match="too small to encode") as caught:
        plan_for_budget(vae, h, w, 1, 1 << 20, **short)
    least = {s: min(estimate(vae, h, w, r, c, 1, False, **short, split=s)[0] for r in range(1, h // 8 + 1) for c in range(1, w // 8 + 1))
             for s in encode_memory.splits(vae, True)}  # fmt: skip
    assert min(least.values()) < least[None]
    assert f"need about {min(least.values()) / 2**30:.2f} GiB" in str(caught.value)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("make,text", [
    (lambda: torch.zeros(1, 3, 0, 48, 80), "empty"),
    (lambda: torch.zeros(2, 48, 80), "must be \\[batch, 3, frames"),
    (lambda: torch.full((5, 48, 80, 3), float("nan")), "NaN"),
    (lambda: torch.full((5, 48, 80, 3), 2.0), "in \\[0, 1\\]"),
    (lambda: torch.full((1, 3, 5, 48, 80), -3.0), "in \\[-1, 1\\]"),
    (lambda: torch.zeros(6, 48, 80, 3), "1 \\+ 4k frames"),
])  # fmt: skip
def test_bad_videos_are_refused_before_any_work(vaes, make, text):
    with pytest.raises(LatentError, match=text):
        vaes["2.1"].encode(make(), tiling="on", tile_size=64, progress=lambda *a: pytest.fail("work started"))


def test_empty_streams_and_tiny_decoders_are_refused(vaes, tmp_path):
    with pytest.raises(LatentError, match="no frames"):
        vaes["2.1"].encode_frames(iter([]))
    from test_tiny_decoders import tiny_file  # the tiny decoder files the tests build

    tiny_file(tmp_path / "taew2_1.pth", 16)
    tiny = load_vae(tmp_path / "taew2_1.pth")
    with pytest.raises(SettingsError, match="decoder only"):
        tiny.encode(torch.zeros(1, 3, 1, 64, 64))
