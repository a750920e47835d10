"""Every file name a workflow carries stays inside ComfyUI's folders: one test per row of the README's table."""

import os

import pytest
import torch

from wan_vae.files.latents import write_latent_file


def load_vae_node(pack, name):
    return pack.NODE_CLASS_MAPPINGS["LoadWanVAE"]().load(name, "fp32", "cpu")


def load_latent_node(pack, name):
    return pack.NODE_CLASS_MAPPINGS["LoadWanLatent"]().load(name, "")


@pytest.mark.parametrize("name", ["../wan_2.1_vae.safetensors", "sub/../../vae/wan_2.1_vae.safetensors", r"..\x.safetensors",
                                  "/etc/passwd", "C:/models/x.safetensors", r"\\server\share\x.pth", "a\x00b"])  # fmt: skip
def test_vae_names_that_leave_the_vae_folder_are_refused(pack, folders, name):
    outside = folders["vae"].parent / "wan_2.1_vae.safetensors"
    outside.write_bytes((folders["vae"] / "wan_2.1_vae.safetensors").read_bytes())  # a real VAE one level up
    with pytest.raises(ValueError, match="absolute paths and '..' are refused"):
        load_vae_node(pack, name)


@pytest.mark.parametrize("name", ["../secret.latent", "/tmp/x.latent", "sub/../../x.latent", "../x.latent [output]"])
def test_latent_names_that_leave_the_input_folder_are_refused(pack, folders, name):
    write_latent_file(folders["input"].parent / "secret.latent", torch.zeros(1, 16, 1, 2, 2))
    with pytest.raises(ValueError, match="absolute paths and '..' are refused"):
        load_latent_node(pack, name)


def test_files_in_subfolders_and_symlinks_you_placed_are_followed(pack, folders, tmp_path):
    """Users keep models on another disk with a link in models/vae: that is theirs, and it works."""
    elsewhere = tmp_path / "other_disk"
    elsewhere.mkdir()
    (elsewhere / "wan.safetensors").write_bytes((folders["vae"] / "wan_2.1_vae.safetensors").read_bytes())
    os.symlink(elsewhere, folders["vae"] / "linked")
    (folders["vae"] / "sub").mkdir()
    os.symlink(elsewhere / "wan.safetensors", folders["vae"] / "sub" / "file_link.safetensors")
    for name in ("linked/wan.safetensors", "sub/file_link.safetensors"):
        assert load_vae_node(pack, name)[0].vae.version == "2.1"
    (folders["input"] / "clips").mkdir()
    write_latent_file(folders["input"] / "clips" / "a.latent", torch.zeros(1, 16, 1, 2, 2))
    assert load_latent_node(pack, "clips/a.latent")[0]["samples"].shape == (1, 16, 1, 2, 2)


@pytest.mark.parametrize("prefix", ["../escape/wan", "/tmp/wan", "WanVideo/../../wan", ".."])
def test_filename_prefixes_that_leave_the_output_folder_are_refused_before_anything_is_written(pack, folders, prefix):
    with pytest.raises(ValueError, match="outside the output folder"):
        pack.NODE_CLASS_MAPPINGS["ExportVideo"]().export(torch.rand(1, 16, 16, 3), 16.0, "h264-mp4", 80, prefix, False)
    assert not any(folders["output"].parent.glob("escape*")) and not list(folders["output"].rglob("*.mp4"))


def test_a_prefix_into_a_subfolder_stays_inside(pack, folders):
    path = pack.NODE_CLASS_MAPPINGS["ExportVideo"]().export(torch.rand(1, 16, 16, 3), 16.0, "h264-mp4", 80, "a/b/wan", False)
    assert str(path["result"][0]).startswith(str(folders["output"]))
