"""Checkpoint reading: every supported form loads the same weights; the key mapping is exact; bad files are refused."""

import copy
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from reference import latents, meta_reference, original_state_dict, reference_decode, reference_model, rel_l2
from wan_vae import CheckpointError, load_vae
from wan_vae.files.checkpoint import prepare_state_dict
from wan_vae.files.key_names import diffusers_to_original, original_to_diffusers
from wan_vae.files.config import CONFIGS
from wan_vae.network.model import WanVAEModel

TENSORS = {"2.1": 194, "2.2": 196}


# ------------------------------------------------------------------------------------------- key mapping


def _our_shapes(version):
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in WanVAEModel(CONFIGS[version]).state_dict().items()}


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_original_names_map_onto_every_diffusers_tensor_with_its_shape(version):
    ours = _our_shapes(version)
    theirs = {k: tuple(v.shape) for k, v in meta_reference(version).state_dict().items()}
    assert len(ours) == len(theirs) == TENSORS[version]
    mapped = original_to_diffusers(ours, CONFIGS[version])
    assert None not in mapped.values()
    assert {mapped[k]: shape for k, shape in ours.items()} == theirs


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_diffusers_names_map_back_onto_every_original_tensor(version):
    ours = _our_shapes(version)
    theirs = {k: tuple(v.shape) for k, v in meta_reference(version).state_dict().items()}
    back = diffusers_to_original(theirs, CONFIGS[version])
    assert {back[k]: shape for k, shape in theirs.items()} == ours
    assert original_to_diffusers(back.values(), CONFIGS[version]) == {v: k for k, v in back.items()}


def test_known_original_keys_have_the_documented_shapes():
    """Anchors from the reference's shape table (section 3.3), so the architecture cannot drift."""
    for version, expected in {
        "2.1": {"decoder.conv1.weight": (384, 16, 3, 3, 3), "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),
                "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3), "decoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
                "decoder.upsamples.4.shortcut.weight": (384, 192, 1, 1, 1), "encoder.head.2.weight": (32, 384, 3, 3, 3),
                "decoder.head.0.gamma": (96, 1, 1, 1), "decoder.middle.1.norm.gamma": (384, 1, 1)},
        "2.2": {"decoder.conv1.weight": (1024, 48, 3, 3, 3), "encoder.conv1.weight": (160, 12, 3, 3, 3),
                "decoder.upsamples.0.upsamples.3.time_conv.weight": (2048, 1024, 3, 1, 1),
                "decoder.upsamples.2.upsamples.0.shortcut.weight": (512, 1024, 1, 1, 1),
                "decoder.head.2.weight": (12, 256, 3, 3, 3), "conv1.weight": (96, 96, 1, 1, 1)},
    }.items():  # fmt: skip
        shapes = _our_shapes(version)
        for key, shape in expected.items():
            assert shapes[key] == shape, key


# ------------------------------------------------------------------------------------------- file forms


def _write(path, sd, kind):
    sd = {k: v.contiguous() for k, v in sd.items()}
    if kind == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path


FORMS = [
    # (name, file name, naming, prefix, storage dtype, container)
    ("diffusers-safetensors", "vae.safetensors", "diffusers", "", torch.float32, "safetensors"),
    ("original-safetensors", "wan_vae.safetensors", "original", "", torch.float32, "safetensors"),
    ("original-pth", "Wan_VAE.pth", "original", "", torch.float32, "pth"),
    ("original-pt", "wan_vae.pt", "original", "", torch.float32, "pth"),
    ("original-bin", "wan_vae.bin", "original", "", torch.float32, "pth"),
    ("original-sft", "wan_vae.sft", "original", "", torch.float32, "safetensors"),
    ("kijai-model-prefix", "wan_vae_kijai.safetensors", "original", "model.", torch.float32, "safetensors"),
    ("vae-prefix-diffusers", "pipeline_vae.safetensors", "diffusers", "vae.", torch.float32, "safetensors"),
    ("fp16-original", "wan_vae_fp16.safetensors", "original", "", torch.float16, "safetensors"),
    ("bf16-original", "wan_2.1_vae.safetensors", "original", "", torch.bfloat16, "safetensors"),
    ("bf16-pth", "wan_vae_bf16.pth", "original", "", torch.bfloat16, "pth"),
    ("fp16-diffusers", "vae_fp16.safetensors", "diffusers", "", torch.float16, "safetensors"),
]


