"""Opt-in: the pack inside a real ComfyUI, driven through its HTTP API.

    COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=/path/to/its/python] python -m pytest tests/test_real_comfyui.py

ComfyUI runs on the CPU with --base-directory pointing at a temporary folder (models/vae with random-weight
VAEs, custom_nodes with this pack linked in, input, output, user), so the checkout itself is not touched.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch

from media import mp4_metadata, probe
from reference import latents, write_vae_file
from wan_vae.files.latents import write_latent_file

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run against real ComfyUI")
PACK = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-WanVAE"
# COMFYUI_FRONT_END_ROOT: another front end than the pinned one (the `static` folder of a comfyui-frontend-package)
FRONT_END_ARGS = ["--front-end-root", os.environ["COMFYUI_FRONT_END_ROOT"]] if os.environ.get("COMFYUI_FRONT_END_ROOT") else []


# A test-only pack: random frames, zero conditioning, and IMAGE / CONDITIONING / LATENT tensors saved as .safetensors
# in the output folder, so the tests can compare exactly.
PROBE_PACK = """
import os
import torch
import folder_paths
from safetensors.torch import save_file

class WanTestNoise:
    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"frames": ("INT", {"default": 1}), "width": ("INT", {"default": 64}),
                             "height": ("INT", {"default": 64}), "seed": ("INT", {"default": 0})}}

    def make(self, frames, width, height, seed):
        return (torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(seed)),)


class WanTestZeroConditioning:
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        return ([[torch.zeros(1, 1, 4096), {}]],)


class WanTestSaveTensors:
    # an IMAGE, or every tensor of a CONDITIONING's first entry or of a LATENT, as a .safetensors in the output folder
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "probe"})},
                "optional": {"images": ("IMAGE",), "conditioning": ("CONDITIONING",), "latent": ("LATENT",)}}

    def save(self, name, images=None, conditioning=None, latent=None):
        found = {"images": images} if images is not None else dict(conditioning[0][1]) if conditioning is not None else dict(latent)
        tensors = {}
        for key, value in found.items():
            if isinstance(value, torch.Tensor):
                tensors[key] = value.contiguous()
            for i, v in enumerate(value if isinstance(value, list) else []):  # vace_frames, vace_mask: lists
                if isinstance(v, torch.Tensor):
                    tensors[f"{key}.{i}"] = v.contiguous()
        save_file(tensors, os.path.join(folder_paths.get_output_directory(), name + ".safetensors"))
        return {}


NODE_CLASS_MAPPINGS = {"WanTestNoise": WanTestNoise,
                       "WanTestZeroConditioning": WanTestZeroConditioning, "WanTestSaveTensors": WanTestSaveTensors}
