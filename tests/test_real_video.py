"""Opt-in: ComfyUI's VIDEO both ways in a real ComfyUI (as tests/test_real_comfyui.py, whose server fixture it uses).

    COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=...] python -m pytest -s tests/test_real_video.py

Wan Decode as VIDEO -> core Save Video and -> Get Video Components, core Load Video -> Wan Encode and -> Export
Video, with the server's peak memory printed for long videos (64x64 frames, random-weight reduced Wan 2.1 VAE).
"""

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from media import probe, read_frames
from reference import latents
from test_real_comfyui import COMFYUI, PACK, _load, _peak_rss_mb, _run, comfy  # noqa: F401  (comfy: the server fixture)
from wan_vae import write_video
from wan_vae.files.latents import write_latent_file

pytestmark = [pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run against real ComfyUI"),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's peak memory from /proc")]


def _workflow(stem: str) -> dict:
    return json.loads((PACK / "tests" / "workflows" / f"{stem}.api.json").read_text())


def _decode_latents(latent: str, name: str) -> dict:
    """Load Latent -> Wan Decode Latents -> the frames saved as tensors (the test probe pack), and Export Video's H.264."""
    graph = _workflow("wan21_latent_to_save_video")
    graph["1"]["inputs"]["latent"] = latent
    graph["3"] = {"class_type": "WanDecodeLatents", "inputs": {"vae": ["2", 0], "samples": ["1", 0], "latent_space": "raw",
                  "tiling": "off", "tile_size": 512, "tile_overlap": 64, "frames_per_chunk": 1}}  # fmt: skip
    graph["4"] = {"class_type": "WanTestSaveTensors", "inputs": {"images": ["3", 0], "name": name}}
    graph["5"] = {"class_type": "ExportVideo", "inputs": {"images": ["3", 0], "fps": 16, "format": "h264-mp4", "quality": 80,
                  "filename_prefix": f"ref/{name}", "save_metadata": False}}  # fmt: skip
    return graph


def _ok(entry) -> dict:
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    return entry["outputs"]


def test_our_video_into_core_save_video_and_get_video_components(comfy):  # noqa: F811
    base = comfy["base"]
    write_latent_file(base / "input" / "lazy.latent", latents("2.1", (1, 3, 6, 10)))
    outputs = _ok(_run(comfy, _decode_latents("lazy.latent", "lazy_ref"))[1])
    reference = _load(comfy, "lazy_ref")["images"]
    ref_mp4 = base / "output" / "ref" / outputs["5"]["wan_video"][0]["filename"]

    save = _workflow("wan21_latent_to_save_video")
    save["1"]["inputs"]["latent"] = "lazy.latent"
    save["3"]["inputs"]["latent_space"] = "raw"
    saved = _ok(_run(comfy, save)[1])["4"]
    (item,) = next(iter(saved.values()))  # core's preview entry: the file it saved
    path = base / "output" / item["subfolder"] / item["filename"]
    info = probe(path)
    assert (info["codec"], info["frames"], info["width"], info["height"]) == ("h264", 9, 80, 48)
    assert np.array_equal(read_frames(path), read_frames(ref_mp4))  # the codec's error only: Export Video's H.264 exactly
    error = np.abs(read_frames(path) / 255 - reference.numpy()).mean()
    print(f"\nSave Video of Wan Decode as VIDEO vs Wan Decode Latents' floats: mean abs error {error:.4f} (H.264, quality 80)")

    components = dict(save)
    components["4"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["3", 0]}}
    components["5"] = {"class_type": "WanTestSaveTensors", "inputs": {"images": ["4", 0], "name": "lazy_components"}}
    _ok(_run(comfy, components)[1])
    assert torch.equal(_load(comfy, "lazy_components")["images"], reference)


def test_save_video_of_a_long_latent_runs_in_flat_memory(comfy):  # noqa: F811
    """253 and 2,045 frames (64x64) through Wan Decode as VIDEO -> Save Video: the server's peak grows by at most 10 %;
    Wan Decode Latents -> Create Video -> Save Video is printed beside it."""
    base = comfy["base"]
    save = _workflow("wan21_latent_to_save_video")
    save["3"]["inputs"] |= {"latent_space": "raw", "tiling": "off"}
    whole = dict(save)
    whole["3"] = {"class_type": "WanDecodeLatents", "inputs": {"vae": ["2", 0], "samples": ["1", 0], "latent_space": "raw",
                  "tiling": "off", "tile_size": 512, "tile_overlap": 64, "frames_per_chunk": 1}}  # fmt: skip
    whole["5"] = {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 16}}
    whole["4"] = dict(whole["4"], inputs=dict(whole["4"]["inputs"], video=["5", 0]))
    peaks = {}
    for t in (64, 512):
        name = f"lazy_long_{t}.latent"
        write_latent_file(base / "input" / name, latents("2.1", (1, t, 8, 8), seed=t))
        for label, graph in (("Wan Decode as VIDEO -> Save Video", save), ("Wan Decode Latents -> Create Video -> Save Video", whole)):
            if t == 64 and graph is whole:
                continue
            graph["1"]["inputs"]["latent"] = name
            graph["4"]["inputs"]["filename_prefix"] = f"long/{t}_{len(peaks)}"
            result = {}
            peaks[label, t] = _peak_rss_mb(comfy["pid"], lambda: result.update(entry=_run(comfy, graph, timeout=1800)[1]))
            (item,) = next(iter(_ok(result["entry"])["4"].values()))
            assert probe(base / "output" / item["subfolder"] / item["filename"])["frames"] == 1 + 4 * (t - 1)
    assert _flat({(label, 1 + 4 * (t - 1)): mb for (label, t), mb in peaks.items()}, "Wan Decode as VIDEO -> Save Video") <= 1.10


