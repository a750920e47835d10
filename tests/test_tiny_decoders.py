"""The Wan-family decoders: TAEHV-architecture tiny decoders (taew2_1, taew2_2, lighttaew2_1, lighttaew2_2) and
LightX2V's pruned LightVAE, from files with the real key names and shapes and seeded random weights."""

import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from reference import latents
from wan_vae import CheckpointError, LatentError, load_vae
from wan_vae.cli import main as cli
from wan_vae.files.config import CONFIGS
from wan_vae.tiny_vae import TinyVAE

# The decoder of the TAEHV files as madebyollin/taehv lays it out: index -> (kind, in, out); memory blocks hold
# conv.0 / conv.2 / conv.4; "grow" 1x1 convs have no bias; the first one is stored for 2x time (its last half used).
STAGES = ((256, 128, 1), (128, 64, 2), (64, 64, 2))


def tiny_file(path, channels: int, seed: int = 0, encoder: bool = True, decoder: bool = True):
    g = torch.Generator().manual_seed(seed)

    def w(*shape, scale=None):
        fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1) if len(shape) > 1 else 1
        return torch.randn(*shape, generator=g) * (scale or (2 / fan_in) ** 0.5)

    patch = 1 if channels == 16 else 2
    sd = {}
    if decoder:
        sd |= {"decoder.1.weight": w(256, channels, 3, 3), "decoder.1.bias": w(256, scale=0.05)}
        i = 3
        for n_in, n_out, stride in STAGES:
            for _ in range(3):
                sd |= {f"decoder.{i}.conv.0.weight": w(n_in, 2 * n_in, 3, 3), f"decoder.{i}.conv.0.bias": w(n_in, scale=0.05),
                       f"decoder.{i}.conv.2.weight": w(n_in, n_in, 3, 3), f"decoder.{i}.conv.2.bias": w(n_in, scale=0.05),
                       f"decoder.{i}.conv.4.weight": w(n_in, n_in, 3, 3) * 0.3, f"decoder.{i}.conv.4.bias": w(n_in, scale=0.05)}  # fmt: skip
                i += 1
            sd[f"decoder.{i + 1}.conv.weight"] = w(n_in * 2, n_in, 1, 1)  # i: the upsample, i + 1: the grow layer
            sd[f"decoder.{i + 2}.weight"] = w(n_out, n_in, 3, 3)
            i += 3
        # the exit conv scaled so the frames are not saturated (random He-scaled blocks grow the activations): without it
        # 90 % of the pixels sat at 0 or 1, and the comparison below was at the edge of its tolerance on an AVX2 CPU
        sd |= {"decoder.22.weight": w(3 * patch**2, 64, 3, 3) * 0.02, "decoder.22.bias": w(3 * patch**2, scale=0.05) + 0.5}
    if encoder:
        sd |= {"encoder.0.weight": w(64, 3 * patch**2, 3, 3), "encoder.0.bias": w(64), "encoder.2.conv.weight": w(64, 128, 1, 1),
               "encoder.4.conv.0.weight": w(64, 128, 3, 3), "encoder.18.weight": w(channels, 64, 3, 3)}  # fmt: skip
    if str(path).endswith(".pth"):
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    return sd


