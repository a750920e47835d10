"""Latent files: ComfyUI .latent (and its legacy scaling), named tensors, torch tensors, refused pickles."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from wan_vae import LatentError
from wan_vae.files.latents import describe_latent, read_latent_file, write_latent_file


def test_written_latent_files_are_comfyui_files_read_back_unscaled(tmp_path):
    z = torch.randn(1, 16, 3, 6, 10)
    write_latent_file(tmp_path / "a.latent", z, metadata={"prompt": {"1": {}}})
    tensors = load_file(str(tmp_path / "a.latent"))
    assert set(tensors) == {"latent_tensor", "latent_format_version_0"}
    assert torch.equal(read_latent_file(tmp_path / "a.latent"), z)


def test_legacy_latent_files_get_core_load_latent_s_scaling(tmp_path):
    z = torch.randn(1, 4, 8, 8)
    save_file({"latent_tensor": z}, str(tmp_path / "old.latent"))
    assert torch.allclose(read_latent_file(tmp_path / "old.latent"), z / 0.18215)


def test_tensors_are_found_by_name_or_as_the_only_candidate(tmp_path):
    z = torch.randn(1, 48, 2, 6, 10)
    save_file({"latents": z, "timesteps": torch.arange(4.0)}, str(tmp_path / "pipe.safetensors"))
    assert torch.equal(read_latent_file(tmp_path / "pipe.safetensors"), z)
    save_file({"a": z, "b": z + 1}, str(tmp_path / "two.safetensors"))
    with pytest.raises(LatentError, match="Cannot tell which tensor.*a \\[1, 48, 2, 6, 10\\].*key="):
        read_latent_file(tmp_path / "two.safetensors")
    assert torch.equal(read_latent_file(tmp_path / "two.safetensors", key="b"), z + 1)
    with pytest.raises(LatentError, match="has no tensor named 'c'; it has: a, b"):
        read_latent_file(tmp_path / "two.safetensors", key="c")
    torch.save(z, tmp_path / "bare.pt")
    assert torch.equal(read_latent_file(tmp_path / "bare.pt"), z)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_a_latent_pickle_that_would_run_code_is_refused(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    torch.save({"latents": torch.zeros(1), "x": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(LatentError, match="Refused to load"):
        read_latent_file(tmp_path / "evil.pt")
    assert not _Exploit.marker.exists()


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(LatentError, match="No latent file"):
        read_latent_file(tmp_path / "nope.latent")
    (tmp_path / "broken.latent").write_bytes(os.urandom(100))
    with pytest.raises(LatentError, match="not a readable .safetensors file"):
        read_latent_file(tmp_path / "broken.latent")


def test_describe_says_which_vae_a_latent_needs():
    assert describe_latent(torch.zeros(1, 16, 21, 60, 104)).endswith("81 frames at 832x480 px; made by Wan 2.1 / Wan 2.2 14B (T2V, I2V) / Qwen-Image; needs the Wan 2.1 VAE")
    assert "needs the Wan 2.2 VAE" in describe_latent(torch.zeros(1, 48, 31, 44, 80))
    assert "1280x704" in describe_latent(torch.zeros(1, 48, 31, 44, 80))
    assert "no Wan VAE decodes" in describe_latent(torch.zeros(1, 4, 2, 8, 8))
