"""Every Wan-family VAE file: the 2x upscale decoder, the RGBA VAE, Qwen-Image's own VAE, decoder-only files, float64.

The references are diffusers `AutoencoderKLWan(in_channels=, out_channels=)` (followed by `pixel_shuffle` for an
upscale decoder, as spacepxl's ComfyUI-VAE-Utils does) and `AutoencoderKLQwenImage`, with seeded random weights.
"""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from media import probe, read_rgba
from reference import diffusers_kwargs, latents, original_state_dict, perturbed, reference_decode, reference_encode
from reference import reference_model, write_vae_file
from wan_vae import CheckpointError, LatentError, load_vae
from wan_vae.files.latents import write_latent_file

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # fp32, as tests/test_tiling.py
UPSCALE = dict(out_channels=12)  # spacepxl's Wan2.1-VAE-upscale2x: 3 * 2 * 2 head channels
RGBA = dict(in_channels=4, out_channels=4)  # Qwen-Image-Layered's VAE


def shuffled(video: torch.Tensor, s: int = 2) -> torch.Tensor:
    """[B, 3*s*s, F, H, W] -> [B, 3, F, s*H, s*W], frame by frame (the reference for an upscale decoder)."""
    return F.pixel_shuffle(video.transpose(1, 2), s).transpose(1, 2)


@pytest.fixture(scope="module")
def upscale():
    return load_vae(original_state_dict("2.1", **UPSCALE))


@pytest.fixture(scope="module")
def rgba():
    return load_vae(original_state_dict("2.1", **RGBA))


# ------------------------------------------------------------------------------------------ what the files are


@pytest.mark.parametrize("channels, title", [
    ({}, "Wan 2.1 VAE"), (UPSCALE, "Wan 2.1 VAE, 2x upscale decoder"), (dict(out_channels=27), "Wan 2.1 VAE, 3x upscale decoder"),
    (RGBA, "Wan 2.1 RGBA VAE"),
])  # fmt: skip
def test_channels_and_the_kind_are_read_from_the_tensors(channels, title):
    vae = load_vae(original_state_dict("2.1", **channels))
    assert vae.checkpoint.describe().startswith(title) and vae.title.startswith(f"the {title}")
    s = vae.config.upscale
    assert vae.output_scale == 8 * s and vae.spatial_scale == 8 and vae.out_channels == channels.get("out_channels", 3) // s**2


def test_decoder_only_files_load_for_decoding_and_say_they_cannot_encode(tmp_path):
    path = write_vae_file(tmp_path / "decoder_ft.safetensors", "2.1", torch.float32, decoder_only=True, **UPSCALE)
    vae = load_vae(path)
    assert vae.title.startswith("the Wan 2.1 VAE, 2x upscale decoder, decoder only") and not vae.has_encoder
    z = latents("2.1")
    assert torch.equal(vae.decode(z), load_vae(original_state_dict("2.1", **UPSCALE)).decode(z))
    with pytest.raises(LatentError, match="has no encoder: the file holds decoder weights only. Encode with the full Wan 2.1"):
        vae.encode(torch.zeros(1, 3, 1, 48, 80))
    with pytest.raises(LatentError, match="has no encoder"):
        vae.encode_frames(iter([torch.zeros(1, 48, 80, 3)]))


@pytest.mark.parametrize("key, shape, text", [
    ("decoder.head.2.weight", (5, 16, 3, 3, 3), "gives 5 channels; the Wan 2.1 decoders known give 3 \\(RGB\\), 4 \\(RGBA\\) or 3 x s x s"),
    ("decoder.head.2.weight", (24, 16, 3, 3, 3), "gives 24 channels"),
    ("encoder.conv1.weight", (16, 5, 3, 3, 3), "encoder.conv1.weight takes 5 channels; the Wan 2.1 VAE files known take 3 \\(RGB\\) or 4"),
])  # fmt: skip
def test_a_channel_count_that_fits_no_variant_is_refused_naming_it(key, shape, text):
    sd = original_state_dict("2.1")
    sd[key] = torch.zeros(shape)
    with pytest.raises(CheckpointError, match=text):
        load_vae(sd)