def reference_decode(sd: dict, z: torch.Tensor) -> torch.Tensor:
    """TAEHV's whole-video decode written out from its description: every frame at once, memory blocks fed the
    previous frame's input (zeros first), grow layers splitting channels into frames, the first 3 frames dropped."""
    n, c, t = z.shape[:3]
    x = z.permute(0, 2, 1, 3, 4).flatten(0, 1)
    x = F.relu(F.conv2d(torch.tanh(x / 3) * 3, sd["decoder.1.weight"], sd["decoder.1.bias"], padding=1))
    i, frames = 3, t
    for n_in, _, stride in STAGES:
        for _ in range(3):
            v = x.view(n, frames, *x.shape[1:])
            past = F.pad(v, (0, 0, 0, 0, 0, 0, 1, 0))[:, :frames].flatten(0, 1)
            h = F.relu(F.conv2d(torch.cat([x, past], 1), sd[f"decoder.{i}.conv.0.weight"], sd[f"decoder.{i}.conv.0.bias"], padding=1))
            h = F.relu(F.conv2d(h, sd[f"decoder.{i}.conv.2.weight"], sd[f"decoder.{i}.conv.2.bias"], padding=1))
            h = F.conv2d(h, sd[f"decoder.{i}.conv.4.weight"], sd[f"decoder.{i}.conv.4.bias"], padding=1)
            x, i = F.relu(h + x), i + 1
        x = F.interpolate(x, scale_factor=2)
        grow = sd[f"decoder.{i + 1}.conv.weight"][-n_in * stride :]
        x = F.conv2d(x, grow).reshape(-1, n_in, *x.shape[2:])
        frames *= stride
        x = F.conv2d(x, sd[f"decoder.{i + 2}.weight"], padding=1)
        i += 3
    x = F.conv2d(F.relu(x), sd["decoder.22.weight"], sd["decoder.22.bias"], padding=1)
    if x.shape[1] == 12:
        x = F.pixel_shuffle(x, 2)
    return x.clamp(0, 1).view(n, frames, 3, *x.shape[2:])[:, 3:].permute(0, 2, 1, 3, 4)


# Tolerances: float rounding through random He-scaled weights (batch sizes pick other kernels); 1e-4 is 1/40 of an
# 8-bit level.
VARIANTS = [("taew2_1.pth", "2.1", False), ("taew2_2.safetensors", "2.2", False), ("lighttaew2_1.safetensors", "2.1", True),
            ("lighttaew2_2.safetensors", "2.2", True)]  # fmt: skip


@pytest.mark.parametrize("name,version,raw", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_each_tiny_decoder_loads_decodes_and_streams(tmp_path, name, version, raw):
    cfg = CONFIGS[version]
    sd = tiny_file(tmp_path / name, cfg.z_dim)
    vae = load_vae(tmp_path / name)
    assert isinstance(vae, TinyVAE) and vae.info.name == name.split(".")[0] and vae.info.raw_latents == raw
    z = latents(version, (2, 3, 4, 6))
    video = vae.decode(z)
    s = cfg.spatial_scale
    assert video.shape == (2, 3, 9, 4 * s, 6 * s)  # 1 + 4(T - 1) frames, like the full VAE
    assert (video.abs() < 0.99).float().mean() > 0.9  # frames, not saturated noise: the comparisons mean something
    # taew files take the diffusion model's normalized latents, lighttae files the VAE's raw ones (LightX2V's rule)
    mean, std = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1), torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    fed = z if raw else (z - mean) / std
    assert (video - (reference_decode(sd, fed) * 2 - 1)).abs().max() < 1e-4
    assert torch.allclose(vae.decode(fed, normalized=True) if not raw else vae.decode(z), video, atol=1e-4)
    streamed = torch.cat(list(vae.decode_frames(z, frames_per_chunk=1)))
    images = vae.decode(z, layout="images", frames_per_chunk=2)
    assert streamed.shape == images.shape == (18, 4 * s, 6 * s, 3)
    assert (streamed - images).abs().max() < 1e-4 and (images - video.permute(0, 2, 3, 4, 1).flatten(0, 1).add(1).div(2)).abs().max() < 1e-4


# ------------------------------------------------------------------------------------------ the Super layout

SUPER = (512, 256, 128, 64)  # taehv.py's n_f for arch_variant "super"


