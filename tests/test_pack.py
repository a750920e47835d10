"""The ComfyUI pack: loaded the way ComfyUI loads it, the node contract, example workflows, and a run end to end."""

import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfy_graph import LoadLatentLikeComfyUI, check_ui_workflow, inputs_of, is_widget, run_api
from media import mp4_metadata, probe
from reference import latents
from wan_vae.files.config import CONFIGS
from wan_vae.files.latents import write_latent_file

PACK = Path(__file__).resolve().parents[1]
NODES = ("LoadWanVAE", "WanDecodeLatents", "ExportVideo", "LoadWanLatent", "WanDecodeToVideo", "WanEncode", "WanVAEForCoreNodes",
         "WanVAEForWanVideoWrapper", "WanDecodeAsVideo")  # fmt: skip
# Widget names in order: saved workflows store widgets_values by position, so this order is a public contract.
WIDGET_ORDER = {
    "LoadWanVAE": ["vae_name", "precision", "device", "alpha_vae_name"],
    "WanDecodeLatents": ["latent_space", "tiling", "tile_size", "tile_overlap", "frames_per_chunk"],
    "ExportVideo": ["fps", "format", "quality", "filename_prefix", "save_metadata", "bit_depth", "pingpong", "loop_count",
                    "save_output", "prores_profile"],
    "LoadWanLatent": ["latent_file", "tensor_name"],
    "WanDecodeToVideo": ["latent_space", "tiling", "tile_size", "tile_overlap", "frames_per_chunk", "fps", "format", "quality",
                         "filename_prefix", "save_metadata", "bit_depth", "save_latent", "pingpong", "loop_count", "save_output",
                         "prores_profile"],
    "WanEncode": ["latent_space", "tiling", "tile_size", "frames_per_chunk", "trim"],
    "WanVAEForCoreNodes": ["tiling", "tile_size", "frames_per_chunk"],
    "WanVAEForWanVideoWrapper": ["tiling", "tile_size", "frames_per_chunk"],
    "WanDecodeAsVideo": ["latent_space", "tiling", "tile_size", "tile_overlap", "frames_per_chunk", "fps"],
}


def test_the_entry_point_imported_as_a_bare_module_defines_no_nodes(monkeypatch):
    """What pytest does with the root __init__.py when the clone's folder name is not an identifier."""
    monkeypatch.syspath_prepend(str(PACK))
    monkeypatch.delitem(sys.modules, "__init__", raising=False)
    try:
        module = importlib.import_module("__init__")
        assert module.__package__ == "" and module.WEB_DIRECTORY == "./web" and not hasattr(module, "NODE_CLASS_MAPPINGS")
    finally:
        sys.modules.pop("__init__", None)


# ------------------------------------------------------------------------------------------ loading


def test_the_pack_registers_its_nodes_and_web_folder_and_ignores_the_decoy(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(NODES) and "Decoy" not in pack.NODE_CLASS_MAPPINGS
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(NODES)
    assert (PACK / pack.WEB_DIRECTORY / "export_video_preview.js").is_file()
    assert pack.NODE_CLASS_MAPPINGS["LoadWanVAE"].__module__ == f"{pack.__name__}.nodes.load_vae"
    assert "nodes" not in sys.modules or not getattr(sys.modules["nodes"], "IMPORTED", False)


def test_the_web_extension_uses_current_front_end_apis_only():
    # (That pyproject.toml names no web folder beside WEB_DIRECTORY is checked in test_packaging.py.) Newer front ends
    # warn on an import of a legacy module (/scripts/ui.js, /scripts/widgets.js, the extensions' widgetInputs.js...):
    # only app.js and api.js are imported, the front end's own entry points.
    import re

    for path in (PACK / "web").rglob("*.js"):
        imported = re.findall(r"""(?:^|\s)import\s[^;]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']""", path.read_text(), re.M)
        modules = {a or b for a, b in imported}
        assert modules <= {"../../scripts/app.js", "../../scripts/api.js"}, f"{path.name} imports {modules}"
    assert "../../scripts/app.js" in (PACK / "web" / "export_video_preview.js").read_text()


def test_the_pack_speaks_one_node_api_v1_so_comfyui_never_skips_half_of_it(pack):
    """ComfyUI's load_custom_node takes NODE_CLASS_MAPPINGS first and then never calls a comfy_entrypoint (V3): a pack
    exporting both would have its V3 half ignored. Ours is V1 (docs/compatibility.md says why)."""
    assert pack.NODE_CLASS_MAPPINGS and not hasattr(pack, "comfy_entrypoint")
    assert not any(hasattr(cls, "define_schema") for cls in pack.NODE_CLASS_MAPPINGS.values())


def test_no_module_of_the_pack_imports_its_own_packages_absolutely():
    for path in list(PACK.glob("nodes/*.py")) + list(PACK.glob("wan_vae/**/*.py")) + [PACK / "__init__.py"]:
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import nodes", "from nodes", "import wan_vae", "from wan_vae")), f"{path}: {line}"
            if "wan_vae" in path.relative_to(PACK).parts:
                assert not stripped.startswith(("import comfy", "from comfy", "import folder_paths")), f"{path}: {line}"


# ------------------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("name", NODES)
def test_node_contract(pack, folders, name):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    assert cls.CATEGORY == "Wan VAE" and len(cls.DESCRIPTION) > 40
    assert isinstance(cls.RETURN_TYPES, tuple) and callable(getattr(cls, cls.FUNCTION))
    assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES)
    assert getattr(cls, "OUTPUT_NODE", False) == (name in ("ExportVideo", "WanDecodeToVideo"))
    types = cls.INPUT_TYPES()
    assert set(types) <= {"required", "optional", "hidden"}
    for input_name, spec in inputs_of(cls).items():
        options = spec[1] if len(spec) > 1 else {}
        assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
        if isinstance(spec[0], list):
            assert "default" not in options or options["default"] in spec[0]
        elif spec[0] in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"]
    assert [n for n, s in inputs_of(cls).items() if is_widget(s)] == WIDGET_ORDER[name]


