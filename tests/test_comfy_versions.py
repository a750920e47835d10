"""Every ComfyUI call the pack makes (nodes/comfy_host.py), against stand-ins of ComfyUI 0.3.64, 0.38 and 0.45.

The stand-ins are ComfyUI's modules as far as the pack touches them, with the signatures and behaviour read from
each version's source (docs/compatibility.md has the table and the commits): comfy.model_management,
comfy.utils.ProgressBar, folder_paths, comfy.cli_args, server.PromptServer and comfyui_version. What changed and
matters here:
- 0.38: InterruptProcessingException became a BaseException; ProgressBar throttles plain updates (previews go at
  once); get_annotated_filepath refuses paths that leave their folder; free_memory took more keywords.
- 0.45 (the newest files stored, past 0.38.1: comfy/model_management.py @02b2b388, comfy/cli_args.py @03294572):
  is_oom(e) also takes an AcceleratorError with CUDA's error code 2 and then drops the pending error
  (discard_cuda_async_error); intermediate_dtype() gives IMAGE outputs float16 under --fp16-intermediates;
  --vram-headroom keeps VRAM free beside extra_reserved_memory() (which every version has: 400 MB on Linux, or
  --reserve-vram).
"""

import importlib.util
import os
import sys
import types
import uuid

import pytest
import torch

from reference import latents
from wan_vae.files.latents import read_latent_file

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def standin_modules(version: str, folders: dict) -> tuple[dict[str, types.ModuleType], dict]:
    calls = {"free_memory": [], "progress": [], "notices": [], "interrupted": False, "discarded": 0}
    newer, newest = version != "0.3.64", version == "0.45"

    cli_args = types.ModuleType("comfy.cli_args")
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = type("InterruptProcessingException", (BaseException if newer else Exception,), {})
    mm.vae_device = mm.get_torch_device = mm.vae_offload_device = mm.intermediate_device = lambda: torch.device("cpu")
    mm.vae_dtype = lambda device=None, allowed_dtypes=[]: torch.float32  # noqa: B006 (ComfyUI's signature)
    mm.soft_empty_cache = lambda force=False: None
    mm.get_free_memory = lambda dev=None, torch_free_too=False: 8 << 30
    mm.processing_interrupted = lambda: calls["interrupted"]
    if newer:
        def free_memory(memory_required, device, keep_loaded=[], for_dynamic=False, pins_required=0, ram_required=0):  # noqa: B006
            calls["free_memory"].append((memory_required, device))
    else:
        def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006
            calls["free_memory"].append((memory_required, device))
    mm.free_memory = free_memory
    mm.extra_reserved_memory = lambda: 400 * 1024 * 1024  # EXTRA_RESERVED_VRAM on Linux, in all three
    if newest:
        def is_oom(e):  # model_management.py @02b2b388
            if isinstance(e, torch.cuda.OutOfMemoryError):
                return True
            if isinstance(e, torch.AcceleratorError) and (getattr(e, "error_code", None) == 2 or "out of memory" in str(e).lower()):
                calls["discarded"] += 1  # discard_cuda_async_error()
                return True
            return False

        mm.is_oom = is_oom
        mm.intermediate_dtype = lambda: torch.float16 if cli_args.args.fp16_intermediates else torch.float32

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current, self.sent = total, 0, -1

        def update_absolute(self, value, total=None, preview=None):
            self.total = self.total if total is None else total
            self.current = min(value, self.total)
            # 0.38 drops plain updates closer than 0.5 % (and 100 ms); first, last and previews always go
            if newer and preview is None and 0 <= self.sent and self.current < self.total and \
                    (self.current - self.sent) * 200 < self.total:  # fmt: skip
                return
            self.sent = self.current
            calls["progress"].append((self.current, self.total, preview is not None))

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar

    fp = types.ModuleType("folder_paths")
    fp.get_input_directory = lambda: str(folders["input"])
    fp.get_output_directory = lambda: str(folders["output"])
    fp.get_temp_directory = lambda: str(folders["output"] / "temp")
    fp.get_folder_paths = lambda name: [str(folders["vae"])]
    fp.get_filename_list = lambda name: sorted(os.listdir(folders["vae"]))
    fp.get_full_path_or_raise = lambda name, filename: str(folders["vae"] / filename)

    def get_annotated_filepath(name, default_dir=None):
        path = os.path.abspath(os.path.join(default_dir or str(folders["input"]), name))
        if newer and os.path.commonpath((str(folders["input"]), os.path.realpath(path))) != str(folders["input"]):
            raise ValueError(f"Invalid file path: {name!r}")
        return path

    def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
        subfolder, name = os.path.split(filename_prefix)
        folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((output_dir, os.path.abspath(folder))) != output_dir:
            raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
        os.makedirs(folder, exist_ok=True)
        return folder, name, 1, subfolder, filename_prefix

    fp.get_annotated_filepath, fp.get_save_image_path = get_annotated_filepath, get_save_image_path

    cli_args.args = types.SimpleNamespace(preview_size=512, disable_metadata=False)
    if newest:
        cli_args.args.fp16_intermediates, cli_args.args.vram_headroom = False, 0.0
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(
        send_sync=lambda event, data: calls["notices"].append((event, data))))  # fmt: skip
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils, comfy.cli_args = mm, utils, cli_args
    version_module = types.ModuleType("comfyui_version")
    version_module.__version__ = version
    modules = {"comfy": comfy, "comfy.model_management": mm, "comfy.utils": utils, "comfy.cli_args": cli_args,
               "folder_paths": fp, "server": server, "comfyui_version": version_module}  # fmt: skip
    return modules, calls