def super_file(path, channels: int = 48, seed: int = 0) -> dict:
    """taew2_2_super's decoder as taehv.py (HEAD, 2026) lays it out, seeded random weights: decoder.0 a 1x1 entry conv;
    per stage three memory blocks (conv.0 depthwise 7x7, conv.1 1x1 to 2x, conv.3 1x1 back), a 3x3 conv to 4x the next
    width, ReLU, pixel shuffle, a grow 1x1 conv (the first stored for 2x time); decoder.22 the exit conv."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape, scale=None):
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        return torch.randn(*shape, generator=g) * (scale or (2 / fan_in) ** 0.5)

    sd, i = {"decoder.0.weight": w(SUPER[0], channels, 1, 1)}, 1
    for n_in, n_out in zip(SUPER, SUPER[1:]):
        for _ in range(3):
            sd |= {f"decoder.{i}.conv.0.weight": w(2 * n_in, 1, 7, 7), f"decoder.{i}.conv.1.weight": w(4 * n_in, 2 * n_in, 1, 1),
                   f"decoder.{i}.conv.1.bias": w(4 * n_in, scale=0.05), f"decoder.{i}.conv.3.weight": w(n_in, 4 * n_in, 1, 1) * 0.06}  # fmt: skip
            i += 1
        sd |= {f"decoder.{i}.weight": w(4 * n_out, n_in, 3, 3), f"decoder.{i}.bias": w(4 * n_out, scale=0.05),
               f"decoder.{i + 3}.conv.weight": w(2 * n_out, n_out, 1, 1)}  # conv, ReLU, shuffle, grow
        i += 4
    patch = 1 if channels == 16 else 2
    # scaled so that the frames are not saturated (about 1 % of the pixels at 0 or 1): a comparison that means something
    sd |= {"decoder.22.weight": w(3 * patch**2, 64, 3, 3) * 0.02, "decoder.22.bias": w(3 * patch**2, scale=0.05) + 0.5}
    save_file(sd, str(path))
    return sd


def reference_super_decode(sd: dict, z: torch.Tensor) -> torch.Tensor:
    """The Super decoder's whole-video decode written out from taehv.py's description: all frames at once, each memory
    block fed the previous frame's input (zeros first), no input clamp, the first 3 frames dropped."""
    n, t = z.shape[0], z.shape[2]
    x = F.conv2d(z.permute(0, 2, 1, 3, 4).flatten(0, 1), sd["decoder.0.weight"])
    i, frames = 1, t
    for (n_in, n_out), stride in zip(zip(SUPER, SUPER[1:]), (1, 2, 2)):
        for _ in range(3):
            past = F.pad(x.view(n, frames, *x.shape[1:]), (0, 0, 0, 0, 0, 0, 1, 0))[:, :frames].flatten(0, 1)
            h = F.conv2d(torch.cat([x, past], 1), sd[f"decoder.{i}.conv.0.weight"], padding=3, groups=2 * n_in)
            h = F.relu(F.conv2d(h, sd[f"decoder.{i}.conv.1.weight"], sd[f"decoder.{i}.conv.1.bias"]))
            x, i = F.conv2d(h, sd[f"decoder.{i}.conv.3.weight"]) + x, i + 1
        x = F.pixel_shuffle(F.relu(F.conv2d(x, sd[f"decoder.{i}.weight"], sd[f"decoder.{i}.bias"], padding=1)), 2)
        x = F.conv2d(x, sd[f"decoder.{i + 3}.conv.weight"][-n_out * stride :]).reshape(-1, n_out, *x.shape[2:])
        frames, i = frames * stride, i + 4
    x = F.conv2d(x, sd["decoder.22.weight"], sd["decoder.22.bias"], padding=1)
    x = F.pixel_shuffle(x, 2) if x.shape[1] == 12 else x
    return x.clamp(0, 1).view(n, frames, 3, *x.shape[2:])[:, 3:].permute(0, 2, 1, 3, 4)