def test_export_node_takes_the_hidden_prompt_and_workflow(pack):
    hidden = pack.NODE_CLASS_MAPPINGS["ExportVideo"].INPUT_TYPES()["hidden"]
    assert hidden == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


# ------------------------------------------------------------------------------------------ workflows


# Core nodes of the official-style graph in example_workflows/wan21_i2v_core_nodes.json (checked in real ComfyUI).
CORE_NODES_IN_EXAMPLES = ("UNETLoader", "CLIPLoader", "VAELoader", "CLIPVisionLoader", "LoadImage", "CLIPTextEncode", "CLIPVisionEncode",
                          "WanImageToVideo", "ModelSamplingSD3", "KSampler", "VAEDecode", "CreateVideo", "SaveVideo", "SaveImage",
                          "LoadVideo", "SaveLatent")  # fmt: skip
MODEL_LOADERS = {"LoadWanVAE": "vae", "VAELoader": "vae", "UNETLoader": "diffusion_models", "CLIPLoader": "text_encoders",
                 "CLIPVisionLoader": "clip_vision", "WanVideoVAELoader": "vae"}  # fmt: skip
# kijai's WanVideoWrapper's nodes in example_workflows/wan_wrapper_to_video.json (checked with the wrapper installed)
WRAPPER_NODES_IN_EXAMPLES = ("WanVideoVAELoader",)


def classes(pack):
    return {**pack.NODE_CLASS_MAPPINGS, "LoadLatent": LoadLatentLikeComfyUI}


def test_every_example_workflow_is_valid(pack, folders):
    files = sorted((PACK / "example_workflows").glob("*.json"))
    hinted = set()
    for path in files:
        graph = json.loads(path.read_text())
        assert graph.get("version") == 0.4 and "nodes" in graph and "links" in graph, f"{path.name} is not UI format"
        check_ui_workflow(graph, classes(pack), core=CORE_NODES_IN_EXAMPLES + WRAPPER_NODES_IN_EXAMPLES)
        assert path.with_suffix(".jpg").is_file(), f"{path.name} has no thumbnail"
        for loader in (n for n in graph["nodes"] if n["type"] in MODEL_LOADERS):
            models = loader["properties"]["models"]
            # Exactly the file this node loads: a hint for a file not used would show as a missing model.
            pair = [loader["widgets_values"][0].replace("rgb_channel", "alpha_channel")] if "wan_alpha" in loader["widgets_values"][0] else []
            assert [m["name"] for m in models] == [loader["widgets_values"][0], *pair]  # Wan-Alpha: its alpha half too
            assert all(m["directory"] == MODEL_LOADERS[loader["type"]] and m["url"].startswith("https://") for m in models)
            hinted |= {m["name"] for m in models if m["directory"] == "vae"}
    assert hinted == {"wan_2.1_vae.safetensors", "wan2.2_vae.safetensors", "Wan2.1_VAE_upscale2x_imageonly_real_v1.safetensors",
                      "wan_alpha_2.1_vae_rgb_channel.safetensors", "wan_alpha_2.1_vae_alpha_channel.safetensors"}