def test_wan_2_2_upscale_heads_are_refused_since_none_is_known():
    sd = original_state_dict("2.2")
    sd["decoder.head.2.weight"] = torch.zeros(48, *sd["decoder.head.2.weight"].shape[1:])
    sd["decoder.head.2.bias"] = torch.zeros(48)
    with pytest.raises(CheckpointError, match="gives 48 channels; the Wan 2.2 decoders known give 12 \\(RGB\\) or 16 \\(RGBA\\)"):
        load_vae(sd)


def test_float64_decodes_and_encodes_as_diffusers_in_float64():
    vae = load_vae(original_state_dict("2.1"), dtype=torch.float64)
    z, x = latents("2.1"), torch.rand(1, 3, 5, 48, 80, dtype=torch.float64) * 2 - 1
    ref = copy.deepcopy(reference_model("2.1")).double()
    out = vae.decode(z)
    # diffusers' upsample rounds through fp32 (WanUpsample: x.float()); everything else matches to float64 rounding
    assert vae.dtype == out.dtype == torch.float64 and (out - reference_decode(ref, z.double())).abs().max() < 1e-6
    assert (out - load_vae(original_state_dict("2.1")).decode(z)).abs().max() > 1e-7  # not an fp32 decode in disguise
    assert (vae.decode(z, tiling="on", tile_size=64) - out).abs().max() < 1e-12
    assert (vae.encode(x) - reference_encode(ref, x)).abs().max() < 1e-12


# ------------------------------------------------------------------------------------------ the upscale decoder


@pytest.fixture(scope="module")
def upscale_reference():
    z = latents("2.1", (1, 4, 13, 17), seed=2)
    return z, shuffled(reference_decode(reference_model("2.1", **UPSCALE), z))


def test_the_upscale_decoder_gives_diffusers_pixels_shuffled_2x(upscale, upscale_reference):
    z, ref = upscale_reference
    out = upscale.decode(z)
    assert out.shape == (1, 3, 13, 208, 272) and (out - ref).abs().max() < 1e-5
    frames = torch.cat(list(upscale.decode_frames(z)))
    assert torch.equal(frames, upscale.decode(z, layout="images"))
    assert (frames - (ref[0].permute(1, 2, 3, 0) + 1) / 2).abs().max() < 1e-5


@pytest.mark.parametrize("opts", [
    dict(tiling="on", tile_size=128), dict(tiling="on", tile_size=160, frames_per_chunk=3), dict(frames_per_chunk=2),
    dict(tiling="on", tile_size=128, devices=["cpu", "cpu"]), dict(tiling="auto", memory_budget=2**40, devices=["cpu", "cpu"]),
])  # fmt: skip
def test_every_decode_path_of_the_upscale_decoder_is_exact(upscale, upscale_reference, opts):
    """Exact to fp32 rounding (TOL: conv kernels differ in summation order between sizes), not blended."""
    z, _ = upscale_reference
    whole = upscale.decode(z)
    assert (upscale.decode(z, **opts) - whole).abs().max() <= TOL
    streamed = torch.cat(list(upscale.decode_frames(z, **opts)))
    assert (streamed - upscale.decode(z, layout="images")).abs().max() <= TOL


def test_tile_size_counts_the_decoded_pixels_and_the_estimate_the_larger_output(upscale, caplog):
    from wan_vae.plan import memory
    from wan_vae.run.decode import make_plan
    from wan_vae.run.options import Options

    z = latents("2.1", (1, 2, 32, 32))
    plan = make_plan(upscale, z, Options(tiling="on", tile_size=256), streaming=False)
    assert (plan.height, plan.width, len(plan.tiles)) == (512, 512, 4)  # 256 output px: 16-cell tiles
    standard = load_vae(original_state_dict("2.1"))
    kept = [memory.estimate(v, 32, 32, latent_frames=21, output_on_device=True) for v in (standard, upscale)]
    out_bytes = 3 * 4 * (81 * 256 * 256)
    assert kept[1] - kept[0] >= 1.1 * 3 * out_bytes  # 4x the output pixels, and the head's 12 channels


