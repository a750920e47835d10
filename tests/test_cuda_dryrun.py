"""Opt-in: every GPU path on a fake CUDA device, no GPU needed, and the GPU hygiene the CPU cannot show.

    ~/comfy-harness/venv/bin/python -m pytest tests/test_cuda_dryrun.py -s      # a CUDA build of torch

Under `FakeTensorMode` tensors carry shapes, dtypes and devices but no values; a tensor left on the wrong device raises
`FakeTensorDeviceMismatchError` as a GPU would. What fake tensors need is here, not in the pack: CUDA queries stubbed
(two GPUs with 40 GiB free), `nn.Module.to` redone (fake parameters cannot be swapped by `Module._apply`), the value
checks on inputs skipped (they read data), several devices' worker threads run inline (a fake mode is thread-local),
torch.distributed's send and receive recorded. `HostSyncs` counts, per progress step (a chunk of a tile), what would
make the host wait for the GPU or move data: reads of GPU values, device-to-host copies, weights moved between devices.
"""

from __future__ import annotations

import collections
import sys
import types
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(torch.version.cuda is None, reason=(
    f"needs a CUDA build of torch (this is {torch.__version__}, CPU-only, which refuses device='cuda'): run it with the "
    "real-ComfyUI venv's python (torch 2.14.1+cu130), no GPU needed"))  # fmt: skip

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_cost import fake_to  # noqa: E402  (nn.Module.to for fake tensors, shared with the cost model)
from wan_vae.files import config  # noqa: E402
from wan_vae.run import encode, inputs, multidevice  # noqa: E402
from wan_vae.network.model import WanVAEModel, set_precision  # noqa: E402
from wan_vae.vae import WanVAE  # noqa: E402

aten = torch.ops.aten
GiB = 2**30


class HostSyncs(TorchDispatchMode):
    """Counts reads of GPU values (.item(), bool(), .tolist()), device-to-host copies and device changes of weights,
    in the window between `mark()` calls; a read gets a harmless answer (0) so the run goes on."""

    def __init__(self, weight_shapes: set) -> None:
        super().__init__()
        self.weight_shapes, self.now, self.steps = weight_shapes, collections.Counter(), []

    def mark(self) -> None:
        self.steps.append(self.now)
        self.now = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default):
            self.now[f"read {args[0].device.type}"] += 1
            return False if args[0].dtype == torch.bool else 0
        out = func(*args, **kwargs)
        # inference mode hands `Tensor.to` to a mode whole (aten.to.*), other calls arrive as _to_copy or copy_
        if func in (aten._to_copy.default, aten.copy_.default, aten.to.dtype, aten.to.dtype_layout, aten.to.device) and out is not args[0]:
            src, dst = (args[1], args[0]) if func is aten.copy_.default else (args[0], out)
            if src.device != dst.device:
                self.now[f"copy {src.device.type}->{dst.device.type}"] += 1
                if tuple(src.shape) in self.weight_shapes:
                    self.now["weight moved"] += 1
            elif src.dtype != dst.dtype and tuple(src.shape) in self.weight_shapes:
                self.now["weight cast"] += 1
        return out