@pytest.mark.parametrize("version", ["2.1", "2.2"])
@pytest.mark.parametrize("form", FORMS, ids=[f[0] for f in FORMS])
def test_every_file_form_loads_the_same_weights(tmp_path, version, form):
    _, filename, naming, prefix, dtype, container = form
    ref = reference_model(version)
    sd = ref.state_dict()
    named = original_state_dict(version) if naming == "original" else sd
    stored = {prefix + k: v.to(dtype) for k, v in named.items()}
    path = _write(tmp_path / filename, stored, container)

    vae = load_vae(path)
    assert (vae.version, vae.checkpoint.naming, vae.checkpoint.prefix) == (version, naming, prefix)
    assert vae.checkpoint.storage_dtypes == (str(dtype).removeprefix("torch."),)
    assert vae.dtype == torch.float32
    z = latents(version, (1, 2, 6, 10))
    if dtype == torch.float32:
        assert rel_l2(vae.decode(z), reference_decode(ref, z)) <= 1e-5
        return
    # Half-precision files: exactly the reference's output for the same rounded weights ...
    rounded = {k: v.to(dtype).float() for k, v in sd.items()}
    ours = dict(vae.model.named_parameters())
    assert all(torch.equal(ours[k], rounded[k2]) for k2, k in diffusers_to_original(sd, CONFIGS[version]).items())
    ref_rounded = copy.deepcopy(ref)  # state_dict() tensors are the live parameters: never load into `ref`
    ref_rounded.load_state_dict(rounded)
    out = vae.decode(z)
    assert rel_l2(out, reference_decode(ref_rounded, z)) <= 1e-5
    # ... and within what that rounding allows of the fp32 output. The bound is 20x the relative
    # rounding of the weights themselves; the decoder amplifies weight perturbations ~7.5x (measured:
    # fp16 1.7e-3 and bf16 1.3e-2 output error for 2.2e-4 and 1.7e-3 weight error).
    weight_error = rel_l2(torch.cat([v.flatten() for v in rounded.values()]), torch.cat([v.flatten() for v in sd.values()]))
    assert rel_l2(out, reference_decode(ref, z)) <= 20 * weight_error


def test_diffusers_folder_and_pipeline_folder_load(tmp_path):
    ref = reference_model("2.1")
    ref.save_pretrained(tmp_path / "pipeline" / "vae")
    z = latents("2.1")
    expected = reference_decode(ref, z)
    for folder in (tmp_path / "pipeline" / "vae", tmp_path / "pipeline"):
        vae = load_vae(folder)
        assert vae.checkpoint.naming == "diffusers"
        assert rel_l2(vae.decode(z), expected) <= 1e-5


def test_training_checkpoint_with_a_state_dict_entry_loads(tmp_path):
    sd = original_state_dict("2.1")
    torch.save({"state_dict": sd}, tmp_path / "vae.ckpt")
    assert load_vae(tmp_path / "vae.ckpt").version == "2.1"


def test_a_wrapper_that_contains_itself_is_refused_not_followed_forever(tmp_path):
    wrapper = {}
    wrapper["state_dict"] = wrapper  # a pickle can hold this; unwrapping must stop
    torch.save(wrapper, tmp_path / "loop.pth")
    with pytest.raises(CheckpointError, match="holds entries that are not tensors"):
        load_vae(tmp_path / "loop.pth")


def test_load_to_a_dtype_and_back():
    vae = load_vae(reference_model("2.2").state_dict(), dtype=torch.bfloat16)
    assert vae.dtype == torch.bfloat16 and vae.device == torch.device("cpu")
    assert vae.to(dtype=torch.float32).dtype == torch.float32
    assert vae.latents_mean.shape == vae.latents_std.shape == (48,)
    assert (vae.latent_channels, vae.spatial_scale, vae.temporal_scale) == (48, 16, 4)


def test_describe_names_version_naming_and_size():
    _, info = prepare_state_dict(reference_model("2.1").state_dict())
    text = info.describe()
    assert "Wan 2.1" in text and "diffusers names" in text and "194 tensors" in text