def test_a_48_channel_latent_into_the_2_1_upscale_decoder_says_which_vae_to_load(upscale):
    with pytest.raises(LatentError, match="48 channels: Wan 2.2 TI2V-5B latents need the Wan 2.2 VAE, but the loaded VAE is the "
                                          "Wan 2.1 VAE, 2x upscale decoder"):  # fmt: skip
        upscale.decode(latents("2.2"))


def test_the_upscale_file_encodes_with_its_encoder(upscale):
    x = torch.rand(1, 3, 5, 48, 80) * 2 - 1
    assert (upscale.encode(x) - reference_encode(reference_model("2.1", **UPSCALE), x)).abs().max() < 1e-5


# ------------------------------------------------------------------------------------------ RGBA


def test_the_rgba_vae_decodes_and_encodes_four_channels_as_diffusers(rgba):
    ref = reference_model("2.1", **RGBA)
    z = latents("2.1", (1, 2, 6, 10))
    out = rgba.decode(z)
    assert out.shape == (1, 4, 5, 48, 80) and (out - reference_decode(ref, z)).abs().max() < 1e-5
    images = rgba.decode(z, layout="images")
    assert images.shape == (5, 48, 80, 4)
    assert (torch.cat(list(rgba.decode_frames(z, tiling="on", tile_size=64))) - images).abs().max() <= TOL
    x = torch.rand(1, 4, 5, 48, 80) * 2 - 1
    assert (rgba.encode(x) - reference_encode(ref, x)).abs().max() < 1e-5


def test_rgb_frames_into_the_rgba_encoder_get_alpha_1_and_rgba_frames_into_an_rgb_one_are_refused(rgba):
    frames = torch.rand(5, 48, 80, 3)
    opaque = torch.cat([frames, torch.ones(5, 48, 80, 1)], -1)
    assert torch.equal(rgba.encode(frames), rgba.encode(opaque))
    assert torch.equal(rgba.encode_frames(iter([frames[:1], frames[1:]])), rgba.encode(opaque))
    rgb = load_vae(original_state_dict("2.1"))
    for attempt in (lambda: rgb.encode(opaque), lambda: rgb.encode_frames(iter([opaque]))):
        with pytest.raises(LatentError, match="The frames have 4 channels \\(RGBA\\), but the Wan 2.1 VAE .* encodes RGB. Drop the alpha"):
            attempt()


# ------------------------------------------------------------------------------------------ Qwen-Image's VAE


def qwen_folder(tmp_path, input_channels: int):
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    kw = {k: v for k, v in diffusers_kwargs("2.1", real=False).items() if k in ("base_dim", "z_dim", "latents_mean", "latents_std")}
    model = perturbed(AutoencoderKLQwenImage(input_channels=input_channels, **kw).eval().requires_grad_(False), 0)
    model.save_pretrained(tmp_path / "Qwen-Image" / "vae")
    return model, tmp_path / "Qwen-Image"


@pytest.mark.parametrize("channels", [3, 4])
def test_qwen_image_s_diffusers_vae_decodes_and_encodes_as_diffusers(tmp_path, channels):
    model, folder = qwen_folder(tmp_path, channels)
    assert json.loads((folder / "vae" / "config.json").read_text())["_class_name"] == "AutoencoderKLQwenImage"
    vae = load_vae(folder)  # the pipeline folder: its vae/ is used
    assert vae.checkpoint.naming == "diffusers" and vae.out_channels == channels
    z, x = latents("2.1", (1, 2, 6, 10)), torch.rand(1, channels, 5, 48, 80) * 2 - 1
    assert (vae.decode(z) - reference_decode(model, z)).abs().max() < 1e-5
    assert (vae.encode(x) - reference_encode(model, x)).abs().max() < 1e-5