@pytest.mark.parametrize("path", sorted((PACK / "tests" / "workflows" / "v0.1").glob("*.json")), ids=lambda p: p.stem)
def test_workflows_saved_with_version_0_1_still_load(pack, folders, path):
    """Copies of the example workflows as 0.1.0 shipped them: node names, widget order and values still fit."""
    check_ui_workflow(json.loads(path.read_text()), classes(pack))


@pytest.mark.parametrize("stem,version", [("wan21_latent_to_video", "2.1"), ("wan22_5b_latent_to_video", "2.2")])
def test_the_api_examples_run_end_to_end_to_a_real_mp4(pack, folders, stem, version):
    workflow = json.loads((PACK / "tests" / "workflows" / f"{stem}.api.json").read_text())
    ui_workflow = json.loads((PACK / "example_workflows" / f"{stem}.json").read_text())
    write_latent_file(folders["input"] / workflow["1"]["inputs"]["latent"], latents(version, (1, 3, 6, 10)))
    results = run_api(workflow, classes(pack), extra_pnginfo={"workflow": ui_workflow})
    ui, (path,) = results["4"]
    assert Path(path) == folders["output"] / "WanVideo" / "wan_00001_.mp4"
    info = probe(path)
    scale = CONFIGS[version].spatial_scale
    assert info["frames"] == 9 and (info["width"], info["height"]) == (10 * scale, 6 * scale)
    assert set(ui) == {"wan_video"}  # the pack's preview only: ComfyUI's own would draw over it (web/)
    saved = ui["wan_video"][0]
    assert (saved["filename"], saved["subfolder"], saved["type"], saved["playable"]) == ("wan_00001_.mp4", "WanVideo", "output", True)
    assert saved["frames"] == 9 and saved["bytes"] == Path(path).stat().st_size
    assert mp4_metadata(path) == {"prompt": workflow, "workflow": ui_workflow}


# ------------------------------------------------------------------------------------------ node behaviour


def load(pack, name="wan_2.1_vae.safetensors", **kw):
    return pack.NODE_CLASS_MAPPINGS["LoadWanVAE"]().load(name, kw.get("precision", "auto"), kw.get("device", "auto"))[0]


def decode(pack, vae, z, **kw):
    args = dict(latent_space="raw", tiling="off", tile_size=512, tile_overlap=64, frames_per_chunk=1) | kw
    return pack.NODE_CLASS_MAPPINGS["WanDecodeLatents"]().decode(vae, {"samples": z}, **args)[0]


def test_load_wan_vae_lists_files_and_picks_precision(pack, folders):
    assert pack.NODE_CLASS_MAPPINGS["LoadWanVAE"].INPUT_TYPES()["required"]["vae_name"][0] == [
        "sdxl_vae.safetensors", "wan2.2_vae.safetensors", "wan_2.1_vae.safetensors"]  # fmt: skip
    vae = load(pack)
    assert vae.vae.version == "2.1" and vae.vae.dtype == torch.float32 and vae.device.type in ("cpu", "cuda")  # auto on CPU: fp32
    assert load(pack, precision="bf16", device="cpu").vae.dtype == torch.bfloat16
    # the test files have reduced widths, which read as a pruned VAE (LightX2V's LightVAE is one at 25 %)
    assert repr(load(pack, precision="bf16", device="cpu")) == "Wan 2.1 VAE pruned to 17% of its decoder channels (bfloat16, decodes on cpu)"


def test_a_file_that_is_not_a_wan_vae_fails_in_the_loader(pack, folders):
    with pytest.raises(pack.lib.CheckpointError, match="not a Wan VAE: it looks like an image VAE"):
        load(pack, "sdxl_vae.safetensors")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when there is no GPU")
def test_gpu_without_a_gpu_is_refused_clearly(pack, folders):
    with pytest.raises(ValueError, match="no GPU is available"):
        load(pack, device="gpu")