def _flat(peaks: dict[tuple[str, int], float], streamed: str) -> float:
    """Print the peaks as a table; the streamed graph's growth from its shortest video to its longest."""
    print("\n| graph | frames | server peak RSS MB |\n|---|---|---|")
    for (label, frames), mb in peaks.items():
        print(f"| {label} | {frames} | {mb:.0f} |")
    lengths = sorted(frames for label, frames in peaks if label == streamed)
    growth = peaks[streamed, lengths[-1]] / peaks[streamed, lengths[0]]
    print(f"{streamed}, {lengths[-1]} vs {lengths[0]} frames: {growth:.3f}x")
    return growth


def _control_video(base, frames: int, name: str) -> torch.Tensor:
    """A lossless FFV1 control video of `frames` 64x64 frames in ComfyUI's input folder; its frames as uint8."""
    pixels = torch.rand(frames, 64, 64, 3, generator=torch.Generator().manual_seed(frames))
    write_video(pixels, base / "input" / name, 16, format="ffv1-mkv")
    return torch.from_numpy(read_frames(base / "input" / name))


def test_core_load_video_into_wan_encode_is_streamed_and_exact(comfy):  # noqa: F811
    """Load Video -> Wan Encode gives the latents of Load Video -> Get Video Components -> Wan Encode exactly; from 81
    to 801 frames the server's peak grows by at most 10 % (the IMAGE path's printed beside it)."""
    base = comfy["base"]
    encode = _workflow("wan21_load_video_to_latent")
    encode["3"]["inputs"] |= {"latent_space": "raw", "tiling": "off", "trim": False}
    encode["4"] = {"class_type": "WanTestSaveTensors", "inputs": {"latent": ["3", 0], "name": "streamed"}}
    image = json.loads(json.dumps(encode))
    image["5"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}}
    image["3"]["inputs"]["images"] = ["5", 0]
    image["4"]["inputs"]["name"] = "through_image"
    peaks = {}
    for frames in (81, 801):
        name = f"control_{frames}.mkv"
        _control_video(base, frames, name)
        for label, graph in (("Load Video -> Wan Encode", encode), ("Load Video -> Get Video Components -> Wan Encode", image)):
            graph["1"]["inputs"]["file"] = name
            result = {}
            peaks[label, frames] = _peak_rss_mb(comfy["pid"], lambda: result.update(entry=_run(comfy, graph, timeout=1800)[1]))
            _ok(result["entry"])
        assert torch.equal(_load(comfy, "streamed")["samples"], _load(comfy, "through_image")["samples"])
        assert _load(comfy, "streamed")["samples"].shape[2] == 1 + (frames - 1) // 4
    assert _flat(peaks, "Load Video -> Wan Encode") <= 1.10


def test_core_load_video_into_export_video_keeps_the_frames_and_the_template_runs(comfy):  # noqa: F811
    base = comfy["base"]
    frames = _control_video(base, 21, "control_21.mkv")
    graph = {"1": {"class_type": "LoadVideo", "inputs": {"file": "control_21.mkv"}},
             "2": {"class_type": "ExportVideo", "inputs": {"images": ["1", 0], "fps": 8, "format": "ffv1-mkv", "quality": 80,
                   "filename_prefix": "reencoded/wan", "save_metadata": True, "pingpong": True}}}  # fmt: skip
    saved = _ok(_run(comfy, graph)[1])["2"]["wan_video"][0]
    out = read_frames(base / "output" / saved["subfolder"] / saved["filename"])
    assert np.array_equal(out, torch.cat([frames, frames[1:-1].flip(0)]).numpy())
    assert (saved["frames"], saved["fps"]) == (40, 16.0)  # the video's own rate, not the widget's
    write_video(torch.rand(9, 48, 80, 3), base / "input" / "control.mp4", 16)
    _ok(_run(comfy, _workflow("wan21_load_video_to_latent"))[1])
    assert next((base / "output" / "latents").glob("wan_control_*.latent")).is_file()


def test_wan_alpha_gives_an_rgba_video_from_one_decode(comfy):  # noqa: F811
    """The Wan-Alpha template (Load Wan VAE pairing the halves by name -> Wan Decode to Video), lossless: its alpha is
    the alpha half's red, its colour the colour half's, each as Wan Decode Latents gives it with the other left out."""
    from media import read_rgba
    from test_wan_alpha import ALPHA, COLOUR, write_pair

    base = comfy["base"]
    write_pair(base / "models" / "vae")
    shutil.copy(base / "models" / "vae" / ALPHA, base / "models" / "vae" / "alpha_half_alone.safetensors")  # loadable alone
    write_latent_file(base / "input" / "wan_alpha_00001_.latent", latents("2.1", (1, 3, 6, 10)))
    graph = _workflow("wan21_alpha_to_video")
    graph["3"]["inputs"] |= {"format": "ffv1-mkv", "latent_space": "raw", "save_latent": False}
    saved = _ok(_run(comfy, graph)[1])["3"]["wan_video"][0]
    assert saved["alpha"] is True
    rgba = read_rgba(base / "output" / saved["subfolder"] / saved["filename"])
    halves = {}
    for name, vae in (("colour", COLOUR), ("alpha", "alpha_half_alone.safetensors")):
        each = _decode_latents("wan_alpha_00001_.latent", f"alpha_{name}")
        each["2"]["inputs"] |= {"vae_name": vae, "alpha_vae_name": "none"}
        del each["5"]
        _ok(_run(comfy, each)[1])
        halves[name] = _load(comfy, f"alpha_{name}")["images"]
    want = torch.cat([halves["colour"], 1.0 - (1.0 - halves["alpha"][..., :1])], dim=-1)
    assert np.array_equal(rgba, (want.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8))