def test_comfyui_s_repackaged_qwen_image_vae_is_the_wan_2_1_vae(tmp_path):
    path = write_vae_file(tmp_path / "qwen_image_vae.safetensors", "2.1", real=True)  # 194 tensors, original names, bf16
    vae = load_vae(path)
    assert vae.checkpoint.tensors == 194 and vae.checkpoint.describe().startswith("Wan 2.1 VAE (16 latent channels, 8x spatial)")
    assert vae.title == "the Wan 2.1 VAE" and vae.checkpoint.parameters == 126_892_531


def test_a_diffusers_folder_whose_config_disagrees_with_its_weights_is_refused(tmp_path):
    _, folder = qwen_folder(tmp_path, 3)
    config = folder / "vae" / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps(data | {"input_channels": 4}))
    with pytest.raises(CheckpointError, match="config.json says in/input_channels 4, but the weights have 3"):
        load_vae(folder)
    config.write_text(json.dumps(data | {"latents_std": [1.0] * 16}))
    with pytest.raises(CheckpointError, match="latents_std differs from the Wan VAE's"):
        load_vae(folder)
    config.write_text(json.dumps(data | {"_class_name": "AutoencoderKLQwenImage21"}))
    with pytest.raises(CheckpointError, match="names a AutoencoderKLQwenImage21, but the weights have 3-D kernels"):
        load_vae(folder)


# ------------------------------------------------------------------------------------------ the command line and nodes


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("variants")
    write_vae_file(d / "upscale2x.safetensors", "2.1", torch.float32, **UPSCALE)
    write_vae_file(d / "rgba.safetensors", "2.1", torch.float32, **RGBA)
    write_latent_file(d / "clip.latent", latents("2.1", (1, 3, 6, 10), seed=4))
    return d