class InlinePool:
    """ThreadPoolExecutor's interface, the jobs run at once in this thread (the fake mode is thread-local)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, fn, *args, **kwargs) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed over as a thread pool would
            future.set_exception(e)
        return future


@pytest.fixture
def fake_gpu(monkeypatch):
    """Inside: a FakeTensorMode with two fake GPUs. Yields (mode, syncs factory)."""
    real_is_available = torch.cuda.is_available

    def is_available() -> bool:  # True for the pack; torch's own code must see the truth, or it initialises CUDA
        caller = sys._getframe(1).f_globals.get("__name__", "")
        return True if caller.startswith(("wan_vae", "gpu_standin")) or ".wan_vae." in caller else real_is_available()

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * GiB, 80 * GiB))
    for name in ("empty_cache", "synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(nn.Module, "to", fake_to)
    no_check = lambda *a, **k: None  # noqa: E731 - the value checks read data
    for module in (inputs, encode):
        monkeypatch.setattr(module, "check_values", no_check)
    monkeypatch.setattr(multidevice, "ThreadPoolExecutor", InlinePool)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, HostSyncs(set()):  # the latents' NaN count: answered 0
        yield mode


def gpu_vae(version: str, dtype=torch.bfloat16, real: bool = True, mixed: bool = False) -> WanVAE:
    """A WanVAE on the fake cuda:0 (in half precision everywhere, the GPU default, unless `mixed`): real-size widths
    cost nothing without values."""
    cfg = config.CONFIGS[version]
    cfg = cfg if real else cfg.with_widths(16, 16 if version == "2.1" else 32)
    model = WanVAEModel(cfg).to(dtype)  # weights as a file of that precision stores them (ComfyUI's are bf16)
    set_precision(model, dtype, mixed)
    return WanVAE(model).to("cuda")


def counted(vae, run):
    """run(progress) under HostSyncs: (result, per-step counts)."""
    shapes = {tuple(p.shape) for p in vae.model.parameters() if p.numel() > 64}
    syncs = HostSyncs(shapes)
    with syncs:
        result = run(lambda done, total: syncs.mark())
    return result, syncs.steps + [syncs.now]


def summary(steps) -> collections.Counter:
    total = collections.Counter()
    for step in steps[1:-1]:  # between the first progress step and the last: the per-chunk loop
        total.update(step)
    return total


CASES = [("2.1", {}), ("2.1", {"tiling": "on", "tile_size": 256}), ("2.1", {"frames_per_chunk": 3}),
         ("2.2", {}), ("2.2", {"tiling": "on", "tile_size": 512, "frames_per_chunk": 2})]  # fmt: skip


@pytest.mark.parametrize("version, opts", CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_decode_and_decode_frames_on_a_fake_gpu_stay_on_it_and_never_wait_in_the_loop(fake_gpu, version, opts, dtype):
    vae = gpu_vae(version, dtype)
    z = torch.randn(1, vae.latent_channels, 5, 30, 52, device="cuda")  # 480x832 for 2.1
    video, steps = counted(vae, lambda progress: vae.decode(z, progress=progress, **opts))
    s = vae.output_scale
    assert video.shape == (1, 3, 17, 30 * s, 52 * s) and video.device.type == "cuda"
    loop = summary(steps)
    assert loop["read cuda"] == 0 and loop["weight moved"] == 0 and loop["copy cuda->cpu"] == 0, loop
    images, steps = counted(vae, lambda progress: vae.decode(z, layout="images", output_device="cpu", progress=progress, **opts))
    assert images.shape == (17, 30 * s, 52 * s, 3) and images.device.type == "cpu"
    loop = summary(steps)
    assert loop["read cuda"] == 0 and loop["weight moved"] == 0, loop
    assert all(step["copy cuda->cpu"] <= 1 for step in steps[1:-1]), steps  # each piece goes to the host once
    frames, steps = counted(vae, lambda progress: list(vae.decode_frames(z, dtype=torch.uint8, progress=progress, **opts)))
    assert sum(f.shape[0] for f in frames) == 17 and all(f.device.type == "cpu" and f.dtype == torch.uint8 for f in frames)
    loop = summary(steps)
    assert loop["read cuda"] == 0 and loop["weight moved"] == 0, loop
    assert loop["weight cast"] == 0, loop  # the heads' casts are made once per decode, before the loop's steps
    print(f"\n{version} {dtype} {opts}: per loop step {dict(summary(steps))}")


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_mixed_precision_on_a_fake_gpu_casts_its_fp32_weights_once_per_decode(fake_gpu, version):
    vae = gpu_vae(version, torch.bfloat16, mixed=True)  # a bf16 file: the convs outside the heavy blocks run in fp32
    z = torch.randn(1, vae.latent_channels, 5, 30, 52, device="cuda")
    _, steps = counted(vae, lambda progress: vae.decode(z, progress=progress, frames_per_chunk=1))
    assert sum(steps, collections.Counter())["weight cast"] > 0, steps
    # each made once, in the first chunk a layer runs in (the temporal upsamples' convs first run in the second);
    # before: about 97 per chunk for Wan 2.1
    assert sum(steps[2:-1], collections.Counter())["weight cast"] == 0, steps


@pytest.mark.parametrize("version", ["2.1", "2.2"])
@pytest.mark.parametrize("opts", [{}, {"tiling": "on", "tile_size": 256}, {"tiling": "auto", "memory_budget": 3 * GiB}])
def test_encode_and_encode_frames_on_a_fake_gpu(fake_gpu, version, opts):
    vae = gpu_vae(version, torch.bfloat16)
    s = vae.spatial_scale
    x = torch.rand(1, 3, 9, 30 * 8, 52 * 8, device="cuda") * 2 - 1
    x = x[..., : 30 * 8 // s * s, : 52 * 8 // s * s]
    z, steps = counted(vae, lambda progress: vae.encode(x, progress=progress, **opts))
    assert z.shape[:3] == (1, vae.latent_channels, 3) and z.device.type == "cuda"
    loop = summary(steps)
    assert loop["read cuda"] == 0 and loop["weight moved"] == 0 and loop["copy cuda->cpu"] == 0, loop
    frames = torch.rand(9, x.shape[-2], x.shape[-1], 3)  # from a file: on the host
    z2, steps = counted(vae, lambda progress: vae.encode_frames(iter([frames[:1], frames[1:5], frames[5:]]), progress=progress,
                                                                **opts))  # fmt: skip
    assert z2.shape == z.shape and z2.device.type == "cuda"
    assert summary(steps)["read cuda"] == 0


def test_several_fake_gpus_decode_and_encode_with_each_tile_on_its_own(fake_gpu):
    vae = gpu_vae("2.1", torch.bfloat16, real=False)
    z = torch.randn(2, 16, 3, 16, 24, device="cuda")
    devices = ["cuda:0", "cuda:1"]
    for opts in ({"tiling": "on", "tile_size": 64}, {"tiling": "off"}, {"tiling": "auto", "memory_budget": 40 * GiB}):
        assert vae.decode(z, devices=devices, **opts).device == torch.device("cuda", 0)
        assert all(f.device.type == "cpu" for f in vae.decode_frames(z, devices=devices, **opts))
    x = torch.rand(1, 3, 9, 128, 192, device="cuda") * 2 - 1
    assert vae.encode(x, devices=devices, tiling="on", tile_size=64).device == torch.device("cuda", 0)
    assert torch.device("cuda", 1) in vae._replicas
    vae.release_replicas()


def test_the_tiny_decoders_and_lightvae_on_a_fake_gpu(fake_gpu):
    from wan_vae.network.taehv import TinyDecoder, TinyInfo
    from wan_vae.tiny_vae import TinyVAE

    for channels, version in ((16, "2.1"), (48, "2.2")):
        name = f"taew{version.replace('.', '_')}"
        tiny = TinyVAE(TinyDecoder(channels), TinyInfo(f"{name}.pth", name, version, False, 0)).to("cuda", torch.float16)
        z = torch.randn(1, channels, 5, 30, 52, device="cuda")
        frames, steps = counted(tiny, lambda progress: list(tiny.decode_frames(z, dtype=torch.uint8, progress=progress)))
        assert sum(f.shape[0] for f in frames) == 17 and summary(steps)["read cuda"] == 0
    light = WanVAE(WanVAEModel(config.WAN21.with_widths(96, 24))).to("cuda")  # LightVAE: 25 % of the decoder's channels
    set_precision(light.model, torch.bfloat16)
    assert light.decode(torch.randn(1, 16, 3, 30, 52, device="cuda")).device.type == "cuda"


def test_the_tensors_the_distributed_steps_exchange_are_on_the_nccl_device(fake_gpu, monkeypatch):
    import torch.distributed as dist

    from wan_vae.run import distributed

    sent, received = [], []
    monkeypatch.setattr(dist, "send", lambda t, dst: sent.append((t.device.type, tuple(t.shape))))
    monkeypatch.setattr(dist, "recv", lambda t, src: received.append((t.device.type, tuple(t.shape))))
    vae = gpu_vae("2.1", torch.bfloat16, real=False)
    z = torch.randn(1, 16, 3, 16, 24)
    for rank in (0, 1):
        group = types.SimpleNamespace(rank=rank, world=2, device=torch.device("cuda", rank), comm=torch.device("cuda", rank),
                                      agree=lambda ok, message="": None, same_as_rank0=lambda what, values: None,
                                      broadcast=lambda values: values)  # fmt: skip
        chunks = list(distributed.decode_frames(vae, z, group, tiling="on", tile_size=64))
        assert all(c.device.type == "cpu" for c in chunks) and (rank == 0) == bool(chunks)
    assert sent and received and all(device == "cuda" for device, _ in sent + received)


# ------------------------------------------------------------------------------------------ the nodes


@pytest.fixture
def gpu_comfy(folders, fake_gpu, monkeypatch):  # the files written first, with real tensors
    """The pack inside a stand-in ComfyUI whose model management reports cuda:0 (and a second GPU)."""
    import importlib.util
    import os
    import sys
    import uuid

    from test_comfy_versions import PACK, standin_modules

    (folders["output"] / "temp").mkdir()
    modules, calls = standin_modules("0.3.64", folders)
    mm = modules["comfy.model_management"]
    mm.vae_device = mm.get_torch_device = lambda: torch.device("cuda", 0)
    mm.vae_dtype = lambda device=None, allowed_dtypes=[]: torch.bfloat16  # noqa: B006
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    name = f"gpu_standin_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, os.path.join(PACK, "__init__.py"))
    pack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, pack)
    spec.loader.exec_module(pack)
    for module in ("run.inputs", "run.encode"):  # the pack's own copy of the library: the same stand-ins as fake_gpu's
        monkeypatch.setattr(sys.modules[f"{name}.wan_vae.{module}"], "check_values", lambda *a, **k: None)
    monkeypatch.setattr(sys.modules[f"{name}.wan_vae.run.multidevice"], "ThreadPoolExecutor", InlinePool)
    host = sys.modules[f"{name}.nodes.comfy_host"]
    monkeypatch.setattr(host.NodeProgress, "preview", lambda self, frame: calls.setdefault("previews", []).append(frame.device))
    handed = []

    def write_video(frames, path, fps, **kw):  # what the writer gets: chunks on the host (ffmpeg needs values)
        handed.extend((chunk.device.type, chunk.dtype, chunk.shape[0]) for chunk in frames)
        open(path, "wb").close()
        return path

    to_video = sys.modules[f"{name}.nodes.decode_to_video"]
    monkeypatch.setattr(to_video, "write_video", write_video)
    monkeypatch.setattr(to_video, "write_latent_file", lambda path, latent, metadata=None: open(path, "wb").close() or path)
    yield types.SimpleNamespace(nodes=pack.NODE_CLASS_MAPPINGS, lib=sys.modules[f"{name}.wan_vae"], calls=calls, handed=handed)
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_the_nodes_run_their_gpu_paths(gpu_comfy, folders):
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    nodes = gpu_comfy.nodes
    with unset_fake_temporarily():  # the file is read into real tensors, as ComfyUI reads it; the nodes move them
        vae = nodes["LoadWanVAE"]().load("wan_2.1_vae.safetensors", "auto", "gpu")[0]
        all_gpus = nodes["LoadWanVAE"]().load("wan_2.1_vae.safetensors", "auto", "all gpus")[0]
    z = torch.randn(1, 16, 3, 6, 10)  # a sampler's LATENT, on the host
    assert vae.device == torch.device("cuda", 0) and vae.vae.dtype == torch.bfloat16
    images = nodes["WanDecodeLatents"]().decode(vae, {"samples": z}, "auto", "auto", 512, 64, 1)[0]
    assert images.shape == (9, 48, 80, 3) and images.device.type == "cpu"
    assert gpu_comfy.calls["free_memory"][0][1] == torch.device("cuda", 0)  # room made on the GPU first
    out = nodes["WanDecodeToVideo"]().decode_to_video(vae, {"samples": z}, "auto", "on", 128, 64, 1, 16.0, "ffv1-mkv", 80,
                                                     "gpu/wan", True)  # fmt: skip
    assert out["ui"]["wan_video"][0]["frames"] == 9
    assert gpu_comfy.handed and all(h[:2] == ("cpu", torch.uint8) for h in gpu_comfy.handed)
    assert sum(h[2] for h in gpu_comfy.handed) == 9 and set(gpu_comfy.calls["previews"]) == {torch.device("cpu")}
    latent = nodes["WanEncode"]().encode(vae, torch.rand(9, 48, 80, 3), "auto", "auto", 512, 1, False)[0]
    assert latent["samples"].device.type == "cpu" and latent["samples"].shape == (1, 16, 3, 6, 10)
    exact = nodes["WanVAEForWanVideoWrapper"]().adapt(vae, "auto", 512, 1)[0]
    assert exact.decode(z, "cuda")[0].device.type == "cuda"
    assert all_gpus.devices == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert nodes["WanDecodeLatents"]().decode(all_gpus, {"samples": z}, "auto", "on", 128, 64, 1)[0].device.type == "cpu"


def test_core_load_vae_s_vae_and_wan_vae_for_core_nodes_run_their_gpu_paths(gpu_comfy):
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    from test_core_vae import CoreLikeVAE

    with unset_fake_temporarily():
        core = CoreLikeVAE()  # what core Load VAE gives (its weights read from get_sd)
        core.get_sd()
    z = torch.randn(1, 16, 3, 6, 10)
    images = gpu_comfy.nodes["WanDecodeLatents"]().decode(core, {"samples": z}, "auto", "auto", 512, 64, 1)[0]
    assert images.shape == (9, 48, 80, 3) and images.device.type == "cpu"
    twin = gpu_comfy.nodes["WanVAEForCoreNodes"]().adapt(core, "auto", 512, 1)[0]
    decoded = twin.decode(z)
    assert decoded.shape == (1, 9, 48, 80, 3) and decoded.device == core.output_device
    latent = twin.encode(torch.rand(9, 48, 80, 3))
    assert latent.shape == (1, 16, 3, 6, 10) and latent.device == core.output_device
