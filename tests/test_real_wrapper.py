"""Opt-in: kijai's ComfyUI-WanVideoWrapper and this pack in one real ComfyUI, with real-size random Wan 2.1 weights.

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=... COMFYUI_WRAPPER=/path/to/ComfyUI-WanVideoWrapper \\
        python -m pytest tests/test_real_wrapper.py -s

The wrapper's requirements must be installed in ComfyUI's Python. Checked with the wrapper's fetchable snapshot
(1.0.6, which has the Wan 2.1 VAE only: its WanVideoVAE38 for Wan 2.2 came later). With -s it prints the
measured table (README, docs/wrapper.md).
"""

import os
import time

import pytest
import torch
from safetensors.torch import load_file

import test_real_comfyui as real
from reference import latents
from wan_vae.files.config import WAN21
from wan_vae.files.latents import write_latent_file

WRAPPER = os.environ.get("COMFYUI_WRAPPER")
pytestmark = pytest.mark.skipif(not (real.COMFYUI and WRAPPER), reason="set COMFYUI_PATH and COMFYUI_WRAPPER to run beside the wrapper")
VAE = "wan_2.1_real_size.safetensors"


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_wrapper")
    real._prepare(base)  # links the wrapper too (COMFYUI_WRAPPER)
    proc, url = real._start(base)
    try:
        yield {"url": url, "base": base, "pid": proc.pid}
    finally:
        real._stop(proc)


def normalized(raw: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, -1, 1, 1, 1) for v in (WAN21.latents_mean, WAN21.latents_std))
    return (raw - mean) / std


def run(comfy, workflow: dict) -> dict:
    status, entry = real._run(comfy, workflow, timeout=1800)
    assert status == 200 and entry["status"]["status_str"] == "success", (status, entry.get("status", entry))
    return entry


def saved(comfy, name: str) -> torch.Tensor:
    return load_file(str(comfy["base"] / "output" / f"{name}.safetensors"))["images"]


def graph(latent: str, *nodes: dict) -> dict:
    """Load Latent (1), WanVideo VAE Loader (2), Load Wan VAE (3), then `nodes` from id 4 on."""
    out = {"1": {"class_type": "LoadLatent", "inputs": {"latent": latent}},
           "2": {"class_type": "WanVideoVAELoader", "inputs": {"model_name": VAE, "precision": "fp32"}},
           "3": {"class_type": "LoadWanVAE", "inputs": {"vae_name": VAE, "precision": "fp32", "device": "cpu"}}}  # fmt: skip
    return out | {str(4 + i): node for i, node in enumerate(nodes)}


def save(name: str, images) -> dict:
    return {"class_type": "WanTestSaveTensors", "inputs": {"name": name, "images": images}}


def ours(vae, tiling="off", tile_size=512, space="auto") -> dict:
    return {"class_type": "WanDecodeLatents", "inputs": {"vae": vae, "samples": ["1", 0], "latent_space": space, "tiling": tiling,
                                                         "tile_size": tile_size, "tile_overlap": 64, "frames_per_chunk": 1}}  # fmt: skip


def test_the_wrapper_s_vae_in_our_nodes_gives_load_wan_vae_s_frames(comfy):
    write_latent_file(comfy["base"] / "input" / "wrapped.latent", normalized(latents("2.1", (1, 3, 13, 17), seed=1)))
    run(comfy, graph("wrapped.latent", ours(["2", 0]), save("wrapper_vae", ["4", 0]), ours(["3", 0], space="normalized"),
                     save("our_vae", ["6", 0]),
                     {"class_type": "WanDecodeToVideo", "inputs": ours(["2", 0])["inputs"] | {
                         "fps": 16.0, "format": "ffv1-mkv", "quality": 80, "filename_prefix": "wrapper/wan", "save_metadata": True}}))  # fmt: skip
    a, b = saved(comfy, "wrapper_vae"), saved(comfy, "our_vae")
    assert a.shape == (9, 104, 136, 3) and torch.equal(a, b)  # right colours with the defaults: latent_space auto
    from media import read_frames

    video = read_frames(next((comfy["base"] / "output" / "wrapper").glob("wan_*.mkv")))
    assert (abs(video.astype(int) - (a.numpy() * 255).round()) <= 1).all()