def cli(*args):
    return subprocess.run([sys.executable, "-m", "wan_vae", *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def test_the_command_line_names_the_kind_and_decodes_2x_and_rgba(files, tmp_path, upscale):
    assert "Wan 2.1 VAE, 2x upscale decoder" in cli("info", files / "upscale2x.safetensors").stdout
    assert "Wan 2.1 RGBA VAE" in cli("info", files / "rgba.safetensors").stdout
    res = cli("decode", files / "clip.latent", "--vae", files / "upscale2x.safetensors", "-o", tmp_path / "x2.mkv", "--tiling", "on",
              "--tile-size", "128")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (probe(tmp_path / "x2.mkv")["width"], probe(tmp_path / "x2.mkv")["height"]) == (160, 96)
    res = cli("decode", files / "clip.latent", "--vae", files / "rgba.safetensors", "-o", tmp_path / "a.mp4")
    assert res.returncode == 2 and "cannot keep" in res.stderr and not (tmp_path / "a.mp4").exists()
    res = cli("decode", files / "clip.latent", "--vae", files / "rgba.safetensors", "-o", tmp_path / "a.mkv")
    assert res.returncode == 0, res.stderr
    assert read_rgba(tmp_path / "a.mkv").shape == (9, 48, 80, 4)


@pytest.fixture
def variant_folders(folders):
    for name, channels in (("upscale2x.safetensors", UPSCALE), ("rgba.safetensors", RGBA)):
        write_vae_file(folders["vae"] / name, "2.1", torch.float32, **channels)
    return folders


def test_the_nodes_decode_2x_and_rgba_and_keep_alpha_in_the_file(pack, variant_folders):
    from test_decode_to_video import files as listing, to_video
    from test_pack import decode, encode, export, load

    z = latents("2.1", (1, 2, 6, 10))
    up = load(pack, "upscale2x.safetensors", device="cpu")
    images = decode(pack, up, z, tiling="on", tile_size=128)
    assert images.shape == (5, 96, 160, 3) and (images - up.vae.decode(z, layout="images")).abs().max() <= TOL
    path = Path(to_video(pack, up, z, tiling="on", tile_size=128)["result"][0])
    assert (probe(path)["width"], probe(path)["height"]) == (160, 96)

    a = load(pack, "rgba.safetensors", device="cpu")
    frames = decode(pack, a, z)
    assert frames.shape == (5, 48, 80, 4)  # a 4-channel IMAGE, as core gives for this VAE
    out = export(pack, frames, format="webp", quality=100)
    assert out["ui"]["wan_video"][0]["alpha"] is True
    back, sent = read_rgba(out["result"][0]).astype(int), (frames.numpy() * 255).round()
    assert np.abs(back[..., 3] - sent[..., 3]).max() <= 1
    # lossless WebP keeps the colour wherever something shows (libwebp may rewrite that of transparent pixels)
    assert np.abs(back[..., :3] - sent[..., :3])[sent[..., 3] >= 16].max() <= 1
    before = listing(variant_folders["output"] / "WanVideo")
    with pytest.raises(pack.lib.VideoWriteError, match="cannot keep"):
        to_video(pack, a, z, format="h264-mp4")  # refused before the latent is saved or anything decoded
    with pytest.raises(pack.lib.VideoWriteError, match="cannot keep"):
        export(pack, frames, format="h264-mp4")
    assert listing(variant_folders["output"] / "WanVideo") == before
    kept = Path(to_video(pack, a, z, format="prores-mov")["result"][0])
    assert probe(kept)["pix_fmt"].startswith("yuva444p")
    latent = encode(pack, a, frames[:5, :, :, :3])["samples"]  # RGB frames into the RGBA encoder: alpha 1
    assert torch.equal(latent, a.vae.encode(torch.cat([frames[..., :3], torch.ones_like(frames[..., :1])], -1)).cpu())
    with pytest.raises(pack.lib.LatentError, match="Drop the alpha"):
        encode(pack, up, frames)


def test_two_processes_decode_the_upscale_decoder_s_frames(files, tmp_path, upscale):
    from test_distributed import launch

    code, log = launch("frames", files / "upscale2x.safetensors", files / "clip.latent", tmp_path / "two.pt", 128)
    assert code == 0, log[-3000:]
    from wan_vae.files.latents import read_latent_file

    z = read_latent_file(files / "clip.latent")
    one = torch.cat(list(load_vae(files / "upscale2x.safetensors").decode_frames(z, tiling="on", tile_size=128)))
    two = torch.load(tmp_path / "two.pt")
    assert two.shape == one.shape == (9, 96, 160, 3) and (two - one).abs().max() <= 1e-6


@pytest.mark.parametrize("stem", ["wan21_image_upscale2x", "wan21_video_upscale2x"])
def test_the_upscale_examples_run_and_give_twice_the_size(pack, folders, stem):
    from comfy_graph import LoadLatentLikeComfyUI, SaveImageLikeComfyUI, run_api

    workflow = json.loads((ROOT / "tests" / "workflows" / f"{stem}.api.json").read_text())
    write_vae_file(folders["vae"] / workflow["2"]["inputs"]["vae_name"], "2.1", torch.float32, **UPSCALE)
    frames = 1 if "image" in stem else 3
    write_latent_file(folders["input"] / workflow["1"]["inputs"]["latent"], latents("2.1", (1, frames, 6, 10)))
    SaveImageLikeComfyUI.output_dir = str(folders["output"])
    results = run_api(workflow, {**pack.NODE_CLASS_MAPPINGS, "LoadLatent": LoadLatentLikeComfyUI, "SaveImage": SaveImageLikeComfyUI})
    if frames == 1:
        (saved,) = results["4"][0]["images"]
        from PIL import Image

        assert Image.open(folders["output"] / saved["subfolder"] / saved["filename"]).size == (160, 96)
    else:
        info = probe(results["3"][1][0])
        assert (info["width"], info["height"], info["frames"]) == (160, 96, 9)