def test_all_gpus_spreads_the_decode_and_gives_the_same_frames(pack, folders, monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU is available"):
            load(pack, device="all gpus")
    # two workers on the CPU stand in for two GPUs: the node passes them on, the frames do not change
    monkeypatch.setattr(pack.host, "compute_devices", lambda choice: [torch.device("cpu")] * 2)
    vae = load(pack, device="all gpus")
    assert vae.devices == [torch.device("cpu")] * 2
    z = latents("2.1", (2, 2, 16, 16))
    assert torch.equal(decode(pack, vae, z, tiling="on", tile_size=64), vae.vae.decode(z, layout="images", tiling="on", tile_size=64))


def test_decode_gives_comfyui_images_for_a_batch_of_videos(pack, folders):
    vae = load(pack, device="cpu")
    z = latents("2.1", (2, 2, 6, 10))
    images = decode(pack, vae, z)
    assert images.shape == (2 * 5, 48, 80, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    expected = vae.vae.decode(z, layout="images")
    assert torch.equal(images, expected)
    assert (decode(pack, vae, z, tiling="on", tile_size=64, tile_overlap=32) - expected).abs().max() <= 1e-5  # exact tiles
    normalized = (z - vae.vae.latents_mean.view(1, -1, 1, 1, 1)) / vae.vae.latents_std.view(1, -1, 1, 1, 1)
    assert torch.allclose(decode(pack, vae, normalized, latent_space="normalized"), expected, atol=1e-5)


def test_image_latents_decode_as_one_frame_each(pack, folders):
    vae = load(pack, device="cpu")
    assert decode(pack, vae, latents("2.1", (3, 1, 6, 10))[:, :, 0]).shape == (3, 48, 80, 3)


def test_wrong_latents_fail_with_the_library_message(pack, folders):
    with pytest.raises(pack.lib.LatentError, match="Wan 2.2 TI2V-5B latents need the Wan 2.2 VAE"):
        decode(pack, load(pack, device="cpu"), latents("2.2"))


def test_progress_bar_moves_and_stop_ends_the_decode(pack, folders, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, total):
            self.updates, self.previews = [], []
            bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            if preview is None:
                self.updates.append((value, total))
            else:  # a preview repeats the progress; on a loaded machine a chunk takes over a second, so any chunk may have one
                self.previews.append(preview)

    monkeypatch.setattr(pack.host, "progress_bar", Bar)
    clock = iter(range(10**6))  # a clock at 0.1 s a look, whatever the machine's load: the throttle, not the CPU, decides
    monkeypatch.setattr(pack.host, "time", types.SimpleNamespace(monotonic=lambda: next(clock) / 10))
    vae = load(pack, device="cpu")
    decode(pack, vae, latents("2.1", (1, 3, 6, 10)))
    # progress after every chunk; the first frame shown at once, then at most one a second (3 chunks in 0.3 s: none)
    assert [u for u in bars[-1].updates if u != (1, 3)] == [(2, 3), (3, 3)] and len(bars[-1].previews) == 1
    kind, image, size = bars[-1].previews[0]
    assert kind == "JPEG" and image.size == (80, 48) and image.mode == "RGB" and size > 0
    monkeypatch.setattr(pack.host, "stop_requested", lambda: len(bars[-1].updates) >= 1)
    with pytest.raises(pack.lib.DecodeCancelled):
        decode(pack, vae, latents("2.1", (1, 3, 6, 10)))
    assert set(bars[-1].updates) == {(1, 3)}  # stopped after the first chunk


def test_out_of_memory_is_retried_once_with_tiles(pack, folders, monkeypatch, caplog):
    vae = load(pack, device="cpu")
    real = vae.vae.decode
    calls = []

    def flaky(z, **kw):
        calls.append(kw["options"].tiling)
        if kw["options"].tiling != "on":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 7.70 GiB")
        return real(z, **kw)

    monkeypatch.setattr(vae.vae, "decode", flaky)
    with caplog.at_level(logging.WARNING, logger="wan_vae"):
        images = decode(pack, vae, latents("2.1", (1, 2, 6, 10)), tiling="off")
    assert calls == ["off", "on"] and images.shape == (5, 48, 80, 3)
    assert "ran out of memory" in caplog.text and "retrying once with 512 px tiles" in caplog.text
    monkeypatch.setattr(vae.vae, "decode", lambda z, **kw: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("again")))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        decode(pack, vae, latents("2.1"))  # the retry is not repeated


# ------------------------------------------------------------------------------------------ export


def export(pack, images, **kw):
    args = dict(fps=16.0, format="h264-mp4", quality=80, filename_prefix="WanVideo/wan", save_metadata=True) | kw
    return pack.NODE_CLASS_MAPPINGS["ExportVideo"]().export(images, **args)


def test_export_names_files_like_comfyui_and_never_overwrites(pack, folders):
    frames = torch.rand(5, 32, 48, 3)
    first = export(pack, frames)["result"][0]
    second = export(pack, frames)["result"][0]
    assert [Path(first).name, Path(second).name] == ["wan_00001_.mp4", "wan_00002_.mp4"]
    (folders["output"] / "WanVideo" / "wan_00003_.mp4").write_bytes(b"taken")
    assert Path(export(pack, frames)["result"][0]).name == "wan_00004_.mp4"
    assert (folders["output"] / "WanVideo" / "wan_00003_.mp4").read_bytes() == b"taken"
    assert Path(export(pack, frames, filename_prefix="clip_%width%x%height%")["result"][0]).name == "clip_48x32_00001_.mp4"


@pytest.mark.parametrize("prefix", ["../escape/wan", "/etc/wan", "WanVideo/../../wan"])
def test_export_refuses_prefixes_leaving_the_output_folder(pack, folders, prefix):
    with pytest.raises(ValueError, match="outside the output folder"):
        export(pack, torch.rand(2, 16, 16, 3), filename_prefix=prefix)


def test_export_embeds_prompt_and_workflow_unless_told_not_to(pack, folders):
    frames = torch.rand(3, 16, 16, 3)
    node = pack.NODE_CLASS_MAPPINGS["ExportVideo"]()
    args = dict(fps=16.0, format="h264-mp4", quality=80, filename_prefix="meta/wan")
    path = node.export(frames, save_metadata=True, prompt={"1": {"class_type": "X", "inputs": {}}},
                       extra_pnginfo={"workflow": {"nodes": []}}, **args)["result"][0]  # fmt: skip
    assert mp4_metadata(path) == {"prompt": {"1": {"class_type": "X", "inputs": {}}}, "workflow": {"nodes": []}}
    path = node.export(frames, save_metadata=False, prompt={"1": {}}, extra_pnginfo={"workflow": {}}, **args)["result"][0]
    assert mp4_metadata(path) == {}


def test_export_ui_for_formats_a_browser_cannot_play(pack, folders):
    out = export(pack, torch.rand(3, 16, 16, 3), format="prores-mov")
    assert out["ui"]["wan_video"][0]["playable"] is False and "first_frame" not in out["ui"]["wan_video"][0]
    out = export(pack, torch.rand(3, 16, 16, 3), format="png")
    saved = out["ui"]["wan_video"][0]
    assert (saved["filename"], saved["first_frame"]) == ("wan_00002_", "wan_00002_/frame_00001.png")  # one counter for every extension


def test_export_with_audio(pack, folders):
    t = torch.arange(44100) / 44100
    audio = {"waveform": torch.sin(2 * torch.pi * 440 * t).expand(1, 2, -1), "sample_rate": 44100}
    path = export(pack, torch.rand(16, 32, 32, 3), audio=audio)["result"][0]
    assert probe(path)["audio_codec"] == "aac"


# ------------------------------------------------------------------------------------------ latent loader


def test_load_wan_latent_reads_diffusers_and_torch_files(pack, folders):
    z = latents("2.1", (1, 2, 6, 10))
    save_file({"latents": z}, str(folders["input"] / "pipe.safetensors"))
    torch.save(z, folders["input"] / "script.pt")
    node = pack.NODE_CLASS_MAPPINGS["LoadWanLatent"]
    assert node.INPUT_TYPES()["required"]["latent_file"][0] == ["pipe.safetensors", "script.pt"]
    for name in ("pipe.safetensors", "script.pt"):
        assert torch.equal(node().load(name, "")[0]["samples"], z)
    assert node.IS_CHANGED("script.pt", "") != node.IS_CHANGED("pipe.safetensors", "")


# ------------------------------------------------------------------------------------------ core Load VAE's VAE


class CoreVAE:
    """What core Load VAE hands over (comfy.sd.VAE): the model as first_stage_model, its weights from get_sd()."""

    def __init__(self, sd, model_class=("comfy.ldm.wan.vae", "WanVAE")):
        self.first_stage_model = type(model_class[1], (torch.nn.Module,), {"__module__": model_class[0]})()
        self._sd = sd

    def get_sd(self):
        return self._sd


def test_core_load_vae_s_wan_vae_decodes_like_ours_converted_once(pack, folders):
    import gc

    from reference import original_state_dict
    from wan_vae import load_vae

    sd = original_state_dict("2.1")
    core, z = CoreVAE(sd), latents("2.1", (1, 2, 6, 10))
    images = decode(pack, core, z)
    assert torch.equal(images, load_vae(sd).decode(z, layout="images"))
    converted = pack.nodes.load_vae.as_wan_vae(core)
    assert pack.nodes.load_vae.as_wan_vae(core) is converted and len(pack.nodes.load_vae._FROM_CORE) == 1  # once
    path = pack.NODE_CLASS_MAPPINGS["WanDecodeToVideo"]().decode_to_video(
        core, {"samples": z}, "raw", "off", 512, 64, 1, 16.0, "ffv1-mkv", 80, "core/wan", True)["result"][0]  # fmt: skip
    assert probe(path)["frames"] == 5
    del core, converted
    gc.collect()
    assert len(pack.nodes.load_vae._FROM_CORE) == 0  # gone with ComfyUI's VAE


def test_core_vaes_that_are_not_wan_say_what_they_are(pack, folders):
    sdxl = CoreVAE({"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)}, ("comfy.ldm.models.autoencoder", "AutoencoderKL"))
    with pytest.raises(pack.lib.CheckpointError, match=r"core Load VAE's VAE: This is not a Wan VAE: it looks like an image VAE .* "
                                                       r"It holds comfy.ldm.models.autoencoder.AutoencoderKL"):  # fmt: skip
        decode(pack, sdxl, latents("2.1"))
    with pytest.raises(TypeError, match="vae must be a WAN_VAE from Load Wan VAE, a VAE from Load VAE or a WANVAE from WanVideo VAE Loader, not str"):
        decode(pack, "wan_2.1_vae.safetensors", latents("2.1"))


# ------------------------------------------------------------------------------------------ Wan Encode


def encode(pack, vae, images, **kw):
    args = dict(latent_space="raw", tiling="auto", tile_size=512, frames_per_chunk=1, trim=False) | kw
    return pack.NODE_CLASS_MAPPINGS["WanEncode"]().encode(vae, images, **args)[0]


def test_wan_encode_makes_a_latent_the_decoders_and_samplers_take(pack, folders):
    vae = load(pack, device="cpu")
    images = torch.rand(9, 48, 80, 3, generator=torch.Generator().manual_seed(0))
    latent = encode(pack, vae, images)
    z = latent["samples"]
    assert set(latent) == {"samples"} and z.shape == (1, 16, 3, 6, 10) and z.dtype == torch.float32 and z.device.type == "cpu"
    expected = vae.vae.encode(images.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1)
    assert (z - expected).abs().max() <= 1e-5
    assert (encode(pack, vae, images, tiling="on", tile_size=128)["samples"] - z).abs().max() <= 1e-5  # exact tiles
    assert decode(pack, vae, z).shape == (9, 48, 80, 3)  # our decode takes it, 1 + 4(T - 1) frames
    normalized = encode(pack, vae, images, latent_space="normalized")["samples"]
    assert torch.allclose(decode(pack, vae, normalized, latent_space="normalized"), decode(pack, vae, z), atol=1e-4)


def test_wan_encode_trims_or_says_what_to_change(pack, folders):
    vae = load(pack, device="cpu")
    images = torch.rand(11, 50, 83, 3, generator=torch.Generator().manual_seed(1))
    with pytest.raises(pack.lib.LatentError, match=r"1 \+ 4k frames.*turn trim on"):
        encode(pack, vae, images)
    with pytest.raises(pack.lib.LatentError, match=r"not a multiple of 8.*turn trim on"):
        encode(pack, vae, images[:9])
    z = encode(pack, vae, images, trim=True)["samples"]
    assert z.shape == (1, 16, 3, 6, 10)
    assert (z - encode(pack, vae, images[:9, 1:49, 1:81].contiguous())["samples"]).abs().max() <= 1e-5  # the centre


def test_wan_encode_takes_core_load_vae_and_refuses_a_tiny_decoder(pack, folders, tmp_path):
    from reference import original_state_dict
    from test_tiny_decoders import tiny_file

    images = torch.rand(5, 48, 80, 3, generator=torch.Generator().manual_seed(2))
    sd = original_state_dict("2.1")
    expected = pack.lib.load_vae(sd).encode(images.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1)
    assert (encode(pack, CoreVAE(sd), images)["samples"] - expected).abs().max() <= 1e-5
    tiny_file(folders["vae"] / "taew2_1.pth", 16)
    with pytest.raises(pack.lib.LatentError, match="decoder only: encoding needs the full Wan 2.1 VAE"):
        encode(pack, load(pack, "taew2_1.pth"), images)
