"""Decode and encode match diffusers AutoencoderKLWan (fp32, relative L2 <= 1e-5) for both VAE versions."""

import pytest
import torch

from reference import latents, reference_decode, reference_encode, reference_model, rel_l2, video
from wan_vae import load_vae

TOL = 1e-5


@pytest.fixture(scope="module")
def pair():
    """(diffusers model, our WanVAE sharing its weights) per (version, real config)."""
    cache = {}

    def get(version: str, real: bool = False):
        if (version, real) not in cache:
            ref = reference_model(version, real)
            cache[version, real] = ref, load_vae(ref.state_dict())
        return cache[version, real]

    return get


REDUCED_CASES = [
    (version, t, b, size)
    for version in ("2.1", "2.2")
    for t in (1, 2, 5)
    for b in (1, 2)
    for size in ((6, 10), (5, 7))
]


@pytest.mark.parametrize("version,t,b,size", REDUCED_CASES)
def test_decode_matches_diffusers_reduced(pair, version, t, b, size):
    ref, vae = pair(version)
    z = latents(version, (b, t, *size), seed=t * 10 + b)
    expected = reference_decode(ref, z)
    out = vae.decode(z)
    assert out.shape == expected.shape == (b, 3, 1 + 4 * (t - 1), size[0] * vae.spatial_scale, size[1] * vae.spatial_scale)
    assert rel_l2(out, expected) <= TOL


@pytest.mark.parametrize("version,t,b,size", REDUCED_CASES)
def test_encode_matches_diffusers_reduced(pair, version, t, b, size):
    ref, vae = pair(version)
    x = video(version, (b, 1 + 4 * (t - 1), *size), seed=t * 10 + b)
    expected = reference_encode(ref, x)
    out = vae.encode(x)
    assert out.shape == expected.shape == (b, vae.latent_channels, t, *size)
    assert rel_l2(out, expected) <= TOL


@pytest.mark.parametrize("version,t,b", [("2.1", 1, 1), ("2.1", 2, 2), ("2.1", 5, 1), ("2.2", 1, 1), ("2.2", 2, 1)])
def test_decode_matches_diffusers_real_config(pair, version, t, b):
    ref, vae = pair(version, real=True)
    z = latents(version, (b, t, 6, 10), seed=t)
    assert rel_l2(vae.decode(z), reference_decode(ref, z)) <= TOL


@pytest.mark.parametrize("version,t", [("2.1", 1), ("2.1", 5), ("2.2", 2)])
def test_encode_matches_diffusers_real_config(pair, version, t):
    ref, vae = pair(version, real=True)
    x = video(version, (1, 1 + 4 * (t - 1), 6, 10), seed=t)
    assert rel_l2(vae.encode(x), reference_encode(ref, x)) <= TOL


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_normalized_latents_are_mapped_back_with_the_vae_mean_and_std(pair, version):
    ref, vae = pair(version)
    z = latents(version, (1, 2, 6, 10))
    mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
    normalized = (z - mean) * inv_std  # what diffusers pipelines hand over
    assert rel_l2(vae.decode(normalized, normalized=True), reference_decode(ref, z)) <= TOL
    x = video(version, (1, 5, 6, 10))
    assert rel_l2(vae.encode(x, normalized=True), (reference_encode(ref, x) - mean) * inv_std) <= TOL


def test_four_dimensional_latents_are_one_video(pair):
    ref, vae = pair("2.1")
    z = latents("2.1", (1, 2, 6, 10))
    assert torch.equal(vae.decode(z[0]), vae.decode(z))
    assert torch.equal(vae.encode(video("2.1")[0]), vae.encode(video("2.1")))


def test_output_is_clamped_to_the_unit_range_and_not_saturated(pair):
    _, vae = pair("2.1")
    out = vae.decode(latents("2.1", (1, 2, 6, 10)))
    assert out.min() >= -1 and out.max() <= 1
    # Random weights give meaningful outputs: if most pixels sat at +-1, parity would prove little.
    assert (out.abs() < 0.99).float().mean() > 0.95