@pytest.fixture(params=["0.3.64", "0.38.1", "0.45"])
def comfy(request, folders, monkeypatch):
    """The pack imported afresh inside a stand-in ComfyUI of the given version."""
    (folders["output"] / "temp").mkdir()
    modules, calls = standin_modules(request.param, folders)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    name = f"standin_{request.param.replace('.', '_')}_{uuid.uuid4().hex[:8]}"  # a fresh import for every test
    spec = importlib.util.spec_from_file_location(name, os.path.join(PACK, "__init__.py"))
    pack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, pack)
    spec.loader.exec_module(pack)
    yield types.SimpleNamespace(version=request.param, nodes=pack.NODE_CLASS_MAPPINGS, calls=calls, mm=modules["comfy.model_management"],
                                args=modules["comfy.cli_args"].args, host=sys.modules[f"{name}.nodes.comfy_host"],
                                lib=sys.modules[f"{name}.wan_vae"])  # fmt: skip
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_the_pack_runs_in_both_versions_and_uses_comfyui_s_memory_progress_and_folders(comfy):
    assert comfy.host.IN_COMFYUI and comfy.host.comfyui_version() == comfy.version
    vae = comfy.nodes["LoadWanVAE"]().load("wan_2.1_vae.safetensors", "auto", "auto")[0]
    assert vae.device == torch.device("cpu") and vae.vae.dtype == torch.float32
    images = comfy.nodes["WanDecodeLatents"]().decode(vae, {"samples": latents("2.1", (1, 2, 6, 10))}, "raw", "auto", 512, 64, 1)[0]
    assert images.shape == (5, 48, 80, 3)
    assert comfy.calls["free_memory"] and comfy.calls["free_memory"][0][1] == torch.device("cpu")  # room made first
    assert comfy.calls["progress"][-1][0] == comfy.calls["progress"][-1][1]  # the bar ends full
    assert any(preview for *_, preview in comfy.calls["progress"])  # and showed a frame
    result = comfy.nodes["ExportVideo"]().export(images, 16.0, "h264-mp4", 80, "versions/wan", True, bit_depth=8)
    assert result["ui"]["wan_video"][0]["subfolder"] == "versions"
    with pytest.raises(ValueError, match="outside"):
        comfy.nodes["ExportVideo"]().export(images, 16.0, "h264-mp4", 80, "../escape", True, bit_depth=8)
    with pytest.raises(ValueError, match="absolute paths and '..' are refused"):  # before ComfyUI's own check, either version
        comfy.nodes["LoadWanLatent"]().load("../secret.latent", "")


def test_stop_keeps_the_latent_and_says_so_whatever_the_interrupt_s_base_class(comfy, folders):
    vae = comfy.nodes["LoadWanVAE"]().load("wan_2.1_vae.safetensors", "auto", "auto")[0]
    z = latents("2.1", (1, 6, 6, 10))
    comfy.calls["interrupted"] = True
    with pytest.raises(comfy.mm.InterruptProcessingException):
        comfy.nodes["WanDecodeToVideo"]().decode_to_video(vae, {"samples": z}, "raw", "off", 512, 64, 1, 16.0, "h264-mp4", 80,
                                                          "stopped/wan", True)  # fmt: skip
    kept = sorted(p.name for p in (folders["output"] / "stopped").iterdir())
    assert kept == ["wan_00001_.latent"] and torch.equal(read_latent_file(folders["output"] / "stopped" / kept[0]), z)
    assert [data["text"][:8] for event, data in comfy.calls["notices"] if event == "wan_vae.notice"] == ["Stopped."]