"""


def _http(url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _prepare(base: Path) -> None:
    """A --base-directory for ComfyUI: random-weight VAEs, the pack and the test probe pack linked in."""
    for sub in ("models/vae", "custom_nodes", "input", "output", "user"):
        (base / sub).mkdir(parents=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(PACK, target_is_directory=True)
    for version, name in (("2.1", "wan_2.1_vae.safetensors"), ("2.2", "wan2.2_vae.safetensors")):
        write_vae_file(base / "models" / "vae" / name, version)
    write_vae_file(base / "models" / "vae" / "wan_2.1_real_size.safetensors", "2.1", real=True)  # core needs real widths
    write_vae_file(base / "models" / "vae" / "wan_2.1_rgba.safetensors", "2.1", in_channels=4, out_channels=4)
    if os.environ.get("COMFYUI_WAN22_REAL"):  # 1.4 GB: only for the Wan22ImageToVideoLatent test
        write_vae_file(base / "models" / "vae" / "wan2.2_real_size.safetensors", "2.2", real=True)
    if os.environ.get("COMFYUI_WRAPPER"):  # kijai's WanVideoWrapper beside the pack (tests/test_real_wrapper.py)
        (base / "custom_nodes" / "ComfyUI-WanVideoWrapper").symlink_to(Path(os.environ["COMFYUI_WRAPPER"]).resolve(), target_is_directory=True)
    probe = base / "custom_nodes" / "wan_test_probe"
    probe.mkdir()
    (probe / "__init__.py").write_text(PROBE_PACK)


def _start(base: Path) -> tuple[subprocess.Popen, str]:
    """ComfyUI on the CPU on a free port with `base` as its base directory, once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(base / "comfyui.log", "a") as log:
        proc = subprocess.Popen(
            [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--base-directory", str(base), "--disable-auto-launch", *FRONT_END_ARGS],
            cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1", DO_NOT_TRACK="1"),
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        if proc.poll() is not None:
            raise AssertionError((base / "comfyui.log").read_text()[-3000:])
        try:
            if _http(f"{url}/object_info/ExportVideo", timeout=10)[0] == 200:
                return proc, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.time() > deadline:
            _stop(proc)
            raise AssertionError("ComfyUI did not start in 300 s")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    _prepare(base)
    proc, url = _start(base)
    try:
        yield {"url": url, "base": base, "pid": proc.pid}
    finally:
        _stop(proc)


def _run(comfy, workflow, ui_workflow=None, timeout=600):
    body = {"prompt": workflow, "client_id": str(uuid.uuid4())}
    if ui_workflow is not None:
        body["extra_data"] = {"extra_pnginfo": {"workflow": ui_workflow}}
    status, reply = _http(f"{comfy['url']}/prompt", body)
    if status != 200:
        return status, reply
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, history = _http(f"{comfy['url']}/history/{reply['prompt_id']}")
        if history:
            return 200, history[reply["prompt_id"]]
        time.sleep(0.5)
    raise AssertionError("the prompt did not finish")


def test_comfyui_registers_the_pack_s_nodes(comfy):
    _, info = _http(f"{comfy['url']}/object_info")
    ours = {name: node for name, node in info.items() if node["python_module"] == f"custom_nodes.{PACK_NAME}"}
    assert set(ours) == {"LoadWanVAE", "WanDecodeLatents", "ExportVideo", "LoadWanLatent", "WanDecodeToVideo", "WanEncode",
                         "WanVAEForCoreNodes", "WanVAEForWanVideoWrapper", "WanDecodeAsVideo"}
    assert ours["ExportVideo"]["output_node"] and ours["WanDecodeLatents"]["category"] == "Wan VAE"
    assert ours["LoadWanVAE"]["input"]["required"]["vae_name"][0] == ["wan2.2_vae.safetensors", "wan_2.1_real_size.safetensors",
                                                                    "wan_2.1_rgba.safetensors", "wan_2.1_vae.safetensors"]
    assert ours["WanDecodeLatents"]["input"]["required"]["vae"][0] == "WAN_VAE,VAE,WANVAE"
    log = (comfy["base"] / "comfyui.log").read_text()
    assert "IMPORT FAILED" not in "\n".join(line for line in log.splitlines() if PACK_NAME in line)
    _, extensions = _http(f"{comfy['url']}/extensions")
    assert f"/extensions/{PACK_NAME}/export_video_preview.js" in extensions


@pytest.mark.parametrize("stem,version", [("wan21_latent_to_video", "2.1"), ("wan22_5b_latent_to_video", "2.2")])
def test_the_example_workflows_run_and_save_a_video_with_the_workflow(comfy, stem, version):
    workflow = json.loads((PACK / "tests" / "workflows" / f"{stem}.api.json").read_text())
    ui_workflow = json.loads((PACK / "example_workflows" / f"{stem}.json").read_text())
    write_latent_file(comfy["base"] / "input" / workflow["1"]["inputs"]["latent"], latents(version, (1, 3, 6, 10)))
    status, entry = _run(comfy, workflow, ui_workflow)
    assert status == 200 and entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["4"]["wan_video"][0]
    path = comfy["base"] / "output" / saved["subfolder"] / saved["filename"]
    assert probe(path)["frames"] == 9 and saved["frames"] == 9
    assert set(entry["outputs"]["4"]) == {"wan_video"}
    embedded = mp4_metadata(path)
    assert embedded["workflow"] == ui_workflow
    # ComfyUI hands the node its own copy of the prompt (with e.g. an is_changed hash added to LoadLatent).
    assert {nid: (n["class_type"], n["inputs"]) for nid, n in embedded["prompt"].items()} == {
        nid: (n["class_type"], n["inputs"]) for nid, n in workflow.items()}  # fmt: skip


def test_bad_widget_values_are_refused_by_comfyui_validation(comfy):
    workflow = json.loads((PACK / "tests" / "workflows" / "wan21_latent_to_video.api.json").read_text())
    workflow["3"]["inputs"]["tile_size"] = 10
    workflow["4"]["inputs"]["format"] = "avi"
    status, reply = _run(comfy, workflow)
    assert status == 400
    errors = {(nid, e["type"]) for nid, node in reply["node_errors"].items() for e in node["errors"]}
    assert {("3", "value_smaller_than_min"), ("4", "value_not_in_list")} <= errors


def test_a_latent_for_the_other_vae_fails_with_the_library_message(comfy):
    workflow = json.loads((PACK / "tests" / "workflows" / "wan21_latent_to_video.api.json").read_text())
    write_latent_file(comfy["base"] / "input" / "wrong.latent", latents("2.2", (1, 2, 6, 10)))
    workflow["1"]["inputs"]["latent"] = "wrong.latent"
    status, entry = _run(comfy, workflow)
    assert entry["status"]["status_str"] == "error"
    messages = json.dumps(entry["status"]["messages"])
    assert "Wan 2.2 TI2V-5B latents need the Wan 2.2 VAE" in messages


def test_wan_decode_to_video_saves_the_video_and_the_latent(comfy):
    workflow = json.loads((PACK / "tests" / "workflows" / "wan21_long_video.api.json").read_text())
    write_latent_file(comfy["base"] / "input" / workflow["1"]["inputs"]["latent"], latents("2.1", (1, 3, 6, 10)))
    status, entry = _run(comfy, workflow)
    assert status == 200 and entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["3"]["wan_video"][0]
    folder = comfy["base"] / "output" / saved["subfolder"]
    assert probe(folder / saved["filename"])["frames"] == 9 == saved["frames"]
    assert (folder / saved["latent"]).is_file() and saved["latent"] == saved["filename"].replace(".mp4", ".latent")


def _peak_rss_mb(pid: int, run) -> float:
    """The server's peak resident memory while `run()` runs (the kernel's high-water mark, reset first)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    run()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's peak memory from /proc")
def test_long_videos_decode_to_the_file_in_flat_memory(comfy):
    """64 and 512 latent frames (253 and 2,045 frames) at 64x64 through Wan Decode to Video: the server's peak grows
    by at most 10 %; the same 2,045 frames through Wan Decode Latents -> Export Video are printed beside it."""
    stream = json.loads((PACK / "tests" / "workflows" / "wan21_long_video.api.json").read_text())
    stream["3"]["inputs"] |= {"tiling": "off", "save_latent": False}
    whole = json.loads((PACK / "tests" / "workflows" / "wan21_latent_to_video.api.json").read_text())
    whole["3"]["inputs"]["tiling"] = "off"
    peaks = {}
    for t in (64, 512):
        name = f"long_{t}.latent"
        write_latent_file(comfy["base"] / "input" / name, latents("2.1", (1, t, 8, 8), seed=t))
        for label, workflow, out in (("Wan Decode to Video", stream, "3"), ("Wan Decode Latents -> Export Video", whole, "4")):
            if t == 64 and out == "4":
                continue
            workflow["1"]["inputs"]["latent"] = name
            result = {}
            peaks[label, t] = _peak_rss_mb(comfy["pid"], lambda: result.update(entry=_run(comfy, workflow, timeout=1800)[1]))
            entry = result["entry"]
            assert entry["status"]["status_str"] == "success", entry["status"]
            saved = entry["outputs"][out]["wan_video"][0]
            assert probe(comfy["base"] / "output" / saved["subfolder"] / saved["filename"])["frames"] == 1 + 4 * (t - 1)
    print("\n| graph | latent frames | frames | server peak RSS MB |\n|---|---|---|---|")
    for (label, t), mb in peaks.items():
        print(f"| {label} | {t} | {1 + 4 * (t - 1)} | {mb:.0f} |")
    growth = peaks["Wan Decode to Video", 512] / peaks["Wan Decode to Video", 64]
    print(f"Wan Decode to Video, 512 vs 64 latent frames: {growth:.3f}x")
    assert growth <= 1.10


def _core_vs_ours_graphs(latent: str) -> dict[str, dict]:
    load = {"1": {"class_type": "LoadLatent", "inputs": {"latent": latent}}}
    ours = {"class_type": "WanDecodeLatents", "inputs": {"samples": ["1", 0], "latent_space": "raw", "tiling": "off",
            "tile_size": 512, "tile_overlap": 64, "frames_per_chunk": 1}}  # fmt: skip
    core_vae = {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_real_size.safetensors"}}
    wan_vae = {"class_type": "LoadWanVAE", "inputs": {"vae_name": "wan_2.1_real_size.safetensors", "precision": "fp32", "device": "auto"}}

    def save(name):
        return {"class_type": "WanTestSaveTensors", "inputs": {"images": ["3", 0], "name": name}}

    return {
        "core Load VAE -> Wan Decode Latents": load | {"2": core_vae, "3": ours | {"inputs": ours["inputs"] | {"vae": ["2", 0]}},
                                                       "4": save("core_vae_ours")},
        "Load Wan VAE -> Wan Decode Latents": load | {"2": wan_vae, "3": ours | {"inputs": ours["inputs"] | {"vae": ["2", 0]}},
                                                      "4": save("ours")},
        "core Load VAE -> core VAE Decode": load | {"2": core_vae, "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
                                                    "4": save("core")},
    }  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's peak memory from /proc")
def test_core_load_vae_feeds_our_decode_and_core_vae_decode_agrees(comfy):
    """The official-style graph (core Load VAE -> our decode) gives Load Wan VAE's frames; core VAE Decode agrees
    within 1e-5 (real-size Wan 2.1 layout, random weights, 5 frames at 240x416, CPU fp32). Prints time and memory."""
    from safetensors.torch import load_file

    write_latent_file(comfy["base"] / "input" / "core_vs_ours.latent", latents("2.1", (1, 2, 30, 52)))
    figures = {}
    for label, workflow in _core_vs_ours_graphs("core_vs_ours.latent").items():
        result = {}
        before = int(next(line for line in Path(f"/proc/{comfy['pid']}/status").read_text().splitlines()
                          if line.startswith("VmRSS")).split()[1]) / 1024  # fmt: skip
        peak = _peak_rss_mb(comfy["pid"], lambda: result.update(entry=_run(comfy, workflow, timeout=1800)[1]))
        entry = result["entry"]
        assert entry["status"]["status_str"] == "success", entry["status"]
        stamps = {m[0]: m[1]["timestamp"] for m in entry["status"]["messages"]}
        figures[label] = ((stamps["execution_success"] - stamps["execution_start"]) / 1000, before, peak)
    out = {name: load_file(str(comfy["base"] / "output" / f"{name}.safetensors"))["images"] for name in ("core_vae_ours", "ours", "core")}
    assert out["ours"].shape == (5, 240, 416, 3)
    assert torch.equal(out["core_vae_ours"], out["ours"])
    difference = (out["core"] - out["ours"]).abs().max().item()
    print("\n| graph | time s | RSS before MB | peak RSS MB |\n|---|---|---|---|")
    for label, (seconds, before, peak) in figures.items():
        print(f"| {label} | {seconds:.1f} | {before:.0f} | {peak:.0f} |")
    print(f"core VAE Decode vs Wan Decode Latents: max abs {difference:.2e}")
    assert difference <= 1e-5


def test_stop_during_wan_decode_to_video_ends_quietly_and_keeps_the_latent(comfy):
    """Stop (POST /interrupt) mid-decode: the run ends as interrupted (no execution error, so no error dialog),
    no video is left, and the latent saved before decoding is there."""
    workflow = json.loads((PACK / "tests" / "workflows" / "wan21_long_video.api.json").read_text())
    write_latent_file(comfy["base"] / "input" / "stop.latent", latents("2.1", (1, 128, 8, 8), seed=3))
    workflow["1"]["inputs"]["latent"] = "stop.latent"
    workflow["3"]["inputs"]["filename_prefix"] = "stopped/wan"
    status, reply = _http(f"{comfy['url']}/prompt", {"prompt": workflow, "client_id": str(uuid.uuid4())})
    assert status == 200
    folder = comfy["base"] / "output" / "stopped"
    deadline = time.time() + 300
    while not list(folder.glob(".*.wanvae-partial.*")):  # decoding has started: the partial video exists
        assert time.time() < deadline, "the decode did not start"
        time.sleep(0.2)
    time.sleep(2)
    assert _http(f"{comfy['url']}/interrupt", {})[0] == 200
    while not (history := _http(f"{comfy['url']}/history/{reply['prompt_id']}")[1]):
        assert time.time() < deadline, "the run did not end"
        time.sleep(0.5)
    kinds = [m[0] for m in history[reply["prompt_id"]]["status"]["messages"]]
    assert "execution_interrupted" in kinds and "execution_error" not in kinds, kinds
    assert sorted(p.name for p in folder.iterdir()) == ["wan_00001_.latent"]


# ------------------------------------------------------------------------------------------ Wan VAE for Core Nodes


def _through(vae: str, tiling="on", tile_size=128) -> dict:
    """Graph nodes "1" (core Load VAE) and, when `tiling` is given, "2" (Wan VAE for Core Nodes after it)."""
    nodes = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": vae}}}
    if tiling:
        nodes["2"] = {"class_type": "WanVAEForCoreNodes", "inputs": {"vae": ["1", 0], "tiling": tiling, "tile_size": tile_size,
                                                                    "frames_per_chunk": 1}}  # fmt: skip
    return nodes


def _core_nodes_graph(tag: str, tiling, width=320, height=192, length=9) -> dict:
    """WanImageToVideo (start image) and WanVaceToVideo (control video and reference image), VAE Decode and
    VAE Decode (Tiled) of a latent, each result saved as `<what>_<tag>.safetensors`."""
    vae = ["2" if tiling else "1", 0]
    nodes = _through("wan_2.1_real_size.safetensors", tiling)
    nodes |= {
        "3": {"class_type": "WanTestZeroConditioning", "inputs": {}},
        "4": {"class_type": "WanTestNoise", "inputs": {"frames": 1, "width": width, "height": height, "seed": 1}},
        "5": {"class_type": "WanTestNoise", "inputs": {"frames": length, "width": width, "height": height, "seed": 2}},
        "6": {"class_type": "WanImageToVideo", "inputs": {"positive": ["3", 0], "negative": ["3", 0], "vae": vae, "width": width,
              "height": height, "length": length, "batch_size": 1, "start_image": ["4", 0]}},
        "7": {"class_type": "WanTestSaveTensors", "inputs": {"name": f"i2v_{tag}", "conditioning": ["6", 0]}},
        "8": {"class_type": "WanVaceToVideo", "inputs": {"positive": ["3", 0], "negative": ["3", 0], "vae": vae, "width": width,
              "height": height, "length": length, "batch_size": 1, "strength": 1.0, "control_video": ["5", 0],
              "reference_image": ["4", 0]}},
        "9": {"class_type": "WanTestSaveTensors", "inputs": {"name": f"vace_{tag}", "conditioning": ["8", 0]}},
        "10": {"class_type": "LoadLatent", "inputs": {"latent": "core_nodes.latent"}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": vae}},
        "12": {"class_type": "WanTestSaveTensors", "inputs": {"images": ["11", 0], "name": f"decode_{tag}"}},
        "13": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["10", 0], "vae": vae, "tile_size": 128, "overlap": 32,
               "temporal_size": 64, "temporal_overlap": 8}},
        "14": {"class_type": "WanTestSaveTensors", "inputs": {"images": ["13", 0], "name": f"decode_tiled_{tag}"}},
    }  # fmt: skip
    return nodes


def _load(comfy, name):
    from safetensors.torch import load_file

    return load_file(str(comfy["base"] / "output" / f"{name}.safetensors"))


def _figures(comfy, workflow):
    """(seconds, server peak RSS MB) of one run, which must succeed."""
    result = {}
    peak = _peak_rss_mb(comfy["pid"], lambda: result.update(entry=_run(comfy, workflow, timeout=1800)[1]))
    entry = result["entry"]
    assert entry["status"]["status_str"] == "success", entry["status"]
    stamps = {m[0]: m[1]["timestamp"] for m in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000, peak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's peak memory from /proc")
def test_core_nodes_through_wan_vae_for_core_nodes_give_core_s_untiled_results(comfy):
    """Load VAE -> Wan VAE for Core Nodes (tiles of 128 px) -> WanImageToVideo, WanVaceToVideo, VAE Decode and
    VAE Decode (Tiled): the latents and frames of the unadapted VAE (core's untiled path) within 1e-5, and VAE Decode's
    frames equal to Wan Decode Latents'."""
    write_latent_file(comfy["base"] / "input" / "core_nodes.latent", latents("2.1", (1, 2, 12, 20)))
    core = _core_nodes_graph("core", None)
    del core["13"], core["14"]  # core's own tiled decode blends tiles: not the reference
    _figures(comfy, core)
    ours = _core_nodes_graph("ours", "on")
    ours["15"] = {"class_type": "WanDecodeLatents", "inputs": {"vae": ["1", 0], "samples": ["10", 0], "latent_space": "raw",
                  "tiling": "off", "tile_size": 512, "tile_overlap": 64, "frames_per_chunk": 1}}  # fmt: skip
    ours["16"] = {"class_type": "WanTestSaveTensors", "inputs": {"images": ["15", 0], "name": "decode_wan"}}
    _figures(comfy, ours)
    worst = {}
    for what in ("i2v", "vace"):
        theirs, mine = _load(comfy, f"{what}_core"), _load(comfy, f"{what}_ours")
        assert set(theirs) == set(mine) and theirs
        for key in theirs:
            assert theirs[key].shape == mine[key].shape and theirs[key].dtype == mine[key].dtype, key
            worst[f"{what} {key}"] = (theirs[key] - mine[key]).abs().max().item()
    reference = _load(comfy, "decode_core")["images"]
    assert reference.shape == (5, 96, 160, 3)
    for name in ("decode_ours", "decode_tiled_ours", "decode_wan"):
        worst[name] = (_load(comfy, name)["images"] - reference).abs().max().item()
    print("\n" + "\n".join(f"{k}: max abs {v:.2e}" for k, v in worst.items()))
    assert max(worst.values()) <= 1e-5
    assert torch.equal(_load(comfy, "decode_ours")["images"], _load(comfy, "decode_wan")["images"])


def test_wan_alpha_through_the_node_gives_core_vae_decode_rgba_and_qwen_image_2_1_is_refused_here(comfy):
    """Load Wan VAE pairing Wan-Alpha's halves (real widths: core builds only those) -> Wan VAE for Core Nodes -> core
    VAE Decode: the RGBA frames of Wan Decode Latents. Qwen-Image 2.1's VAE, which this core cannot hold, is refused
    at the node saying so."""
    from safetensors.torch import save_file

    from test_wan_alpha import COLOUR, write_pair
    from wan_vae.files.config import QWEN_IMAGE21
    from wan_vae.network.model import WanVAEModel

    base = comfy["base"]
    write_pair(base / "models" / "vae", real=True)
    write_latent_file(base / "input" / "alpha_core.latent", latents("2.1", (1, 2, 6, 10)))
    graph = {
        "1": {"class_type": "LoadWanVAE", "inputs": {"vae_name": COLOUR, "precision": "auto", "device": "auto", "alpha_vae_name": "auto"}},
        "2": {"class_type": "WanVAEForCoreNodes", "inputs": {"vae": ["1", 0], "tiling": "on", "tile_size": 128, "frames_per_chunk": 1}},
        "3": {"class_type": "LoadLatent", "inputs": {"latent": "alpha_core.latent"}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["2", 0]}},
        "5": {"class_type": "WanTestSaveTensors", "inputs": {"images": ["4", 0], "name": "alpha_core"}},
        "6": {"class_type": "WanDecodeLatents", "inputs": {"vae": ["1", 0], "samples": ["3", 0], "latent_space": "raw",
              "tiling": "off", "tile_size": 512, "tile_overlap": 64, "frames_per_chunk": 1}},
        "7": {"class_type": "WanTestSaveTensors", "inputs": {"images": ["6", 0], "name": "alpha_wan"}},
    }  # fmt: skip
    _figures(comfy, graph)
    core, ours = _load(comfy, "alpha_core")["images"], _load(comfy, "alpha_wan")["images"]
    assert core.shape == (5, 48, 80, 4) and (core - ours).abs().max() <= 1e-5

    model = WanVAEModel(QWEN_IMAGE21.with_widths(16, 24))
    save_file(model.state_dict(), str(base / "models" / "vae" / "qwen_image_2.1_vae_bf16.safetensors"))
    write_latent_file(base / "input" / "qi21.latent", torch.randn(1, 64, 5, 6))
    graph["1"]["inputs"] |= {"vae_name": "qwen_image_2.1_vae_bf16.safetensors"}
    graph["3"]["inputs"]["latent"] = "qi21.latent"
    del graph["6"], graph["7"]
    _, entry = _run(comfy, graph)
    assert entry["status"]["status_str"] == "error"
    assert "has no Qwen-Image 2.1 VAE of its own" in json.dumps(entry["status"]["messages"])


@pytest.mark.skipif(not os.environ.get("COMFYUI_WAN22_REAL"), reason="set COMFYUI_WAN22_REAL=1 (writes a 1.4 GB Wan 2.2 VAE)")
def test_wan22_image_to_video_latent_through_the_node_gives_core_s_latent(comfy):
    def graph(tiling):
        vae = ["2" if tiling else "1", 0]
        return _through("wan2.2_real_size.safetensors", tiling) | {
            "3": {"class_type": "WanTestNoise", "inputs": {"frames": 1, "width": 160, "height": 96, "seed": 5}},
            "4": {"class_type": "Wan22ImageToVideoLatent", "inputs": {"vae": vae, "width": 160, "height": 96, "length": 9,
                  "batch_size": 1, "start_image": ["3", 0]}},
            "5": {"class_type": "WanTestSaveTensors", "inputs": {"name": f"wan22_{tiling or 'core'}", "latent": ["4", 0]}},
        }  # fmt: skip

    _figures(comfy, graph(None))
    _figures(comfy, graph("on"))
    theirs, mine = _load(comfy, "wan22_core"), _load(comfy, "wan22_on")
    assert set(theirs) == set(mine) == {"samples", "noise_mask"}
    difference = (theirs["samples"] - mine["samples"]).abs().max().item()
    print(f"\nWan22ImageToVideoLatent: max abs {difference:.2e}")
    assert difference <= 1e-5 and torch.equal(theirs["noise_mask"], mine["noise_mask"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's peak memory from /proc")
def test_wan_image_to_video_at_832x480_core_against_the_node(comfy):
    """Server time and peak RSS of WanImageToVideo (9 frames at 832x480, real-size Wan 2.1, CPU fp32) with core's
    VAE and through Wan VAE for Core Nodes (auto, and tiles of 256 px), each with the VAE already loaded."""
    def graph(tiling, tile_size=256):
        vae = ["2" if tiling else "1", 0]
        return _through("wan_2.1_real_size.safetensors", tiling, tile_size) | {
            "3": {"class_type": "WanTestZeroConditioning", "inputs": {}},
            "4": {"class_type": "WanTestNoise", "inputs": {"frames": 1, "width": 832, "height": 480, "seed": 7}},
            "6": {"class_type": "WanImageToVideo", "inputs": {"positive": ["3", 0], "negative": ["3", 0], "vae": vae, "width": 832,
                  "height": 480, "length": 9, "batch_size": 1, "start_image": ["4", 0]}},
            "7": {"class_type": "WanTestSaveTensors", "inputs": {"name": f"i2v832_{tiling or 'core'}_{tile_size}", "conditioning": ["6", 0]}},
        }  # fmt: skip

    warm = graph(None)
    warm["4"]["inputs"] |= {"width": 64, "height": 64}
    warm["6"]["inputs"] |= {"width": 64, "height": 64}
    _figures(comfy, warm)  # the VAE loaded once, so no row pays for reading it
    rows = {"core Load VAE (core's encode)": _figures(comfy, graph(None)),
            "-> Wan VAE for Core Nodes, tiling auto": _figures(comfy, graph("auto")),
            "-> Wan VAE for Core Nodes, 256 px tiles": _figures(comfy, graph("on"))}
    reference = _load(comfy, "i2v832_core_256")["concat_latent_image"]
    differences = [(_load(comfy, f"i2v832_{t}_256")["concat_latent_image"] - reference).abs().max().item() for t in ("auto", "on")]
    print("\n| WanImageToVideo 832x480, 9 frames | time s | server peak RSS MB |\n|---|---|---|")
    for label, (seconds, peak) in rows.items():
        print(f"| {label} | {seconds:.1f} | {peak:.0f} |")
    print(f"max abs vs core: auto {differences[0]:.2e}, 256 px {differences[1]:.2e}")
    assert max(differences) <= 1e-5


# ------------------------------------------------------------------------------------------ crash leftovers


def test_a_server_killed_mid_decode_leaves_a_partial_that_the_next_start_removes(tmp_path):
    """SIGKILL in the middle of Wan Decode to Video: the hidden partial stays behind (nothing can run in a killed
    process); the next ComfyUI start removes it (the pack's load-time sweep), and the latent saved before decoding and
    an earlier video are untouched."""
    import hashlib

    _prepare(tmp_path)
    workflow = json.loads((PACK / "tests" / "workflows" / "wan21_long_video.api.json").read_text())
    proc, url = _start(tmp_path)
    try:
        comfy = {"url": url, "base": tmp_path}
        write_latent_file(tmp_path / "input" / "short.latent", latents("2.1", (1, 3, 6, 10)))
        workflow["1"]["inputs"]["latent"] = "short.latent"
        workflow["3"]["inputs"]["filename_prefix"] = "crash/wan"
        status, entry = _run(comfy, workflow)
        assert entry["status"]["status_str"] == "success", entry["status"]
        folder = tmp_path / "output" / "crash"
        earlier = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        assert sorted(earlier) == ["wan_00001_.latent", "wan_00001_.mp4"]

        write_latent_file(tmp_path / "input" / "long.latent", latents("2.1", (1, 256, 8, 8), seed=5))
        workflow["1"]["inputs"]["latent"] = "long.latent"
        assert _http(f"{url}/prompt", {"prompt": workflow, "client_id": str(uuid.uuid4())})[0] == 200
        deadline = time.time() + 300
        while not (partials := list(folder.glob(".wan_00002_.mp4.*.wanvae-partial.*"))):  # the video's, not the latent's
            assert time.time() < deadline, "the decode did not start"
            time.sleep(0.2)
        time.sleep(1)
        proc.kill()  # SIGKILL: no cleanup can run
        proc.wait(30)
        assert [p for p in partials if p.exists()], "the killed writer's partial should still be there"
        kept = folder / "wan_00002_.latent"
        assert kept.is_file()
        kept_hash = hashlib.sha256(kept.read_bytes()).hexdigest()
    finally:
        if proc.poll() is None:
            proc.kill()

    proc, url = _start(tmp_path)
    try:
        deadline = time.time() + 60  # the sweep runs in the background once the pack is loaded
        while any(p.exists() for p in partials):
            assert time.time() < deadline, f"stale partial not removed: {partials}"
            time.sleep(0.5)
        now = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        assert now == {**earlier, "wan_00002_.latent": kept_hash}, now
        print(f"\nkilled mid-decode; partial {partials[0].name} removed at the next start; {sorted(now)} untouched")
    finally:
        _stop(proc)
