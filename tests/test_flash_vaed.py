"""Flash-VAED's distilled Wan 2.1 decoder: loaded by content, decoded as its reference decodes (tests/flash_reference.py,
written from reading its code: not on the package registry), in chunks of any size, through the nodes; the release's
layout gives its 5.86M parameters; an incomplete file and an encode are refused saying what to do."""

import pytest
import torch

from flash_reference import reference_decode
from reference import latents
from test_pack import decode, load
from wan_vae import CheckpointError, load_vae
from wan_vae.network.flash_vaed import FlashModel


def flash_state_dict(dims=(32, 16, 8, 8), seed=0) -> dict[str, torch.Tensor]:
    """A Flash-VAED file's tensors (its names, reduced widths), seeded random."""
    torch.manual_seed(seed)
    model = FlashModel(16, dims)
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    return model.state_dict()


def test_the_release_layout_has_its_published_parameter_count():
    with torch.device("meta"):
        model = FlashModel(16, (384, 192, 24, 12))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 5.86  # the paper's 5.86 M


def test_decodes_as_the_reference_in_any_chunks(tmp_path):
    sd = flash_state_dict()
    torch.save(sd, tmp_path / "Flash_VAED_Wan.pth")
    vae = load_vae(tmp_path / "Flash_VAED_Wan.pth")
    assert vae.title.startswith("Flash_VAED_Wan.pth (Flash-VAED") and not vae.has_encoder
    z = latents("2.1", (2, 5, 3, 5))
    want = reference_decode(sd, z).float()
    assert (vae.decode(z, normalized=True) - want).abs().max() < 1e-5
    for fpc in (1, 3):
        frames = torch.cat(list(vae.decode_frames(z, normalized=True, frames_per_chunk=fpc)))
        assert (frames - (want.permute(0, 2, 3, 4, 1).reshape(-1, 24, 40, 3) + 1) / 2).abs().max() < 1e-5
    raw = z * torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1) + torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    assert (vae.decode(raw) - want).abs().max() < 1e-4  # raw latents (ComfyUI's samplers') give the same video


def test_an_incomplete_file_and_an_encode_are_refused(tmp_path):
    sd = flash_state_dict()
    del sd["decoder.upsamples.9.residual.2.weight"]
    with pytest.raises(CheckpointError, match="missing 1: decoder.upsamples.9.residual.2.weight"):
        load_vae(sd, name="broken.pth")
    sd = flash_state_dict()
    del sd["decoder.upsamples.7.resample.1.weight"]
    with pytest.raises(CheckpointError, match="without 'decoder.upsamples.7.resample.1.weight'"):
        load_vae(sd, name="cut.pth")
    with pytest.raises(Exception, match="encode with the full Wan 2.1 VAE"):
        load_vae(flash_state_dict(), name="f.pth").encode(torch.zeros(1, 3, 1, 64, 64))


def test_the_nodes_decode_and_stream_it(pack, folders, monkeypatch):
    torch.save(flash_state_dict(), folders["vae"] / "Flash_VAED_Wan.pth")
    vae = load(pack, "Flash_VAED_Wan.pth", device="cpu")
    z = latents("2.1", (1, 3, 3, 5))
    images = decode(pack, vae, z, latent_space="normalized")
    want = (reference_decode(flash_state_dict(), z).float()[0].permute(1, 2, 3, 0) + 1) / 2
    assert images.shape == (9, 24, 40, 3) and (images - want).abs().max() < 1e-5
    from test_decode_to_video import to_video

    path = to_video(pack, vae, z, latent_space="normalized", format="ffv1-mkv", save_latent=False)["result"][0]
    from media import read_frames

    assert (torch.from_numpy(read_frames(path)).float() - (want * 255 + 0.5).floor()).abs().max() <= 1