@pytest.mark.parametrize("form", ["oom", "accelerator code 2", "not memory"])
def test_out_of_memory_in_every_form_gets_the_one_retry_with_tiles(comfy, monkeypatch, form):
    """A GPU out of memory is torch.cuda.OutOfMemoryError, or (torch 2.8 on) an AcceleratorError with CUDA's error code 2
    whatever its text: both get the retry with smaller tiles in every version; another error is raised as it is."""
    wan_class = type(comfy.nodes["LoadWanVAE"]().load("wan_2.1_vae.safetensors", "auto", "auto")[0].vae)
    real, seen = wan_class.decode, []

    def failing_once(self, latents, *args, **kwargs):
        seen.append(kwargs["options"])
        if len(seen) == 1:
            if form == "oom":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 7.70 GiB")
            error = torch.AcceleratorError("CUDA error: an error was raised asynchronously")
            error.error_code = 2 if form == "accelerator code 2" else 700
            raise error
        return real(self, latents, *args, **kwargs)

    monkeypatch.setattr(wan_class, "decode", failing_once)
    vae = comfy.nodes["LoadWanVAE"]().load("wan_2.1_vae.safetensors", "auto", "auto")[0]
    z = latents("2.1", (1, 2, 6, 10))
    node = comfy.nodes["WanDecodeLatents"]()
    if form == "not memory":
        with pytest.raises(torch.AcceleratorError):
            node.decode(vae, {"samples": z}, "raw", "off", 512, 64, 1)
        assert len(seen) == 1
        return
    images = node.decode(vae, {"samples": z}, "raw", "off", 512, 64, 1)[0]
    assert images.shape == (5, 48, 80, 3) and [o.tiling for o in seen] == ["off", "on"]
    assert comfy.calls["discarded"] == (1 if comfy.version == "0.45" and form == "accelerator code 2" else 0)  # core's own test


def test_the_auto_plan_leaves_the_vram_comfyui_reserves(comfy):
    gpu = torch.device("cuda", 0)
    headroom = 1.5 if comfy.version == "0.45" else 0.0
    if headroom:
        comfy.args.vram_headroom = headroom  # --vram-headroom 1.5
    reserved = (400 << 20) + int(headroom * 2**30)
    assert comfy.host.reserved_bytes(gpu) == reserved and comfy.host.reserved_bytes(torch.device("cpu")) == 0
    assert comfy.host.make_room(gpu, 2 << 30) == (8 << 30) - reserved
    assert comfy.calls["free_memory"][-1] == ((2 << 30) + reserved, gpu)  # room for the decode beside the reserve
    assert comfy.host.make_room(torch.device("cpu"), 1 << 30) == 8 << 30  # core reserves nothing in RAM either


def test_images_come_in_comfyui_s_intermediate_dtype(comfy):
    vae = comfy.nodes["LoadWanVAE"]().load("wan_2.1_vae.safetensors", "auto", "auto")[0]
    z = latents("2.1", (1, 2, 6, 10))
    decode = comfy.nodes["WanDecodeLatents"]().decode
    full = decode(vae, {"samples": z}, "raw", "off", 512, 64, 1)[0]
    assert full.dtype == torch.float32
    if comfy.version != "0.45":
        return
    comfy.args.fp16_intermediates = True  # --fp16-intermediates
    half = decode(vae, {"samples": z}, "raw", "off", 512, 64, 1)[0]  # the float32 frames, rounded once
    assert half.dtype == torch.float16 and torch.equal(half, full.half())
    result = comfy.nodes["ExportVideo"]().export(half, 16.0, "ffv1-mkv", 80, "half/wan", True, bit_depth=8)
    assert result["ui"]["wan_video"][0]["subfolder"] == "half"  # the other nodes take the half-precision frames
    encode = comfy.nodes["WanEncode"]().encode
    assert torch.equal(encode(vae, half, "raw", "off", 512, 1, False)[0]["samples"],
                       encode(vae, half.float(), "raw", "off", 512, 1, False)[0]["samples"])  # fmt: skip