def test_taew2_2_super_loads_by_content_decodes_as_taehv_and_streams(tmp_path, capsys):
    sd = super_file(tmp_path / "taew2_2_super.safetensors")
    vae = load_vae(tmp_path / "taew2_2_super.safetensors")
    assert isinstance(vae, TinyVAE) and vae.info.name == "taew2_2_super" and vae.version == "2.2" and not vae.info.raw_latents
    cfg = CONFIGS["2.2"]
    z = latents("2.2", (1, 3, 4, 6))
    mean, std = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1), torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    video = vae.decode(z)
    assert video.shape == (1, 3, 9, 64, 96) and (video.abs() < 0.99).float().mean() > 0.9
    assert (video - (reference_super_decode(sd, (z - mean) / std) * 2 - 1)).abs().max() < 1e-4
    streamed = torch.cat(list(vae.decode_frames(z, frames_per_chunk=1)))
    assert (streamed - vae.decode(z, layout="images")).abs().max() < 1e-4
    assert cli(["info", str(tmp_path / "taew2_2_super.safetensors")]) == 0
    assert "taew2_2_super: tiny TAEHV-architecture decoder for Wan 2.2 latents (48 channels)" in capsys.readouterr().out


def test_a_super_file_with_a_missing_block_or_for_hunyuan_is_refused_saying_what_was_found(tmp_path):
    sd = super_file(tmp_path / "taew2_2_super.safetensors")
    for key in [k for k in sd if k.startswith("decoder.9.")]:  # the second stage's first memory block
        del sd[key]
    save_file(sd, str(tmp_path / "taew2_2_super.safetensors"))
    with pytest.raises(CheckpointError, match=r"\(a TAEHV Super decoder\) does not match .* missing 4: decoder\.9\.conv"):
        load_vae(tmp_path / "taew2_2_super.safetensors")
    super_file(tmp_path / "taehv1_5_super.safetensors", channels=32)
    with pytest.raises(CheckpointError, match=r"not one for Wan latents \(decoder.0.weight \[512, 32, 1, 1\].*Hunyuan"):
        load_vae(tmp_path / "taehv1_5_super.safetensors")


def test_a_mismatched_pair_gets_the_same_message_as_the_full_vaes(tmp_path):
    tiny_file(tmp_path / "taew2_2.safetensors", 48)
    with pytest.raises(LatentError, match=r"These latents have 16 channels: .* need the Wan 2.1 VAE, but the loaded VAE is "
                                          r"taew2_2 \(tiny decoder for Wan 2.2 latents\) \(48 channels\)"):  # fmt: skip
        load_vae(tmp_path / "taew2_2.safetensors").decode(latents("2.1"))


