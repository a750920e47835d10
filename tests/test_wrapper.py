"""kijai's WanVideoWrapper: its WANVAE in our nodes (right colours by default), and Wan VAE for WanVideoWrapper in its
nodes, against stand-ins of two wrapper versions (tests/wrapper_standins.py); the real wrapper: tests/test_real_comfyui.py."""

import pytest
import torch

from reference import latents, original_state_dict, reference_decode, reference_model
from test_pack import CoreVAE, decode, encode, load
from wrapper_standins import VERSIONS, image_to_video_encode, wan_video_decode, wan_video_encode, wrapper_class

CASES = [("1.0.6", "2.1"), ("2026", "2.1"), ("2026", "2.2")]
TOL = 1e-5


def normalize(z: torch.Tensor, version: str) -> torch.Tensor:
    from wan_vae.files.config import CONFIGS

    cfg = CONFIGS[version]
    mean, std = (torch.tensor(v).view(1, -1, 1, 1, 1) for v in (cfg.latents_mean, cfg.latents_std))
    return (z - mean) / std


def snapshot(module: torch.nn.Module) -> tuple:
    return type(module), sorted(module.__dict__), {k: (v.data_ptr(), v.dtype, v.device, v.clone()) for k, v in module.state_dict().items()}


def unchanged(module, before) -> bool:
    after = snapshot(module)
    same = after[0] is before[0] and after[1] == before[1] and after[2].keys() == before[2].keys()
    return same and all(a[:3] == b[:3] and torch.equal(a[3], b[3]) for a, b in zip(after[2].values(), before[2].values()))


@pytest.mark.parametrize("release, version", CASES)
def test_the_wrapper_s_vae_and_latents_decode_right_with_our_defaults(pack, folders, release, version):
    wrapper = VERSIONS[release][version](version)
    raw = latents(version, (1, 2, 6, 10))
    sampled = {"samples": normalize(raw, version)}  # what WanVideoSampler gives: normalized latents
    ours = decode(pack, wrapper, sampled["samples"], latent_space="auto")
    ref = reference_decode(reference_model(version), raw)
    assert (ours - (ref[0].permute(1, 2, 3, 0) + 1) / 2).abs().max() <= TOL
    loaded = pack.nodes.load_vae.as_wan_vae(wrapper)
    assert pack.nodes.load_vae.as_wan_vae(wrapper) is loaded  # once, kept while the wrapper's object lives
    ptrs = {p.data_ptr() for p in wrapper.parameters()}
    assert all(p.data_ptr() in ptrs for p in loaded.vae.model.parameters())  # its memory, not a copy
    path = pack.NODE_CLASS_MAPPINGS["WanDecodeToVideo"]().decode_to_video(
        wrapper, sampled, "auto", "on", 128, 64, 1, 16.0, "ffv1-mkv", 80, "wrapper/wan", True)["result"][0]  # fmt: skip
    assert path.endswith(".mkv")


def test_core_latents_with_core_s_vae_stay_raw_under_auto(pack, folders):
    sd = original_state_dict("2.1")
    z = latents("2.1", (1, 2, 6, 10))
    core = CoreVAE(sd)
    assert torch.equal(decode(pack, core, z, latent_space="auto"), decode(pack, core, z, latent_space="raw"))
    assert torch.equal(decode(pack, load(pack), z, latent_space="auto"), decode(pack, load(pack), z, latent_space="raw"))


def test_wan_encode_with_the_wrapper_s_vae_gives_its_sampler_normalized_latents(pack, folders):
    wrapper = VERSIONS["2026"]["2.1"]("2.1")
    images = torch.rand(5, 48, 80, 3, generator=torch.Generator().manual_seed(1))
    auto = encode(pack, wrapper, images, latent_space="auto")["samples"]
    raw = encode(pack, wrapper, images, latent_space="raw")["samples"]
    assert (auto - normalize(raw, "2.1")).abs().max() <= TOL


