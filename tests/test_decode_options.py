"""Decode options: exact temporal chunking, streaming, layouts, precision, progress, cancel (tiles: test_tiling.py)."""

import gc
import logging
import weakref

import pytest
import torch
import torch.nn.functional as F

from reference import latents, reference_decode, reference_model, rel_l2, write_vae_file
from wan_vae import DecodeCancelled, load_vae
from wan_vae.kernels import norm as norm_kernels
from wan_vae.network.blocks import RMSNorm
from wan_vae.network.model import half_precision_blocks
from wan_vae.plan.tiling import plan_tiles, tile_cells


@pytest.fixture(scope="module")
def vaes():
    return {v: load_vae(reference_model(v).state_dict()) for v in ("2.1", "2.2")}


# ------------------------------------------------------------------------------ temporal chunking


@pytest.mark.parametrize("version", ["2.1", "2.2"])
@pytest.mark.parametrize("frames_per_chunk", [1, 2, 3, 4, 7])
def test_any_frames_per_chunk_gives_the_untiled_reference(vaes, version, frames_per_chunk):
    z = latents(version, (1, 7, 5, 7), seed=11)
    expected = reference_decode(reference_model(version), z)
    assert rel_l2(vaes[version].decode(z, frames_per_chunk=frames_per_chunk), expected) <= 1e-5


# ------------------------------------------------------------------------------ spatial tiles


def test_tiles_larger_than_the_frame_are_clamped_to_an_untiled_decode(vaes):
    z = latents("2.1", (1, 2, 6, 10))
    assert torch.equal(vaes["2.1"].decode(z, tiling="on", tile_size=4096), vaes["2.1"].decode(z))


# ------------------------------------------------------------------------------ streaming and layouts


@pytest.mark.parametrize("tiling", ["off", "on"])
def test_streamed_frames_equal_the_whole_decode(vaes, tiling):
    vae = vaes["2.2"]
    z = latents("2.2", (2, 3, 9, 11), seed=2)
    kw = dict(tiling=tiling, tile_size=128, tile_overlap=32, frames_per_chunk=2)
    whole = vae.decode(z, layout="images", **kw)
    chunks = list(vae.decode_frames(z, **kw))
    assert [c.shape[0] for c in chunks] == [1, 8] * 2  # chunks of latent frames 0 | 1-2, per video
    assert torch.equal(torch.cat(chunks), whole)
    as_uint8 = torch.cat(list(vae.decode_frames(z, dtype=torch.uint8, **kw)))
    assert as_uint8.dtype == torch.uint8 and torch.equal(as_uint8, (whole * 255 + 0.5).floor().to(torch.uint8))


def test_streaming_keeps_no_reference_to_frames_already_handed_out(vaes):
    vae = vaes["2.1"]
    refs = []
    for chunk in vae.decode_frames(latents("2.1", (1, 5, 6, 10))):
        refs.append(weakref.ref(chunk))
        del chunk
        gc.collect()
        assert all(r() is None for r in refs[:-1])


def test_images_layout_is_comfyui_image_of_the_video_layout(vaes):
    vae = vaes["2.1"]
    z = latents("2.1", (2, 2, 6, 10))
    video = vae.decode(z)
    images = vae.decode(z, layout="images")
    assert images.shape == (2 * 5, 48, 80, 3) and images.dtype == torch.float32
    assert torch.allclose(images, ((video.permute(0, 2, 3, 4, 1) + 1) / 2).reshape(-1, 48, 80, 3), atol=1e-6)
    assert images.min() >= 0 and images.max() <= 1


def test_output_device_receives_the_decode(vaes):
    out = vaes["2.1"].decode(latents("2.1"), layout="images", output_device="cpu")
    assert out.device == torch.device("cpu")


# ------------------------------------------------------------------------------ precision


@pytest.fixture(scope="module")
def real_weights():
    return {v: reference_model(v, real=True).state_dict() for v in ("2.1", "2.2")}


# Without native bf16 convolutions (AVX512-BF16 / AMX) PyTorch's CPU fallback runs them ~100x slower than
# fp32: minutes for one real-size decode. Those CPUs skip the real-size check; the reduced one runs anywhere.
NATIVE_BF16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 convolutions: a real-size bf16 decode takes many minutes")
@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_bf16_decode_of_the_real_networks_is_within_1e_2_of_fp32(real_weights, version):
    z = latents(version, (1, 3, 6, 10), seed=5)
    expected = load_vae(real_weights[version]).decode(z)
    out = load_vae(real_weights[version], dtype=torch.bfloat16).decode(z)
    assert out.dtype == torch.bfloat16 and rel_l2(out, expected) <= 1e-2  # measured 7.7e-3 (2.1), 5.5e-3 (2.2)