def test_broken_tiny_files_say_what_was_found(tmp_path):
    tiny_file(tmp_path / "enc.safetensors", 16, decoder=False)
    with pytest.raises(CheckpointError, match="a TAEHV encoder without its decoder"):
        load_vae(tmp_path / "enc.safetensors")
    sd = tiny_file(tmp_path / "t.safetensors", 16)
    del sd["decoder.9.conv.2.bias"]
    sd["decoder.30.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "t.safetensors"))
    with pytest.raises(CheckpointError, match=r"TAEHV-architecture decoder\) does not match .* missing 1: decoder.9.conv.2.bias; "
                                              r"unexpected 1: decoder.30.weight"):  # fmt: skip
        load_vae(tmp_path / "t.safetensors")
    tiny_file(tmp_path / "taehv.safetensors", 32)
    with pytest.raises(CheckpointError, match=r"not one for Wan latents \(decoder.1.weight \[256, 32, 3, 3\]"):
        load_vae(tmp_path / "taehv.safetensors")


def test_info_names_the_tiny_decoder(tmp_path, capsys):
    tiny_file(tmp_path / "lighttaew2_2.safetensors", 48)
    assert cli(["info", str(tmp_path / "lighttaew2_2.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "lighttaew2_2: tiny TAEHV-architecture decoder for Wan 2.2 latents (48 channels), fed raw (VAE-space) latents" in out


# ------------------------------------------------------------------------------------------ LightVAE


def lightvae_file(path, pruning: float = 0.75, seed: int = 0):
    """LightX2V's lightvaew2_1: the Wan 2.1 VAE with every width times (1 - pruning), original names."""
    from wan_vae.network.model import WanVAEModel

    cfg = CONFIGS["2.1"]
    widths = cfg.with_widths(dim=int(cfg.dim * (1 - pruning)), decoder_dim=int(cfg.decoder_dim * (1 - pruning)))
    torch.manual_seed(seed)
    model = WanVAEModel(widths)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.05 if name.endswith("bias") else 1 / max(1, p[0].numel()) ** 0.5) + (1 if name.endswith("gamma") else 0))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def test_lightvae_loads_as_a_pruned_wan_2_1_vae_and_streams_exactly(tmp_path, capsys):
    lightvae_file(tmp_path / "lightvaew2_1.safetensors")
    vae = load_vae(tmp_path / "lightvaew2_1.safetensors")
    assert vae.config.decoder_dim == 24 and vae.title == "the Wan 2.1 VAE pruned to 25% of its decoder channels (LightX2V's LightVAE: faster, lossy)"
    z = latents("2.1", (1, 3, 4, 6))
    images = vae.decode(z, layout="images")
    assert images.shape == (9, 32, 48, 3) and torch.isfinite(images).all()
    assert (torch.cat(list(vae.decode_frames(z))) - images).abs().max() < 1e-5
    assert cli(["info", str(tmp_path / "lightvaew2_1.safetensors")]) == 0
    assert "Wan 2.1 VAE pruned to 25% of its decoder channels (LightX2V's LightVAE: faster, lossy) (16 latent" in capsys.readouterr().out


@pytest.mark.parametrize("pruning", [0.5, 0.75])
def test_mg_lightvae_in_its_training_checkpoint_loads_as_a_pruned_wan_2_2_vae(tmp_path, capsys, pruning):
    """Matrix-Game 3's MG-LightVAE (pruning 0.5) and MG-LightVAE_v2 (0.75): a Wan 2.2 VAE in diffusers names whose
    decoder keeps 1 - pruning of its channels (decoder.conv_in: 512 or 256 of 1024), saved by its trainer under
    "generator" (or "state_dict") beside distillation heads that no decode uses. It decodes as diffusers'
    AutoencoderKLWan with the same pruned decoder (decoder_base_dim 128 or 64), chunked and tiled exactly."""
    from diffusers import AutoencoderKLWan

    from reference import diffusers_kwargs, perturbed, reference_decode

    torch.manual_seed(0)
    kw = diffusers_kwargs("2.2", real=False) | {"decoder_base_dim": int(256 * (1 - pruning))}
    model = perturbed(AutoencoderKLWan(**kw).eval().requires_grad_(False), 0)
    heads = {f"dynamic_feature_projection_heads.{i}.weight": torch.randn(32, 8) for i in range(3)}
    wrapped = {"generator": {**model.state_dict(), **heads}, "iteration": 12000} if pruning == 0.5 else \
        {"state_dict": {"generator": {**model.state_dict(), **heads}}}  # fmt: skip
    torch.save(wrapped, tmp_path / "MG-LightVAE.pth")
    vae = load_vae(tmp_path / "MG-LightVAE.pth")
    share = f"{1 - pruning:.0%}"
    assert vae.version == "2.2" and vae.config.decoder_dim == int(256 * (1 - pruning)) and f"pruned to {share}" in vae.title
    z = latents("2.2", (1, 2, 4, 6))
    video = vae.decode(z)
    assert video.shape == (1, 3, 5, 64, 96) and (video - reference_decode(model, z)).abs().max() <= 1e-5
    assert (vae.decode(z, frames_per_chunk=2, tiling="on", tile_size=128) - video).abs().max() <= 1e-5
    assert cli(["info", str(tmp_path / "MG-LightVAE.pth")]) == 0
    assert f"Wan 2.2 VAE pruned to {share} of its decoder channels" in capsys.readouterr().out


def test_widths_that_fit_no_pruning_are_refused_naming_the_shapes(tmp_path):
    lightvae_file(tmp_path / "odd.safetensors")
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "odd.safetensors"))
    sd["decoder.conv1.weight"] = torch.zeros(100, 16, 3, 3, 3)  # the entry conv no longer fits the head's width
    save_file(sd, str(tmp_path / "odd.safetensors"))
    with pytest.raises(CheckpointError, match=r"does not match the Wan VAE architecture: .*wrong shape .*decoder.conv1.weight \[100, 16, 3, 3, 3\] \(expected \[96"):
        load_vae(tmp_path / "odd.safetensors")