# ------------------------------------------------------------------------------------------- bad files


def _load_error(source) -> str:
    with pytest.raises(CheckpointError) as e:
        load_vae(source)
    return str(e.value)


def test_an_image_vae_is_named(tmp_path):
    sd = {"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3), "decoder.up_blocks.0.resnets.0.conv1.weight": torch.zeros(512, 512, 3, 3),
          "encoder.conv_in.weight": torch.zeros(128, 3, 3, 3)}  # fmt: skip
    message = _load_error(_write(tmp_path / "sdxl_vae.safetensors", sd, "safetensors"))
    assert "not a Wan VAE" in message and "image VAE" in message and "4-channel" in message


def test_a_unet_is_named(tmp_path):
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3), "model.diffusion_model.out.2.bias": torch.zeros(4)}
    message = _load_error(_write(tmp_path / "unet.safetensors", sd, "safetensors"))
    assert "not a Wan VAE" in message and "diffusion model" in message


def test_a_tiny_preview_vae_is_named():
    message = _load_error({"decoder.22.bias": torch.zeros(3), "decoder.1.weight": torch.zeros(64, 16, 3, 3)})
    assert "tiny preview VAE" in message


def test_an_empty_file_and_an_empty_state_dict(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert "empty (0 bytes)" in _load_error(tmp_path / "empty.safetensors")
    save_file({}, str(tmp_path / "none.safetensors"))
    assert "holds no tensors" in _load_error(tmp_path / "none.safetensors")


def test_a_missing_file_says_where_models_go(tmp_path):
    assert "models/vae" in _load_error(tmp_path / "nope.safetensors")


def test_truncated_and_corrupt_safetensors_give_a_clear_error(tmp_path):
    good = _write(tmp_path / "good.safetensors", original_state_dict("2.1"), "safetensors")
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    message = _load_error(tmp_path / "truncated.safetensors")
    assert "truncated or corrupt" in message and "download it again" in message
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(4096))
    assert "not a readable .safetensors file" in _load_error(tmp_path / "garbage.safetensors")


def test_a_truncated_pth_gives_a_clear_error(tmp_path):
    good = _write(tmp_path / "good.pth", {"x": torch.zeros(1000)}, "pth")
    (tmp_path / "bad.pth").write_bytes(good.read_bytes()[:300])
    assert "not a readable PyTorch checkpoint" in _load_error(tmp_path / "bad.pth")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"decoder.conv1.weight": torch.zeros(1), "payload": _Exploit()}, path)
    message = _load_error(path)
    assert "Refused" in message and "run code" in message and ".safetensors" in message
    assert not _Exploit.marker.exists()
    with open(tmp_path / "evil.ckpt", "wb") as f:  # a legacy (non-zip) pickle too
        pickle.dump({"payload": _Exploit()}, f, protocol=2)
    assert "Refused" in _load_error(tmp_path / "evil.ckpt")
    assert not _Exploit.marker.exists()


def test_missing_unexpected_and_wrong_shape_tensors_are_listed():
    sd = original_state_dict("2.1")
    sd.pop("decoder.upsamples.5.residual.2.bias")
    sd["decoder.extra.weight"] = torch.zeros(3)
    sd["decoder.middle.1.proj.weight"] = torch.zeros(7, 7, 1, 1)
    message = _load_error(sd)
    assert "missing 1: decoder.upsamples.5.residual.2.bias" in message
    assert "unexpected 1: decoder.extra.weight" in message
    assert "wrong shape 1: decoder.middle.1.proj.weight [7, 7, 1, 1]" in message


def test_latent_width_and_layout_must_agree():
    sd = original_state_dict("2.1")
    sd["decoder.conv1.weight"] = torch.zeros(64, 48, 3, 3, 3)  # 48 latent channels in a 2.1 layout
    assert "Inconsistent checkpoint" in _load_error(sd)
    sd["decoder.conv1.weight"] = torch.zeros(64, 32, 3, 3, 3)
    assert "32 latent channels" in _load_error(sd)


def test_a_diffusers_folder_of_another_model_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    assert "AutoencoderKL, not a Wan VAE" in _load_error(tmp_path)