@pytest.mark.parametrize("dtype,bound", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_half_precision_decodes_and_encodes_close_to_fp32(dtype, bound):
    ref = reference_model("2.1")  # a reduced config: fp16 convolutions have no fast CPU kernel
    z = latents("2.1", (1, 3, 6, 10))
    expected = reference_decode(ref, z)
    vae = load_vae(ref.state_dict(), dtype=dtype)
    out = vae.decode(z)
    assert out.dtype == dtype and rel_l2(out, expected) < bound
    x = expected.clamp(-1, 1)
    assert rel_l2(vae.encode(x), load_vae(ref.state_dict()).encode(x)) < bound


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_half_precision_covers_most_of_the_work_and_nothing_but_the_heavy_convs(real_weights, version):
    vae = load_vae(real_weights[version], dtype=torch.bfloat16)
    heavy = {id(p) for b in half_precision_blocks(vae.model) for i in (2, 6) for p in b.residual[i].parameters()}
    assert {id(p) for p in vae.model.parameters() if p.dtype == torch.bfloat16} == heavy
    assert all(p.dtype == torch.float32 for p in vae.model.parameters() if id(p) not in heavy)

    work = {torch.bfloat16: 0, torch.float32: 0}  # multiply-adds by the dtype they run in
    conv2d, conv3d = F.conv2d, F.conv3d

    def counting(conv):
        # Only the shapes are needed: the conv runs on the meta device (bf16 convs are slow on CPUs without bf16
        # instructions) and zeros go on, which walk the same layers with the same shapes.
        def run(x, weight, *args, **kwargs):
            assert x.dtype == weight.dtype
            meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
            shape = conv(x.to("meta"), weight.to("meta"), *meta, **kwargs).shape
            work[weight.dtype] += shape.numel() * weight[0].numel()
            return torch.zeros(shape, dtype=x.dtype, device=x.device)
        return run

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "conv2d", counting(conv2d))
        mp.setattr(F, "conv3d", counting(conv3d))
        vae.decode(latents(version, (1, 2, 2, 2)))  # the first frame alone runs another path: two frames
    share = work[torch.bfloat16] / sum(work.values())
    assert share >= 2 / 3, f"only {share:.0%} of the decoder's work runs in bf16"  # 72% (2.1), 70% (2.2) at 240x416


def test_a_bf16_file_decoded_in_bf16_keeps_its_size_and_only_the_heavy_convs_round(tmp_path):
    path = write_vae_file(tmp_path / "wan_2.1_vae.safetensors", "2.1", dtype=torch.bfloat16)
    full, half = load_vae(path), load_vae(path, dtype=torch.bfloat16)
    assert sum(p.numel() * p.element_size() for p in half.model.parameters()) == path.stat().st_size - _header_bytes(path)
    z = latents("2.1", (1, 3, 6, 10))
    exact = full.decode(z)
    assert 0 < rel_l2(half.decode(z), exact) < 1e-2
    assert torch.equal(half.to(dtype=torch.float32).decode(z), exact)  # upcast weights: nothing was lost


def _header_bytes(path) -> int:
    """Bytes of a .safetensors file that are not tensor data (8-byte length + JSON header)."""
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def test_half_precision_without_cpu_support_warns_that_it_will_be_slow(caplog):
    supported = torch.ops.mkldnn._is_mkldnn_fp16_supported()
    with caplog.at_level(logging.WARNING, logger="wan_vae"):
        vae = load_vae(reference_model("2.1").state_dict(), dtype=torch.float16)
        assert caplog.text == ""  # loading is not decoding: the nodes keep a GPU's VAE on the CPU between runs
        vae.decode(latents("2.1", (1, 1, 2, 2)))
    assert ("no fast float16 convolutions" in caplog.text) != supported


@pytest.mark.parametrize("layout", [torch.channels_last_3d, torch.contiguous_format], ids=["ndhwc", "ncdhw"])
def test_rms_norm_into_a_half_buffer_rounds_once_from_fp32(layout):
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.gamma.uniform_(0.5, 1.5)
    x = torch.randn(1, 16, 3, 9, 7).contiguous(memory_format=layout)
    exact = norm(x, silu=True)
    with pytest.MonkeyPatch.context() as mp:
        # NDHWC: bands of 14 pixels, 189 pixels in all, the last band short; NCDHW: bands of 2 rows, 5 per frame.
        # The torch path called directly: the registered op may run another copy of the module (the tests import the
        # library twice, as wan_vae and inside the pack)
        mp.setattr(norm_kernels, "SLICE_ELEMENTS", {"cpu": 16 * 7 * 2, "cuda": 16 * 7 * 2})
        out = torch.full_like(x, float("nan"), dtype=torch.bfloat16)
        norm_kernels.rms_norm_torch(x, norm.gamma, None, out, norm.scale, True)
        from_half = torch.empty_like(x, dtype=torch.bfloat16)
        norm_kernels.rms_norm_torch(x.bfloat16(), norm.gamma, None, from_half, norm.scale, True)
    assert torch.equal(out, exact.bfloat16())
    assert torch.equal(from_half, norm(x.bfloat16().float(), silu=True).bfloat16())


def test_rms_norm_of_a_zero_vector_in_fp16_is_zero_not_nan():
    norm = RMSNorm(8).half()
    x = torch.zeros(1, 8, 1, 2, 2, dtype=torch.float16)
    x[..., 0, 0] = 1.0
    out = norm(x)
    assert torch.isfinite(out).all() and (out[..., 1, 1] == 0).all()


# ------------------------------------------------------------------------------ progress and cancel


def test_progress_reports_every_chunk_of_every_tile(vaes):
    calls = []
    vaes["2.1"].decode(latents("2.1", (2, 3, 20, 20)), tiling="on", tile_size=96, tile_overlap=32,
                       frames_per_chunk=2, progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    tiles = len(plan_tiles(20, 20, tile_cells(96, 32, 8)))
    assert tiles > 1
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1] == (2 * 3 * tiles, 2 * 3 * tiles)
    assert len(calls) == 2 * tiles * 2  # per video, per tile: chunks [0] and [1, 2]


def test_cancel_stops_between_chunks_with_a_clear_exception(vaes):
    seen = []
    with pytest.raises(DecodeCancelled, match="Cancelled after 2 of 5 steps"):
        vaes["2.1"].decode(latents("2.1", (1, 5, 6, 10)), progress=lambda d, t: seen.append(d), cancel=lambda: len(seen) >= 2)
    assert seen == [1, 2]
    stream = vaes["2.1"].decode_frames(latents("2.1", (1, 5, 6, 10)), cancel=lambda: True)
    with pytest.raises(DecodeCancelled):
        next(stream)
