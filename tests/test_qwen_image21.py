"""Qwen-Image 2.1's image VAE (diffusers 0.42's AutoencoderKLQwenImage21: the Wan 2.2 residual network with 2-D
kernels, five stages, 64 latent channels, RGBA): decoded and encoded as diffusers does, from diffusers' names (4-D
convs) and ComfyUI's (5-D of time size 1), in exact tiles, through the nodes; wrong latents either way are refused."""

import json

import pytest
import torch
from safetensors.torch import save_file

from reference import latents, original_state_dict
from test_pack import decode, load
from wan_vae import LatentError, Options, load_vae
from wan_vae.files.config import QWEN_IMAGE21

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def reference():
    """A reduced AutoencoderKLQwenImage21 (widths 16 / 24, the real depth and stages) with seeded random weights."""
    torch.manual_seed(0)
    model = diffusers.AutoencoderKLQwenImage21(base_dim=16, decoder_base_dim=24).eval().requires_grad_(False)
    for p in model.parameters():
        p.normal_(0, 0.05)
    return model


def qi21_latents(shape=(2, 1, 5, 6), seed=0) -> torch.Tensor:
    b, t, h, w = shape
    return torch.randn(b, 64, t, h, w, generator=torch.Generator().manual_seed(seed))


def test_decode_and_encode_are_diffusers_within_1e_5(reference):
    vae = load_vae(reference.state_dict(), name="qwen_image_2.1_vae")
    assert vae.config.version == "qwen-image-2.1" and vae.config.name() == "Qwen-Image 2.1 VAE"
    assert (vae.spatial_scale, vae.latent_channels, vae.in_channels, vae.out_channels) == (16, 64, 4, 4)
    z = qi21_latents()
    assert (vae.decode(z) - reference.decode(z).sample).abs().max() < 1e-5
    x = torch.rand(2, 4, 1, 80, 96, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert (vae.encode(x) - reference.encode(x).latent_dist.mean).abs().max() < 1e-5
    rgb = x[:, :3]  # RGB pictures get alpha 1, as ComfyUI pads them
    padded = torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=1)
    assert (vae.encode(rgb) - reference.encode(padded).latent_dist.mean).abs().max() < 1e-5
    mean, std = torch.tensor(QWEN_IMAGE21.latents_mean).view(1, 64, 1, 1, 1), torch.tensor(QWEN_IMAGE21.latents_std).view(1, 64, 1, 1, 1)
    assert torch.allclose(vae.encode(x, normalized=True), (vae.encode(x) - mean) / std, atol=1e-6)


def test_comfyui_s_file_with_5_d_weights_of_time_size_1_loads_the_same(reference, tmp_path):
    ours = load_vae(reference.state_dict(), name="diffusers")
    comfy = {k: v.to(torch.bfloat16) for k, v in ours.model.state_dict().items()}  # original names, as ComfyUI repackages
    assert comfy["decoder.head.2.weight"].shape[2] == 1
    save_file(comfy, str(tmp_path / "qwen_image_2.1_vae_bf16.safetensors"))
    vae = load_vae(tmp_path / "qwen_image_2.1_vae_bf16.safetensors")
    assert vae.checkpoint.naming == "original" and vae.config.images_only
    z = qi21_latents(seed=2)
    bf16 = load_vae({k: v.float() for k, v in comfy.items()}, name="bf16 values")
    assert torch.equal(vae.decode(z), bf16.decode(z))


def test_a_diffusers_folder_loads_with_its_config_checked(reference, tmp_path):
    reference.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["_class_name"] == "AutoencoderKLQwenImage21"
    vae = load_vae(tmp_path)
    z = qi21_latents(seed=3)
    assert (vae.decode(z) - reference.decode(z).sample).abs().max() < 1e-5


