"""Wan-Alpha: the colour VAE and its alpha decoder as one VAE, whose decodes are RGBA with the alpha the official
template computes (ImageToMask red -> InvertMask -> Join Image with Alpha: 1 - (1 - red)), streamed chunk by chunk."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from media import read_rgba
from reference import latents, write_vae_file
from test_pack import decode, load
from wan_vae import CheckpointError, Options, load_vae
from wan_vae.alpha_pair import pair_alpha

COLOUR, ALPHA = "wan_alpha_2.1_vae_rgb_channel.safetensors", "wan_alpha_2.1_vae_alpha_channel.safetensors"


def write_pair(folder, real: bool = False) -> None:
    """The colour half, and an alpha half whose decoder differs (as Wan-Alpha's fine-tuned one does); `real`: the real
    widths, which core's VAE object needs."""
    write_vae_file(folder / COLOUR, "2.1", real=real)
    sd = load_file(str(folder / COLOUR))
    g = torch.Generator().manual_seed(7)
    save_file({k: (v.float() + 0.05 * torch.randn(v.shape, generator=g) if k.startswith("decoder.") else v.float()).to(v.dtype)
               for k, v in sd.items()}, str(folder / ALPHA))  # fmt: skip


def expected_rgba(colour, alpha, z) -> torch.Tensor:
    """What the template gives: the colour decode joined with 1 - (1 - the alpha decode's red)."""
    rgb, grey = colour.decode(z, layout="images"), alpha.decode(z, layout="images")
    return torch.cat([rgb, 1.0 - (1.0 - grey[..., :1])], dim=-1)


def test_one_decode_gives_the_template_s_rgba_in_chunks_and_tiles(tmp_path):
    write_pair(tmp_path)
    colour, alpha = load_vae(tmp_path / COLOUR), load_vae(tmp_path / ALPHA)
    vae = pair_alpha(colour, alpha)
    assert vae.out_channels == 4 and vae.title.startswith("Wan-Alpha: the Wan 2.1 VAE")
    z = latents("2.1", (1, 3, 12, 16))
    want = expected_rgba(colour, alpha, z)
    assert torch.equal(vae.decode(z, layout="images"), want)
    streamed = torch.cat(list(vae.decode_frames(z, options=Options(tiling="on", tile_size=64, tile_overlap=0, frames_per_chunk=2))))
    assert (streamed - want).abs().max() < 1e-5  # exact tiles, chunks of 2
    assert not torch.equal(want[..., 3], want[..., 0])  # the alpha is the other decoder's
    x = torch.rand(1, 3, 5, 48, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert torch.equal(vae.encode(x), colour.encode(x))  # Wan-Alpha's encoder is the colour VAE's


def test_halves_of_different_families_are_refused_naming_both(tmp_path):
    write_vae_file(tmp_path / "wan22.safetensors", "2.2")
    write_vae_file(tmp_path / COLOUR, "2.1")
    with pytest.raises(CheckpointError, match="colour half is the Wan 2.1 VAE .* and the alpha half the Wan 2.2 VAE"):
        pair_alpha(load_vae(tmp_path / COLOUR), load_vae(tmp_path / "wan22.safetensors"))


def test_load_wan_vae_pairs_the_halves_by_name_and_the_decode_nodes_give_rgba(pack, folders, monkeypatch):
    write_pair(folders["vae"])
    paired = load(pack, COLOUR, device="cpu")
    assert paired.vae.out_channels == 4
    colour_only = pack.NODE_CLASS_MAPPINGS["LoadWanVAE"]().load(COLOUR, "auto", "cpu", "none")[0]
    assert colour_only.vae.out_channels == 3
    explicit = pack.NODE_CLASS_MAPPINGS["LoadWanVAE"]().load(COLOUR, "auto", "cpu", ALPHA)[0]
    z = latents("2.1", (1, 2, 6, 10))
    images = decode(pack, paired, z)
    assert images.shape == (5, 48, 80, 4) and torch.equal(images, decode(pack, explicit, z))
    want = expected_rgba(load_vae(folders["vae"] / COLOUR), load_vae(folders["vae"] / ALPHA), z)
    assert torch.equal(images, want)
    from test_decode_to_video import to_video

    monkeypatch.setattr(pack.lib.WanVAE, "decode", lambda *a, **k: pytest.fail("the whole video was decoded at once"))
    path = to_video(pack, paired, z, format="ffv1-mkv", save_latent=False)["result"][0]
    assert np.array_equal(read_rgba(path), (want.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8))  # lossless RGBA
    with pytest.raises(pack.lib.VideoWriteError, match="alpha channel \\(RGBA\\), which h264-mp4 cannot keep"):
        to_video(pack, paired, z, format="h264-mp4")


def test_the_alpha_half_alone_is_refused_saying_what_to_load(pack, folders):
    write_pair(folders["vae"])
    with pytest.raises(pack.lib.CheckpointError, match=f"{ALPHA} is Wan-Alpha's alpha decoder.*load {COLOUR} as vae_name"):
        load(pack, ALPHA, device="cpu")


def test_the_pair_decodes_rgba_in_core_s_vae_decode_and_in_the_wrapper_s(pack, folders, monkeypatch):
    """Through Wan VAE for Core Nodes, VAE Decode gives [B, F, H, W, 4] as newer core's RGBA VAEs do; through Wan VAE for
    WanVideoWrapper, WanVideo Decode gives [F, H, W, 4] (its default mapping: alpha in [-1, 1] like the colour). Both
    encode with the colour half's encoder."""
    from test_core_vae import CoreLikeVAE, adapt
    from test_wrapper import exact, normalize
    from wrapper_standins import wan_video_decode

    write_pair(folders["vae"])
    paired = load(pack, COLOUR, device="cpu")
    colour = load_vae(folders["vae"] / COLOUR)
    z = latents("2.1", (1, 2, 6, 10))
    want = expected_rgba(colour, load_vae(folders["vae"] / ALPHA), z)
    monkeypatch.setattr(pack.host, "core_vae_from_weights", lambda sd: CoreLikeVAE("2.1"))
    monkeypatch.setitem(pack.nodes.core_vae.CORE_BUILDS, "2.1", (paired.vae.config.dim, paired.vae.config.decoder_dim))
    twin = adapt(pack, paired, tiling="on", tile_size=64)
    images = twin.decode(z)
    assert images.shape == (1, 5, 48, 80, 4) and (images[0] - want).abs().max() < 1e-5
    frames = torch.rand(5, 48, 80, 3, generator=torch.Generator().manual_seed(8))
    assert (twin.encode(frames) - colour.encode(frames)).abs().max() < 1e-5
    wrapped = wan_video_decode("2026", exact(pack, paired), {"samples": normalize(z, "2.1")}, False)
    assert wrapped.shape == (5, 48, 80, 4) and (wrapped - want).abs().max() < 1e-5


def test_the_decode_nodes_ask_comfyui_for_room_for_both_decoders(pack, folders, monkeypatch):
    write_pair(folders["vae"])
    paired = load(pack, COLOUR, device="cpu")
    colour_only = pack.NODE_CLASS_MAPPINGS["LoadWanVAE"]().load(COLOUR, "auto", "cpu", "none")[0]
    asked = []
    real = pack.host.make_room
    monkeypatch.setattr(pack.host, "make_room", lambda device, needed: asked.append(needed) or real(device, needed))
    z = latents("2.1", (1, 2, 6, 10))
    for vae in (colour_only, paired):
        decode(pack, vae, z, tiling="on", tile_size=64)
    assert len(asked) == 2 and asked[1] == 2 * asked[0]  # two decoders of the same widths, each with its history