def test_the_wrapper_s_sampler_flags_are_cut_as_wan_video_decode_cuts_them(pack, folders):
    wrapper = VERSIONS["2026"]["2.1"]("2.1")
    z = normalize(latents("2.1", (1, 4, 6, 10)), "2.1")
    plain = decode(pack, wrapper, z[:, :, 1:3], latent_space="auto")
    flagged = {"samples": z, "has_ref": True, "drop_last": True}
    out = pack.NODE_CLASS_MAPPINGS["WanDecodeLatents"]().decode(wrapper, flagged, "auto", "off", 512, 64, 1)[0]
    assert torch.equal(out, plain)
    out = pack.NODE_CLASS_MAPPINGS["WanDecodeLatents"]().decode(wrapper, {"samples": z, "end_image": torch.zeros(1)}, "auto", "off",
                                                                 512, 64, 1)[0]  # fmt: skip
    assert torch.equal(out, decode(pack, wrapper, z[:, :, :3], latent_space="auto"))


def exact(pack, vae, **kw):
    args = dict(tiling="off", tile_size=512, frames_per_chunk=1) | kw
    return pack.NODE_CLASS_MAPPINGS["WanVAEForWanVideoWrapper"]().adapt(vae, **args)[0]


@pytest.mark.parametrize("release, version", CASES)
def test_wan_video_decode_through_the_node_gives_our_untiled_frames_with_its_tiles_on(pack, folders, release, version):
    wrapper = VERSIONS[release][version](version)
    before = snapshot(wrapper)
    vae = exact(pack, wrapper)
    z = normalize(latents(version, (1, 3, 13, 17), seed=3), version)
    ours = pack.nodes.load_vae.as_wan_vae(wrapper).vae.decode(z, normalized=True)[0]  # [3, F, H, W], untiled
    s = vae.upsampling_factor
    small = dict(tile_x=8 * s, tile_y=8 * s, tile_stride_x=4 * s, tile_stride_y=4 * s)  # 2x3 tiles of 8 cells
    if release == "1.0.6":
        small = {k: v // s for k, v in small.items()}  # 1.0.6 handed its widgets over as latent cells
    images = wan_video_decode(release, vae, {"samples": z}, True, **small)
    assert (wan_video_decode.before_mapping - ours).abs().max() <= TOL  # the seams its own tiles make: none
    if release == "2026":
        assert (images - (ours.permute(1, 2, 3, 0) + 1) / 2).abs().max() <= TOL
    assert images.shape == (1 + 4 * 2, 13 * s, 17 * s, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert unchanged(wrapper, before)


@pytest.mark.parametrize("release, version", CASES)
def test_wan_video_encode_through_the_node_gives_our_encode(pack, folders, release, version):
    wrapper = VERSIONS[release][version](version)
    before = snapshot(wrapper)
    vae = exact(pack, wrapper)
    s = vae.upsampling_factor
    image = torch.rand(9, 6 * s, 10 * s, 3, generator=torch.Generator().manual_seed(2))
    ours = pack.nodes.load_vae.as_wan_vae(wrapper).vae.encode(image, normalized=True)
    for tiled in (False, True):
        latent = wan_video_encode(release, vae, image, tiled, tile_x=8 * s, tile_y=8 * s, tile_stride_x=4 * s, tile_stride_y=4 * s)
        z = latent["samples"]
        assert z.shape == ours.shape and z.dtype == torch.float32 and (z - ours).abs().max() <= TOL
    assert unchanged(wrapper, before)


def test_the_i2v_encode_and_its_end_frame_give_our_encodes(pack, folders):
    wrapper = VERSIONS["2026"]["2.1"]("2.1")
    vae, wan = exact(pack, wrapper), pack.nodes.load_vae.as_wan_vae(wrapper).vae
    g = torch.Generator().manual_seed(4)
    start, end = torch.rand(1, 48, 80, 3, generator=g), torch.rand(1, 48, 80, 3, generator=g)
    z = image_to_video_encode(vae, start, 9)
    video = torch.cat([start.permute(3, 0, 1, 2), torch.zeros(3, 8, 48, 80)], 1) * 2 - 1
    assert z.shape == (16, 3, 6, 10) and (z - wan.encode(video, normalized=True)[0]).abs().max() <= TOL
    z = image_to_video_encode(vae, start, 10, end_image=end)  # the wrapper's encode_2: frames 0..8, then the end frame alone
    video = torch.cat([start.permute(3, 0, 1, 2), torch.zeros(3, 8, 48, 80), end.permute(3, 0, 1, 2)], 1) * 2 - 1
    expected = torch.cat([wan.encode(video[:, :9], normalized=True), wan.encode(video[:, 9:], normalized=True)], 2)[0]
    assert z.shape == (16, 4, 6, 10) and (z - expected).abs().max() <= TOL
    decoded = wan_video_decode("2026", vae, {"samples": z.unsqueeze(0), "end_image": end}, False)
    assert decoded.shape[0] == 9  # the end image's frame dropped, as WanVideoDecode drops it


def test_noise_augmented_pixels_outside_the_range_encode_as_the_reference_does(pack, folders):
    wrapper = VERSIONS["2026"]["2.1"]("2.1")
    vae = exact(pack, wrapper)
    video = torch.randn(3, 5, 48, 80, generator=torch.Generator().manual_seed(5)) * 1.5  # add_noise_to_reference_video
    from reference import reference_encode

    z = vae.encode([video], "cpu")[0]
    ref = normalize(reference_encode(reference_model("2.1"), video.unsqueeze(0)), "2.1")[0]
    assert (z - ref).abs().max() <= TOL


def test_our_own_vae_and_core_s_become_a_wanvae_too(pack, folders):
    z = normalize(latents("2.1", (1, 2, 6, 10)), "2.1")
    for source in (load(pack), CoreVAE(original_state_dict("2.1"))):
        vae = exact(pack, source)
        frames = vae.decode(z, "cpu")[0]
        ours = pack.nodes.load_vae.as_wan_vae(source).vae.decode(z, normalized=True)[0]
        assert frames.shape == (3, 5, 48, 80) and (frames - ours).abs().max() <= TOL
        with pytest.raises(AttributeError, match="needs the wrapper's own VAE"):
            vae.tiled_decode  # noqa: B018 - what a node asking for more than decode/encode gets


def test_wrapper_objects_the_pack_does_not_know_are_refused_and_left_alone(pack, folders):
    class Odd(VERSIONS["2026"]["2.1"]):
        def decode(self, hidden_states, device, magic=False):
            pass

    odd = wrapper_class("WanVideoVAE", Odd)("2.1")
    before = snapshot(odd)
    for attempt in (lambda: exact(pack, odd), lambda: decode(pack, odd, latents("2.1"))):
        with pytest.raises(TypeError, match="WanVideoWrapper 1.0.6 and its 2026 versions.*decode\\(hidden_states, device, magic\\)"):
            attempt()
    assert unchanged(odd, before)
    unknown = wrapper_class("WanVideoVAE_Next", VERSIONS["2026"]["2.1"])("2.1")
    with pytest.raises(TypeError, match="WanVideoVAE_Next, which this pack does not know"):
        decode(pack, unknown, latents("2.1"))


def test_a_48_channel_latent_into_its_2_1_vae_and_a_tiny_decoder_for_its_nodes_are_refused(pack, folders):
    from test_tiny_decoders import tiny_file

    with pytest.raises(pack.lib.LatentError, match="48 channels: Wan 2.2 TI2V-5B latents need the Wan 2.2 VAE"):
        decode(pack, VERSIONS["2026"]["2.1"]("2.1"), latents("2.2"))
    tiny_file(folders["vae"] / "taew2_1.pth", 16)
    with pytest.raises(pack.lib.CheckpointError, match="decoder only, and WanVideoWrapper's nodes encode too"):
        exact(pack, load(pack, "taew2_1.pth"))


def test_compiled_decoders_and_fp8_storage_load(pack, folders):
    wrapper = VERSIONS["2026"]["2.1"]("2.1")
    wrapper.model.decoder = torch.compile(wrapper.model.decoder)  # the loader's compile_args: keys gain _orig_mod.
    assert any("_orig_mod." in k for k in wrapper.state_dict())
    z = normalize(latents("2.1", (1, 2, 6, 10)), "2.1")
    expected = decode(pack, VERSIONS["2026"]["2.1"]("2.1"), z, latent_space="auto")
    assert torch.equal(decode(pack, wrapper, z, latent_space="auto"), expected)
    fp8 = VERSIONS["2026"]["2.1"]("2.1", dtype=torch.float8_e4m3fn)
    assert pack.nodes.load_vae.as_wan_vae(fp8).vae.dtype == torch.bfloat16
    close = decode(pack, fp8, z, latent_space="auto")
    assert 0 < (close - expected).norm() / expected.norm() < 0.1  # fp8 weights: close, not equal
