"""Wan VAE for Core Nodes: core's VAE object whose decode / encode run ours, against stand-ins of core's VAE class.

`CoreLikeVAE` does for a Wan VAE what ComfyUI 0.3.64's comfy.sd.VAE does (comfy/sd.py: the centred crop, IMAGE to
[1, 3, F, H, W], frames beyond 1 + 4k dropped by the encoder, [0, 1] pixels out as [B, F, H, W, 3]) with diffusers
as its model; `CoreLikeVAE038` adds what 0.38 changed (`not_video`, `vae_output_dtype`, `format_encoded`). The run in
a real ComfyUI is tests/test_real_comfyui.py (opt-in).
"""

import pytest
import torch

from reference import latents, original_state_dict, reference_decode, reference_encode, reference_model

TOL = 1e-5


class CoreLikeVAE:
    def __init__(self, version="2.1"):
        self.first_stage_model = reference_model(version)
        self.version, self.scale = version, 16 if version == "2.2" else 8
        self.device = self.output_device = torch.device("cpu")
        self.vae_dtype, self.not_video, self.latent_channels = torch.float32, False, 48 if version == "2.2" else 16
        self.patcher = object()

    def get_sd(self):
        return original_state_dict(self.version)

    def spacial_compression_encode(self):
        return self.scale

    def vae_encode_crop_pixels(self, pixels):  # as core's
        dims = pixels.shape[1:-1]
        for d in range(len(dims)):
            x = (dims[d] // self.scale) * self.scale
            if x != dims[d]:
                pixels = pixels.narrow(d + 1, (dims[d] % self.scale) // 2, x)
        return pixels

    def decode(self, samples_in, vae_options={}):
        return torch.clamp((reference_decode(self.first_stage_model, samples_in) + 1) / 2, 0, 1).movedim(1, -1)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        raise AssertionError("core's blended tiles: the copy must never get here")

    def encode(self, pixel_samples):
        x = self.vae_encode_crop_pixels(pixel_samples).movedim(-1, 1)
        x = x.movedim(1, 0).unsqueeze(0) if x.ndim < 5 else x
        return reference_encode(self.first_stage_model, x[:, :, : 1 + 4 * ((x.shape[2] - 1) // 4)] * 2 - 1)

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        raise AssertionError("core's blended tiles: the copy must never get here")


class CoreLikeVAE038(CoreLikeVAE):
    format_encoded = None

    def vae_output_dtype(self):
        return torch.float32

    def encode(self, pixel_samples, not_video=None):
        if not_video:
            return torch.cat([super(CoreLikeVAE038, self).encode(p.unsqueeze(0)) for p in pixel_samples])
        return super().encode(pixel_samples)

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None, not_video=None):
        raise AssertionError("core's blended tiles: the copy must never get here")


def adapt(pack, vae, tiling="auto", tile_size=512, frames_per_chunk=1):
    return pack.NODE_CLASS_MAPPINGS["WanVAEForCoreNodes"]().adapt(vae, tiling, tile_size, frames_per_chunk)[0]


def frames(n, h, w, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def diff(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_the_copy_decodes_and_encodes_as_core_does_and_core_s_vae_stays_as_it_was(pack, folders, version):
    core = CoreLikeVAE(version)
    before = dict(core.__dict__)
    twin = adapt(pack, core)
    assert isinstance(twin, CoreLikeVAE) and twin is not core
    assert twin.first_stage_model is core.first_stage_model and twin.patcher is core.patcher  # core's own attributes
    assert core.__dict__ == before and type(core) is CoreLikeVAE  # nothing set on the input

    z = latents(version, (2, 2, 3, 5))
    ours, theirs = twin.decode(z), core.decode(z)
    assert ours.shape == theirs.shape == (2, 5, 3 * core.scale, 5 * core.scale, 3) and ours.dtype == torch.float32
    assert diff(ours, theirs) <= TOL and ours.min() >= 0 and ours.max() <= 1

    images = frames(11, 3 * core.scale + 5, 4 * core.scale + 3)  # neither 1 + 4k frames nor a size multiple: core crops
    ours, theirs = twin.encode(images), core.encode(images)
    assert ours.shape == theirs.shape == (1, core.latent_channels, 3, 3, 4) and ours.dtype == torch.float32
    assert diff(ours, theirs) <= TOL
    one = frames(1, 2 * core.scale, 3 * core.scale, seed=1)  # a single image, as Qwen-Image encodes with the 2.1 VAE
    assert diff(twin.encode(one), core.encode(one)) <= TOL


def test_core_s_tiled_variants_give_the_untiled_result_with_their_tile_sizes(pack, folders, monkeypatch):
    core = CoreLikeVAE("2.1")
    twin = adapt(pack, core, tiling="off")
    seen = []
    wan_class = type(twin.wan_loaded.vae)
    for name in ("decode", "encode"):
        original = getattr(wan_class, name)
        monkeypatch.setattr(wan_class, name, lambda self, x, *a, _f=original, **kw: seen.append(kw["options"]) or _f(self, x, *a, **kw))

    z = latents("2.1", (1, 3, 12, 20))
    assert diff(twin.decode_tiled(z, tile_x=16, tile_y=16, overlap=4, tile_t=2, overlap_t=1), core.decode(z)) <= TOL
    assert (seen[-1].tiling, seen[-1].tile_size, seen[-1].frames_per_chunk) == ("on", 128, 2)  # 16 cells of 8 px
    images = frames(9, 96, 160, seed=3)
    assert diff(twin.encode_tiled(images, tile_x=128, tile_y=128, overlap=32, tile_t=8, overlap_t=4), core.encode(images)) <= TOL
    assert (seen[-1].tiling, seen[-1].tile_size, seen[-1].frames_per_chunk) == ("on", 128, 2)
    twin.decode(z)
    assert seen[-1].tiling == "off"  # the plain methods keep the node's settings


def test_the_0_38_signatures_not_video_and_output_dtype(pack, folders):
    core = CoreLikeVAE038("2.1")
    twin = adapt(pack, core, tiling="on", tile_size=128)
    images = frames(3, 48, 80, seed=4)
    ours = twin.encode(images, not_video=True)  # three images, each its own one-frame latent
    assert ours.shape == (3, 16, 1, 6, 10) and diff(ours, core.encode(images, not_video=True)) <= TOL
    core.vae_output_dtype = lambda: torch.bfloat16
    assert twin.encode(images[:1]).dtype == torch.float32  # the copy was taken before: core's later changes stay core's
    twin.vae_output_dtype = lambda: torch.bfloat16
    assert twin.encode(images[:1]).dtype == twin.decode(latents("2.1", (1, 1, 6, 10))).dtype == torch.bfloat16


def test_a_comfyui_whose_vae_changed_is_refused_naming_versions_and_nothing_is_changed(pack, folders):
    class Renamed(CoreLikeVAE):
        def encode(self, pixel_samples, mode="video"):
            return super().encode(pixel_samples)

    class Missing(CoreLikeVAE):
        decode_tiled = None

    for cls, found in ((Renamed, r"encode\(pixel_samples, mode\) where the pack knows encode\(pixel_samples\)"),
                       (Missing, r"no decode_tiled\(\)")):  # fmt: skip
        core = cls()
        before = dict(core.__dict__)
        with pytest.raises(TypeError, match=rf"built for ComfyUI 0\.3\.64, 0\.38 and 0\.45; this ComfyUI \(unknown\) has .*{found}"):
            adapt(pack, core)
        assert core.__dict__ == before and type(core) is cls


def test_what_is_not_a_full_wan_vae_is_refused_at_the_node(pack, folders):
    from test_pack import CoreVAE, load
    from test_tiny_decoders import tiny_file

    sdxl = CoreVAE({"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)}, ("comfy.ldm.models.autoencoder", "AutoencoderKL"))
    with pytest.raises(pack.lib.CheckpointError, match="not a Wan VAE.*It holds comfy.ldm.models.autoencoder.AutoencoderKL"):
        adapt(pack, sdxl)
    tiny_file(folders["vae"] / "taew2_1.pth", 16)
    with pytest.raises(pack.lib.CheckpointError, match="decoder only, and core nodes such as WanImageToVideo encode.*"
                                                      "can still decode in Wan Decode Latents"):  # fmt: skip
        adapt(pack, load(pack, "taew2_1.pth"))


def test_load_wan_vae_s_vae_becomes_core_s_object_for_its_weights(pack, folders, monkeypatch):
    from test_pack import load

    made = []

    def core_from(sd):
        core = CoreLikeVAE("2.1")
        made.append(sd)
        return core

    monkeypatch.setattr(pack.host, "core_vae_from_weights", core_from)
    loaded = load(pack, device="cpu")
    with pytest.raises(pack.lib.CheckpointError, match="channel widths 16/16, which core's VAE cannot hold"):
        adapt(pack, loaded)  # the tests' reduced widths stand for LightVAE's pruned ones here
    monkeypatch.setitem(pack.nodes.core_vae.CORE_BUILDS, "2.1", (16, 16))
    twin = adapt(pack, loaded)
    assert twin.wan_loaded is loaded and set(made[0]) == set(original_state_dict("2.1"))  # ComfyUI's key names
    assert pack.nodes.load_vae.as_wan_vae(twin) is loaded  # our decode nodes take the copy without converting again
    assert adapt(pack, loaded, tiling="on").first_stage_model is twin.first_stage_model and len(made) == 1  # built once
    z = latents("2.1", (1, 2, 6, 10))
    assert diff(twin.decode(z), loaded.vae.decode(z, layout="images").unsqueeze(0)) == 0


def test_stop_inside_a_core_node_ends_the_decode(pack, folders, monkeypatch):
    twin = adapt(pack, CoreLikeVAE("2.1"))
    monkeypatch.setattr(pack.host, "stop_requested", lambda: True)
    with pytest.raises(pack.lib.DecodeCancelled):  # inside ComfyUI: its interrupt (comfy_host.raise_stopped)
        twin.decode(latents("2.1"))
    with pytest.raises(pack.lib.DecodeCancelled):
        twin.encode(frames(5, 48, 80))


def test_image_latents_decode_as_one_frame_each(pack, folders):
    core = CoreLikeVAE("2.1")
    twin = adapt(pack, core)
    z = latents("2.1", (2, 1, 6, 10))[:, :, 0]  # [B, C, h, w], as image models hand them over
    ours = twin.decode(z)
    assert ours.shape == (2, 1, 48, 80, 3) and diff(ours, core.decode(z.unsqueeze(2))) <= TOL


def test_select_vae_device_after_the_node_is_honoured_and_a_device_that_is_not_here_is_refused(pack, folders, monkeypatch):
    """Newer ComfyUI's Select VAE Device copies the VAE object (copy.copy) and sets its `device`
    (comfy_extras/nodes_multigpu.py @374ae431): our copy then runs there, or says it cannot before any work."""
    import copy

    twin = adapt(pack, CoreLikeVAE("2.1"))
    ran_on = []
    real = pack.nodes.core_vae.decode_planned
    monkeypatch.setattr(pack.nodes.core_vae, "decode_planned", lambda loaded, *a: ran_on.append(loaded.device) or real(loaded, *a))
    z = latents("2.1", (1, 2, 6, 10))
    selected = copy.copy(twin)
    selected.device = torch.device("cpu")  # "default": where it was
    assert diff(selected.decode(z), twin.decode(z)) == 0 and ran_on == [torch.device("cpu")] * 2
    assert pack.nodes.load_vae.as_wan_vae(selected) is twin.wan_loaded

    selected.device = torch.device("cuda", 7)  # a workflow from a machine with eight GPUs
    with pytest.raises(pack.lib.SettingsError, match=r"sent to cuda:7 \(Select VAE Device\?\), which this ComfyUI cannot use"):
        selected.decode(z)
    with pytest.raises(pack.lib.SettingsError, match="cuda:7"):
        selected.encode(frames(5, 48, 80))
    assert len(ran_on) == 2  # nothing ran
    monkeypatch.setattr(pack.nodes.core_vae, "check_devices", lambda devices: list(devices))  # as if torch saw it
    assert pack.nodes.load_vae.as_wan_vae(selected).device == torch.device("cuda", 7)
    assert twin.wan_loaded.device == torch.device("cpu")  # the node's own VAE is left where it was


def test_an_upscale_decoder_tells_core_nodes_its_true_scale_so_tiled_decodes_get_the_size_asked(pack, folders, monkeypatch):
    """VAE Decode (Tiled) asks for tile_size // spacial_compression_decode() cells (nodes.py, 0.3.64 and @02217e36);
    core's own object says 8 for the 2x upscale decoder, whose cells are 16 pixels: its tiles came out twice as large."""
    from reference import write_vae_file
    from test_pack import load

    write_vae_file(folders["vae"] / "Wan2.1_VAE_upscale2x.safetensors", "2.1", out_channels=12)
    loaded = load(pack, "Wan2.1_VAE_upscale2x.safetensors", device="cpu")
    monkeypatch.setattr(pack.host, "core_vae_from_weights", lambda sd: CoreLikeVAE("2.1"))
    monkeypatch.setitem(pack.nodes.core_vae.CORE_BUILDS, "2.1", (loaded.vae.config.dim, loaded.vae.config.decoder_dim))
    twin = adapt(pack, loaded, tiling="off")
    assert (twin.spacial_compression_decode(), twin.spacial_compression_encode(), twin.temporal_compression_decode()) == (16, 8, 4)
    seen = []
    wan_class = type(loaded.vae)
    real = wan_class.decode
    monkeypatch.setattr(wan_class, "decode", lambda self, x, *a, **kw: seen.append(kw["options"]) or real(self, x, *a, **kw))
    z = latents("2.1", (1, 2, 12, 20))
    tile_size = 256  # VAE Decode (Tiled)'s widget, in output pixels
    out = twin.decode_tiled(z, tile_x=tile_size // twin.spacial_compression_decode(), tile_y=tile_size // twin.spacial_compression_decode())
    assert seen[-1].tile_size == tile_size and out.shape == (1, 5, 192, 320, 3)
    assert diff(out, twin.decode(z)) <= TOL


class CoreLikeImageVAE:
    """What the newest comfy/sd.py (033046cc) builds for Qwen-Image 2.1's VAE (a 5-D `decoder.head.2.weight` of time
    size 1): an image VAE (latent_dim 2) of 64 channels and 16x, RGBA out, RGB in padded with alpha 1
    (pad_channel_value), a 5-D latent's first frame decoded; here with diffusers' AutoencoderKLQwenImage21 as its model."""

    latent_channels, output_channels, scale, format_encoded = 64, 4, 16, None

    def __init__(self):
        import diffusers

        torch.manual_seed(0)
        self.first_stage_model = diffusers.AutoencoderKLQwenImage21(base_dim=16, decoder_base_dim=24).eval().requires_grad_(False)
        for p in self.first_stage_model.parameters():
            p.normal_(0, 0.05)
        self.device = self.output_device = torch.device("cpu")
        self.patcher = object()

    def get_sd(self):  # ComfyUI's names: the original ones, 5-D convs of time size 1
        from wan_vae import load_vae

        return load_vae(self.first_stage_model.state_dict(), name="diffusers").model.state_dict()

    def spacial_compression_encode(self):
        return self.scale

    def vae_output_dtype(self):
        return torch.float32

    def vae_encode_crop_pixels(self, pixels):  # as core's: the centred crop, then alpha 1 for RGB
        pixels = CoreLikeVAE.vae_encode_crop_pixels(self, pixels)
        return torch.nn.functional.pad(pixels, (0, self.output_channels - pixels.shape[-1]), value=1.0)

    def decode(self, samples_in, vae_options={}):  # noqa: B006 (core's signature)
        z = samples_in[:, :, 0] if samples_in.ndim == 5 else samples_in
        out = self.first_stage_model.decode(z.unsqueeze(2)).sample[:, :, 0]
        return torch.clamp((out + 1) / 2, 0, 1).movedim(1, -1)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        raise AssertionError("core's blended tiles: the copy must never get here")

    def encode(self, pixel_samples, not_video=None):
        x = self.vae_encode_crop_pixels(pixel_samples).movedim(-1, 1) * 2 - 1
        return self.first_stage_model.encode(x.unsqueeze(2)).latent_dist.mean[:, :, 0]

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None, not_video=None):
        raise AssertionError("core's blended tiles: the copy must never get here")


def test_qwen_image_2_1_s_vae_in_newer_core_decodes_and_encodes_pictures_as_core_s_does(pack, folders):
    core = CoreLikeImageVAE()
    twin = adapt(pack, core, tiling="off")
    assert twin.wan_loaded.vae.config.images_only
    assert (twin.spacial_compression_decode(), twin.spacial_compression_encode(), twin.temporal_compression_decode()) == (16, 16, None)
    z = torch.randn(2, 64, 5, 6, generator=torch.Generator().manual_seed(5))  # core's image latents: [B, C, h, w]
    ours, theirs = twin.decode(z), core.decode(z)
    assert ours.shape == theirs.shape == (2, 80, 96, 4) and diff(ours, theirs) <= TOL
    assert torch.equal(twin.decode(torch.stack([z, -z], 2)), ours)  # a 5-D latent: its first frame, as core takes it
    assert diff(twin.decode_tiled(z, tile_x=2, tile_y=2, overlap=1), ours) <= TOL  # exact tiles of 32 px
    for channels in (3, 4):  # RGB gets alpha 1
        images = torch.rand(3, 85, 99, channels, generator=torch.Generator().manual_seed(channels))  # core crops to 80x96
        ours, theirs = twin.encode(images), core.encode(images)
        assert ours.shape == theirs.shape == (3, 64, 5, 6) and diff(ours, theirs) <= TOL
    assert diff(twin.encode_tiled(images, tile_x=64, tile_y=64, overlap=16), theirs) <= TOL


def test_load_wan_vae_s_qwen_image_2_1_vae_is_served_where_core_has_it_and_refused_where_not(pack, folders, monkeypatch):
    from safetensors.torch import save_file
    from test_pack import load

    core = CoreLikeImageVAE()
    save_file({k: v.contiguous() for k, v in core.get_sd().items()}, str(folders["vae"] / "qwen_image_2.1_vae_bf16.safetensors"))
    loaded = load(pack, "qwen_image_2.1_vae_bf16.safetensors", device="cpu")

    def too_old(sd):  # 0.3.64 takes the file for a Wan 2.2 VAE, whose tensors do not fit it
        raise RuntimeError("Error(s) in loading state_dict for WanVAE: size mismatch for encoder.conv1.weight")

    for built in (too_old, lambda sd: CoreLikeVAE("2.2")):
        monkeypatch.setattr(pack.host, "core_vae_from_weights", built)
        with pytest.raises(pack.lib.CheckpointError, match=r"This ComfyUI \(unknown\) has no Qwen-Image 2\.1 VAE of its own.*"
                                                           "Update ComfyUI, or wire Load Wan VAE straight to Wan Decode Latents"):
            adapt(pack, loaded)
    monkeypatch.setattr(pack.host, "core_vae_from_weights", lambda sd: core)  # newer core: its widths come from the file
    twin = adapt(pack, loaded)
    z = torch.randn(1, 64, 5, 6, generator=torch.Generator().manual_seed(6))
    assert diff(twin.decode(z), core.decode(z)) <= TOL