def test_wan_video_decode_and_encode_through_our_node_give_our_untiled_results(comfy):
    z = normalized(latents("2.1", (1, 2, 72, 72), seed=2))  # 576x576: the wrapper's 1.0.6 tiles are in latent cells, >= 64
    write_latent_file(comfy["base"] / "input" / "big.latent", z)
    exact = {"class_type": "WanVAEForWanVideoWrapper", "inputs": {"vae": ["2", 0], "tiling": "off", "tile_size": 512,
                                                                    "frames_per_chunk": 1}}  # fmt: skip
    tiles = {"enable_vae_tiling": True, "tile_x": 64, "tile_y": 64, "tile_stride_x": 32, "tile_stride_y": 32}
    results = {}
    for label, vae in (("wrapper's own tiles", ["2", 0]), ("through Wan VAE for WanVideoWrapper", ["4", 0])):
        workflow = graph("big.latent", exact, {"class_type": "WanVideoDecode", "inputs": {"vae": vae, "samples": ["1", 0], **tiles}},
                         save("decoded", ["5", 0]))  # fmt: skip
        results[label] = measure(comfy, workflow, "decoded")
    results["ours untiled"] = measure(comfy, graph("big.latent", ours(["3", 0], space="normalized"), save("decoded", ["4", 0])), "decoded")
    untiled = results["ours untiled"][0] * 2 - 1
    reference = (untiled - untiled.min()) / (untiled.max() - untiled.min())  # WanVideoDecode 1.0.6 always stretches min-max
    print("\n| decode, 576x576, 5 frames, real-size Wan 2.1, CPU fp32 | time s | server peak RSS MB | max abs vs untiled (after min-max) |")
    print("|---|---|---|---|")
    for label, (frames, seconds, peak) in results.items():
        difference = (frames - (reference if label != "ours untiled" else frames)).abs().max().item()
        print(f"| {label} | {seconds:.1f} | {peak:.0f} | {difference:.1e} |")
    assert (results["through Wan VAE for WanVideoWrapper"][0] - reference).abs().max() <= 1e-5
    assert (results["wrapper's own tiles"][0] - reference).abs().max() > 1e-3  # its seams

    image = torch.rand(9, 104, 136, 3, generator=torch.Generator().manual_seed(3))
    from safetensors.torch import save_file

    save_file({"images": image}, str(comfy["base"] / "input" / "frames.safetensors"))
    noise = {"class_type": "WanTestNoise", "inputs": {"frames": 9, "width": 136, "height": 104, "seed": 3}}
    encode = {"class_type": "WanVideoEncode", "inputs": {"vae": ["4", 0], "image": ["5", 0], "enable_vae_tiling": True, "tile_x": 64,
                                                         "tile_y": 64, "tile_stride_x": 32, "tile_stride_y": 32}}  # fmt: skip
    mine = {"class_type": "WanEncode", "inputs": {"vae": ["3", 0], "images": ["5", 0], "latent_space": "normalized", "tiling": "off",
                                                  "tile_size": 512, "frames_per_chunk": 1, "trim": False}}  # fmt: skip
    run(comfy, graph("big.latent", exact, noise, encode, mine,
                     {"class_type": "WanTestSaveTensors", "inputs": {"name": "theirs", "latent": ["6", 0]}},
                     {"class_type": "WanTestSaveTensors", "inputs": {"name": "mine", "latent": ["7", 0]}}))  # fmt: skip
    a = load_file(str(comfy["base"] / "output" / "theirs.safetensors"))["samples"]
    b = load_file(str(comfy["base"] / "output" / "mine.safetensors"))["samples"]
    assert a.shape == b.shape == (1, 16, 3, 13, 17) and (a.float() - b.float()).abs().max() <= 1e-5


def measure(comfy, workflow: dict, name: str) -> tuple[torch.Tensor, float, float]:
    box = {}

    def go():
        start = time.perf_counter()
        run(comfy, workflow)
        box["seconds"] = time.perf_counter() - start

    peak = real._peak_rss_mb(comfy["pid"], go)
    return saved(comfy, name), box["seconds"], peak