def test_tiles_give_the_untiled_picture(reference):
    vae = load_vae(reference.state_dict(), name="qwen_image_2.1_vae")
    z = qi21_latents((1, 1, 20, 24), seed=4)
    tiled = vae.decode(z, options=Options(tiling="on", tile_size=128, tile_overlap=0))
    assert (tiled - vae.decode(z)).abs().max() < 1e-5
    x = torch.rand(1, 4, 1, 320, 384, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert (vae.encode(x, options=Options(tiling="on", tile_size=128)) - vae.encode(x)).abs().max() < 1e-5


def test_frames_and_wrong_latents_are_refused_naming_what_to_load(reference):
    vae = load_vae(reference.state_dict(), name="qwen_image_2.1_vae")
    with pytest.raises(LatentError, match="an image VAE: each latent is one picture .* these have 3 frames. Give them as a batch of 6"):
        vae.decode(qi21_latents((2, 3, 4, 4)))
    with pytest.raises(LatentError, match="image VAE: it encodes pictures"):
        vae.encode(torch.zeros(1, 4, 5, 32, 32))
    with pytest.raises(LatentError, match="16 channels: .* need the Wan 2.1 VAE, but the loaded VAE is .*Qwen-Image 2.1"):
        vae.decode(latents("2.1"))
    wan = load_vae(original_state_dict("2.1"))
    with pytest.raises(LatentError, match="64 channels: Qwen-Image 2.1 latents need the Qwen-Image 2.1 VAE.*qwen_image_2.1_vae_bf16"):
        wan.decode(qi21_latents())


def test_a_64_channel_file_with_3_d_kernels_is_refused_saying_what_is_known(reference):
    sd = {k: (v.unsqueeze(2).expand(-1, -1, 3, -1, -1).clone() if v.dim() == 4 and "conv_in" in k else v)
          for k, v in reference.state_dict().items()}  # fmt: skip
    with pytest.raises(Exception, match="64 latent channels and 3-D kernels; the VAEs known are .* Qwen-Image 2.1 \\(64, 2-D\\)"):
        load_vae(sd, name="odd")


def test_wan_decode_latents_gives_rgba_pictures_from_image_latents(pack, folders, reference):
    vae = load_vae(reference.state_dict(), name="qi21")
    save_file({k: v.contiguous() for k, v in vae.model.state_dict().items()}, str(folders["vae"] / "qwen_image_2.1_vae_bf16.safetensors"))
    node_vae = load(pack, "qwen_image_2.1_vae_bf16.safetensors", device="cpu")
    z = qi21_latents((3, 1, 5, 6), seed=6)
    images = decode(pack, node_vae, z[:, :, 0])  # ComfyUI's 4-D image latents: a batch of pictures
    assert images.shape == (3, 80, 96, 4)
    assert torch.allclose(images, (reference.decode(z).sample.clamp(-1, 1)[:, :, 0].permute(0, 2, 3, 1) + 1) / 2, atol=1e-5)
    encoded = pack.NODE_CLASS_MAPPINGS["WanEncode"]().encode(node_vae, images[..., :3], "raw", "off", 512, 1, False)[0]["samples"]
    assert encoded.shape == (3, 64, 5, 6)  # ComfyUI's image latents, as core's Qwen-Image 2.1 latent format takes them
    assert torch.allclose(decode(pack, node_vae, encoded), decode(pack, node_vae, encoded.unsqueeze(2)))


def test_wan_vae_for_wanvideowrapper_refuses_the_image_vae_saying_where_it_goes(pack, folders, reference):
    vae = load_vae(reference.state_dict(), name="qi21")
    save_file({k: v.contiguous() for k, v in vae.model.state_dict().items()}, str(folders["vae"] / "qwen_image_2.1_vae_bf16.safetensors"))
    node_vae = load(pack, "qwen_image_2.1_vae_bf16.safetensors", device="cpu")
    with pytest.raises(pack.lib.CheckpointError, match="the Qwen-Image 2.1 VAE.* is an image VAE.*Wire it to Wan Decode Latents"):
        pack.NODE_CLASS_MAPPINGS["WanVAEForWanVideoWrapper"]().adapt(node_vae, "auto", 512, 1)