def test_the_nodes_load_and_decode_a_tiny_decoder(pack, folders):
    from test_decode_to_video import to_video
    from test_pack import decode, load

    tiny_file(folders["vae"] / "lighttaew2_1.safetensors", 16)
    vae = load(pack, "lighttaew2_1.safetensors", device="cpu")
    assert repr(vae).startswith("lighttaew2_1 (tiny decoder for Wan 2.1 latents) (float32")
    z = latents("2.1", (1, 3, 4, 6))
    images = decode(pack, vae, z, tiling="auto")
    assert images.shape == (9, 32, 48, 3)
    path = to_video(pack, vae, z, save_latent=False)["result"][0]
    from media import read_frames

    assert abs(read_frames(path).astype(float) / 255 - images.numpy()).max() <= 0.5 / 255 + 1e-6  # FFV1: lossless


def test_the_quality_benchmark_compares_every_decoder_with_the_full_vae(tmp_path):
    """Random weights: only that it runs and fills the table (real numbers need the real files)."""
    import sys

    from reference import write_vae_file

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from decoder_quality import main as quality

    write_vae_file(tmp_path / "wan_2.1_vae.safetensors", "2.1", torch.float32)
    tiny_file(tmp_path / "taew2_1.pth", 16)
    lightvae_file(tmp_path / "lightvaew2_1.safetensors", pruning=0.9)
    rows = quality(["--vae-dir", str(tmp_path), "--size", "32x48", "--frames", "5"])
    assert [r["decoder"] for r in rows] == ["lightvaew2_1.safetensors", "taew2_1.pth", "wan_2.1_vae.safetensors"]
    assert rows[-1]["psnr"] == float("inf") and all(0 < r["ssim"] <= 1 + 1e-9 for r in rows)


@pytest.mark.skipif(not os.environ.get("TAEHV_PY"), reason="set TAEHV_PY to madebyollin/taehv's taehv.py (not on PyPI)")
@pytest.mark.parametrize("name, variant", [("taew2_1", None), ("taew2_2", None), ("taew2_2_super", "super")])
def test_the_tiny_decoders_decode_as_taehv_py_itself(tmp_path, monkeypatch, name, variant):
    """Opt-in: against taehv.py as its repository has it (checked at 1f14a56, August 2026), with seeded random weights
    small enough that its own parallel and sequential decodes agree (larger ones amplify rounding past 1e-3)."""
    import importlib

    monkeypatch.syspath_prepend(os.path.dirname(os.path.abspath(os.environ["TAEHV_PY"])))
    taehv = importlib.import_module("taehv")
    version = "2.1" if name == "taew2_1" else "2.2"
    torch.manual_seed(0)
    model = taehv.TAEHV(checkpoint_path=None, patch_size=1 if version == "2.1" else 2, latent_channels=CONFIGS[version].z_dim,
                        arch_variant=variant).eval()  # fmt: skip
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / f"{name}.safetensors"))
    vae = load_vae(tmp_path / f"{name}.safetensors")
    cfg, z = CONFIGS[version], latents(version, (1, 3, 4, 6))
    mean, std = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1), torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        theirs = model.decode_video(((z - mean) / std).transpose(1, 2), parallel=True, show_progress_bar=False).transpose(1, 2)
    assert (vae.decode(z) - (theirs * 2 - 1)).abs().max() < 1e-5
    assert (torch.cat(list(vae.decode_frames(z, frames_per_chunk=1))) - theirs[0].permute(1, 2, 3, 0)).abs().max() < 1e-5
