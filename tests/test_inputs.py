"""Bad latents and videos get a message that says what was wrong and what to do."""

import pytest
import torch

from reference import latents, reference_model, video
from wan_vae import LatentError, SettingsError, load_vae


@pytest.fixture(scope="module")
def vae21():
    return load_vae(reference_model("2.1").state_dict())


@pytest.fixture(scope="module")
def vae22():
    return load_vae(reference_model("2.2").state_dict())


def _decode_error(vae, z, **kw) -> str:
    with pytest.raises(LatentError) as e:
        vae.decode(z, **kw)
    return str(e.value)


def test_wan22_latents_into_the_wan21_vae(vae21):
    message = _decode_error(vae21, latents("2.2"))
    assert "Wan 2.2 TI2V-5B latents need the Wan 2.2 VAE" in message
    assert "Wan 2.1 VAE (16 channels)" in message


def test_wan21_latents_into_the_wan22_vae(vae22):
    message = _decode_error(vae22, latents("2.1"))
    assert "latents need the Wan 2.1 VAE" in message and "Wan 2.2 VAE (48 channels)" in message


def test_latents_of_an_unknown_width(vae21):
    assert "do not come from a Wan video model" in _decode_error(vae21, torch.randn(1, 4, 2, 6, 10))


@pytest.mark.parametrize("shape", [(16, 6, 10), (1, 1, 16, 2, 6, 10), (16,)])
def test_latents_that_are_not_5d(vae21, shape):
    assert "5-D [batch, channels, frames, height, width]" in _decode_error(vae21, torch.randn(shape))


def test_empty_and_integer_latents(vae21):
    assert "empty" in _decode_error(vae21, torch.randn(1, 16, 0, 6, 10))
    assert "floating point" in _decode_error(vae21, torch.ones(1, 16, 2, 6, 10, dtype=torch.int64))
    assert "torch.Tensor" in _decode_error(vae21, [[1.0]])


def test_non_finite_latents_are_refused_with_counts(vae21):
    z = latents("2.1")
    z[0, 0, 0, 0, :3] = float("nan")
    z[0, 1, 1, 2, 2] = float("inf")
    message = _decode_error(vae21, z)
    assert "3 NaN and 1 infinite values" in message and "sampler diverged" in message


def test_bad_settings(vae21):
    z = latents("2.1")
    for kw, text in [
        ({"frames_per_chunk": 0}, "frames_per_chunk must be"),
        ({"frames_per_chunk": 1.5}, "frames_per_chunk must be"),
        ({"tiling": "yes"}, "tiling must be one of off, on, auto"),
        ({"layout": "NCHW"}, "layout must be"),
    ]:
        with pytest.raises(SettingsError, match=text):
            vae21.decode(z, **kw)


@pytest.mark.parametrize("frames,suggestion", [(6, "Trim to 5 or extend to 9"), (4, "Trim to 1 or extend to 5"), (80, "81")])
def test_encode_refuses_frame_counts_other_than_1_plus_4k(vae21, frames, suggestion):
    with pytest.raises(LatentError, match=suggestion):
        vae21.encode(torch.zeros(1, 3, frames, 48, 80))


def test_encode_refuses_sizes_the_vae_cannot_hold(vae21, vae22):
    with pytest.raises(LatentError, match="height 50 px is not a multiple of 8.*48 or 56"):
        vae21.encode(torch.zeros(1, 3, 5, 50, 80))
    with pytest.raises(LatentError, match="width 72 px is not a multiple of 16"):
        vae22.encode(torch.zeros(1, 3, 5, 64, 72))


def test_encode_refuses_values_outside_minus_one_to_one(vae21):
    with pytest.raises(LatentError, match=r"\[-1, 1\].*x \* 2 - 1"):
        vae21.encode(video("2.1") * 127.5 + 127.5)
    x = video("2.1")
    x[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(LatentError, match="NaN"):
        vae21.encode(x)
    with pytest.raises(LatentError, match=r"4 channels \(RGBA\), but the Wan 2.1 VAE .*encodes RGB"):
        vae21.encode(torch.zeros(1, 4, 5, 48, 80))
    with pytest.raises(LatentError, match=r"\[batch, 3, frames"):
        vae21.encode(torch.zeros(1, 5, 5, 48, 80))
