"""The GPU-shaped path (device/gpu.py), run on the CPU with `shaped_for_gpu`: the same numbers as the CPU path and
diffusers in fp32, exact tiles and chunks, the precisions, weights made once per decode, and longer chunks first."""

import logging

import pytest
import torch

from reference import latents, reference_decode, reference_encode, reference_model, rel_l2, video
from wan_vae import load_vae
from wan_vae.device.gpu import gpu_shaped, shaped_for_gpu
from wan_vae.device.precision import default_mixed
from wan_vae.network.blocks import CausalConv3d
from wan_vae.network.stream import Workspace
from wan_vae.plan.memory import GPU_FRAMES_PER_CHUNK, estimate

TOL = 1e-5


@pytest.fixture(scope="module")
def vaes():
    return {v: load_vae(reference_model(v).state_dict()) for v in ("2.1", "2.2")}


def max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_the_gpu_path_in_fp32_decodes_and_encodes_as_diffusers(vaes, version):
    z, x = latents(version, (1, 3, 9, 11), seed=2), video(version, (1, 5, 48, 64), seed=2)
    with shaped_for_gpu():
        decoded, encoded = vaes[version].decode(z), vaes[version].encode(x)
    assert rel_l2(decoded, reference_decode(reference_model(version), z)) <= 1e-5
    assert rel_l2(encoded, reference_encode(reference_model(version), x)) <= 1e-5
    assert max_diff(decoded, vaes[version].decode(z)) <= TOL  # and as the CPU path


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_the_gpu_path_s_tiles_and_chunks_give_its_untiled_frames(vaes, version):
    vae, z = vaes[version], latents(version, (1, 3, 10, 13), seed=5)
    with shaped_for_gpu():
        whole = vae.decode(z, frames_per_chunk=4)
        for fpc in (1, 3):
            assert max_diff(vae.decode(z, tiling="on", tile_size=8 * vae.spatial_scale, frames_per_chunk=fpc), whole) <= TOL
        streamed = torch.cat(list(vae.decode_frames(z, frames_per_chunk=2)))
    assert max_diff(streamed, ((whole.permute(0, 2, 3, 4, 1) + 1) / 2)[0]) <= TOL


def test_bf16_everywhere_is_the_gpu_default_and_its_tiles_add_no_error(vaes):
    sd = reference_model("2.1").state_dict()
    assert default_mixed("cpu") and not default_mixed("cuda")
    assert load_vae(sd, dtype=torch.bfloat16).mixed  # on the CPU: half precision in the heavy convs only
    fast = load_vae(sd, dtype=torch.bfloat16, mixed=False)
    model = fast.model
    kept = {model.conv1, model.conv2, model.decoder.head[2], model.encoder.head[2]}
    for m in model.modules():
        if isinstance(m, CausalConv3d):
            assert m.compute_dtype == (torch.float32 if m in kept else torch.bfloat16), m
    z = latents("2.1", (1, 2, 9, 11), seed=4)
    exact = vaes["2.1"].decode(z)
    with shaped_for_gpu():
        untiled, tiled = fast.decode(z), fast.decode(z, tiling="on", tile_size=64, frames_per_chunk=2)
    # another conv size rounds differently in bf16; tiles add no error beyond that (reduced random weights: the real
    # networks' errors are in docs/gpu.md)
    assert rel_l2(untiled, exact) < 3e-2 and rel_l2(tiled, exact) < 1.2 * rel_l2(untiled, exact)


def test_the_gpu_path_casts_weights_and_builds_phase_kernels_once_per_decode(vaes, monkeypatch):
    made, original = [], Workspace.cached

    def spy(self, key, make):
        if key not in self._made:
            made.append(key)
        return original(self, key, make)

    monkeypatch.setattr(Workspace, "cached", spy)
    vae = load_vae(reference_model("2.1").state_dict(), dtype=torch.bfloat16, mixed=True)  # fp32 convs cast per use
    z = latents("2.1", (1, 4, 6, 7), seed=1)
    vae.decode(z, frames_per_chunk=1)
    assert made == []  # the CPU path keeps nothing
    with shaped_for_gpu():
        vae.decode(z, frames_per_chunk=1)
    assert len(made) == len(set(made)) > 0  # made once per decode, over 4 chunks
    assert any("phases" in key for key in made)
    with shaped_for_gpu():
        vae.decode(z, frames_per_chunk=1)
    assert len(made) == 2 * len(set(made[: len(made) // 2]))  # a new decode makes its own (weights may have changed)


def test_auto_takes_longer_chunks_before_tiles_on_the_gpu_path(vaes, caplog):
    vae, z = vaes["2.1"], latents("2.1", (1, 5, 12, 16), seed=6)
    longest, one = (estimate(vae, 12, 16, 1, 1, fpc, latent_frames=5, output_on_device=True) for fpc in (GPU_FRAMES_PER_CHUNK, 1))
    with shaped_for_gpu(), caplog.at_level(logging.INFO, logger="wan_vae"):
        plenty = vae.decode(z, tiling="auto", memory_budget=longest)
        tight = vae.decode(z, tiling="auto", memory_budget=one)
    plans = [r.message for r in caplog.records if r.message.startswith("tiling=auto")]
    assert "no tiling" in plans[0] and f"frames_per_chunk {GPU_FRAMES_PER_CHUNK}" in plans[0]
    assert "no tiling" in plans[1] and "frames_per_chunk 1" in plans[1]
    assert max_diff(plenty, tight) <= TOL
    caplog.clear()
    with shaped_for_gpu(), caplog.at_level(logging.INFO, logger="wan_vae"):
        vae.encode(video("2.1", (1, 9, 4, 6), seed=6), tiling="auto", memory_budget=2**40)
    assert f"tiling=auto (encode): no tiling for 48x32 px, frames_per_chunk {GPU_FRAMES_PER_CHUNK}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wan_vae"):
        vae.decode(z, tiling="auto", memory_budget=longest)  # the CPU path keeps the caller's chunks
    assert "frames_per_chunk 1" in caplog.text


def test_the_path_follows_the_device_unless_forced():
    cpu = torch.empty(1)
    assert not gpu_shaped(cpu)
    with shaped_for_gpu():
        assert gpu_shaped(cpu)
        with shaped_for_gpu(False):
            assert not gpu_shaped(cpu)
    assert not gpu_shaped(cpu)


@pytest.mark.parametrize("version,cudnn,slow", [("2.9.1+cu128", 91002, True), ("2.9.1+cu128", 91500, False),
                                                ("2.10.0+cu130", 91002, False)])  # fmt: skip
def test_torch_2_9_with_an_old_cudnn_is_named_once_with_its_fix(monkeypatch, caplog, version, cudnn, slow):
    from wan_vae.device import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: cudnn)
    monkeypatch.setattr(torch, "__version__", version)
    monkeypatch.setattr(gpu, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="wan_vae"):
        assert gpu.slow_cudnn_conv3d() is slow and gpu.slow_cudnn_conv3d() is slow
    assert len(caplog.records) == int(slow)
    if slow:
        assert "cuDNN 9.15 or newer" in caplog.text and "pip install" in caplog.text
