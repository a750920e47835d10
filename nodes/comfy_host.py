"""Everything the nodes take from ComfyUI, and nowhere else: folders, devices, memory, progress, interrupt, metadata,
and ComfyUI's VIDEO classes (comfy_api.latest).

Without ComfyUI (tests, scripts) each function falls back to plain behaviour, with folders from
`FALLBACK_DIRS`, so the pack stays importable and testable. The absolute imports below are meant:
they are ComfyUI's own top-level modules.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time

import torch

try:
    import comfy.model_management as mm
    import comfy.utils
    import folder_paths
    from comfy.cli_args import args

    IN_COMFYUI = True
except ImportError:
    IN_COMFYUI = False

log = logging.getLogger("wan_vae")

# Without ComfyUI: where models, inputs and outputs are (tests point these at temporary folders).
FALLBACK_DIRS = {"vae": "models/vae", "input": "input", "output": "output", "temp": "temp"}
MODEL_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")


# ----------------------------------------------------------------------------------------- folders


def _files(folder: str, extensions) -> list[str]:
    if not os.path.isdir(folder):
        return []
    found = []
    for root, _, names in os.walk(folder, followlinks=True):
        for name in names:
            if name.lower().endswith(tuple(extensions)):
                found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found)


def vae_filenames() -> list[str]:
    """VAE files in ComfyUI's `vae` model folders (models/vae and extra_model_paths.yaml)."""
    if IN_COMFYUI:
        return folder_paths.get_filename_list("vae")
    return _files(FALLBACK_DIRS["vae"], MODEL_EXTENSIONS)


def vae_file(name: str) -> str:
    """The path of `vae_name`, which must name a file inside a `vae` model folder (README: paths)."""
    _plain_name(name, "vae_name")
    if IN_COMFYUI:
        path = folder_paths.get_full_path_or_raise("vae", name)
        return _inside_any(folder_paths.get_folder_paths("vae"), path, name, "vae_name")
    return _inside(FALLBACK_DIRS["vae"], name)


def input_filenames(extensions) -> list[str]:
    folder = folder_paths.get_input_directory() if IN_COMFYUI else FALLBACK_DIRS["input"]
    return _files(folder, extensions)


def input_file(name: str) -> str:
    """The path of a file a workflow names in ComfyUI's input folder ("name [output]" and "[temp]" as ComfyUI reads them)."""
    _plain_name(name.rsplit(" [", 1)[0] if name.endswith("]") else name, "latent_file")
    if IN_COMFYUI:
        path = folder_paths.get_annotated_filepath(name)
        folders = [folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory()]
        return _inside_any(folders, path, name, "latent_file")
    return _inside(FALLBACK_DIRS["input"], name)


def output_directory() -> str:
    return folder_paths.get_output_directory() if IN_COMFYUI else os.path.abspath(FALLBACK_DIRS["output"])


def temp_directory() -> str:
    """ComfyUI's temp folder: previews (save_output off), emptied when ComfyUI starts."""
    folder = folder_paths.get_temp_directory() if IN_COMFYUI else os.path.abspath(FALLBACK_DIRS["temp"])
    os.makedirs(folder, exist_ok=True)
    return folder


def _plain_name(name: str, what: str) -> None:
    """A workflow's file name is relative and never climbs: no absolute path, drive, '..' part or NUL."""
    parts = name.replace("\\", "/").split("/") if isinstance(name, str) else [".."]
    if not isinstance(name, str) or not name or "\0" in name or name.startswith(("/", "\\")) or ".." in parts \
            or (len(name) > 1 and name[1] == ":"):  # fmt: skip
        raise ValueError(f"{what} '{name}' is not a file name inside ComfyUI's folder: absolute paths and '..' are refused. "
                         "Pick a file from the list.")  # fmt: skip


def _inside(folder: str, name: str) -> str:
    path = os.path.abspath(os.path.join(folder, name))
    if os.path.commonpath((os.path.abspath(folder), path)) != os.path.abspath(folder):
        raise ValueError(f"'{name}' is outside {folder}.")
    return path


def _inside_any(folders, path: str, name: str, what: str) -> str:
    """`path` if it lies (by name; symlinks you placed in the folder are followed) in one of `folders`."""
    path = os.path.abspath(path)
    for folder in folders:
        folder = os.path.abspath(folder)
        if os.path.commonpath((folder, path)) == folder:
            return path
    raise ValueError(f"{what} '{name}' is outside ComfyUI's folders ({', '.join(folders)}).")


def save_location(filename_prefix: str, width: int, height: int, temp: bool = False) -> tuple[str, str, int, str]:
    """(folder, file stem, first free counter, subfolder) in the output folder (`temp`: the temp folder), ComfyUI's
    naming rules. Prefixes that leave the folder are refused; %width%, %height%, %year%... are filled in.
    """
    output = temp_directory() if temp else output_directory()
    if IN_COMFYUI:
        try:
            folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output, width, height)
        except Exception as e:  # ComfyUI raises a bare Exception for paths outside the output folder
            raise ValueError(f"filename_prefix '{filename_prefix}' would save outside the output folder: {e}") from None
        return folder, stem, counter, subfolder
    prefix = filename_prefix.replace("%width%", str(width)).replace("%height%", str(height))
    subfolder, stem = os.path.dirname(os.path.normpath(prefix)), os.path.basename(os.path.normpath(prefix))
    folder = os.path.abspath(os.path.join(output, subfolder))
    if os.path.commonpath((output, folder)) != output or not stem or stem in (".", ".."):
        raise ValueError(f"filename_prefix '{filename_prefix}' would save outside the output folder {output}.")
    os.makedirs(folder, exist_ok=True)
    pattern = re.compile(rf"{re.escape(stem)}_(\d+)_")
    used = [int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m]
    return folder, stem, max(used, default=0) + 1, subfolder


# ----------------------------------------------------------------------------------------- core objects


def is_core_vae(vae) -> bool:
    """Whether `vae` is core's VAE object (comfy.sd.VAE, or a copy of it), what core Load VAE gives."""
    return getattr(vae, "first_stage_model", None) is not None and callable(getattr(vae, "get_sd", None))


def core_vae_weights(vae) -> tuple[dict, str]:
    """The weights of the VAE that core Load VAE gives (comfy.sd.VAE), shared, not copied, and the model class it holds."""
    if not is_core_vae(vae):
        raise TypeError(f"vae must be a WAN_VAE from Load Wan VAE, a VAE from Load VAE or a WANVAE from WanVideo VAE Loader, "
                        f"not {type(vae).__name__}.")  # fmt: skip
    model = vae.first_stage_model
    return vae.get_sd(), f"{type(model).__module__}.{type(model).__qualname__}"


# What Wan VAE for Core Nodes replaces on core's VAE (comfy.sd.VAE), with the parameters (after self) each takes in
# the ComfyUI versions the pack was checked against: 0.3.64; 0.38, which added encode's and encode_tiled's
# `not_video`; and the newest comfy/sd.py read (033046cc, the 0.4x line), the same as 0.38. docs/compatibility.md.
_TILED = ("tile_x", "tile_y", "overlap", "tile_t", "overlap_t")
CORE_VAE_METHODS = {
    "decode": [("samples_in", "vae_options")],
    "decode_tiled": [("samples", *_TILED)],
    "encode": [("pixel_samples",), ("pixel_samples", "not_video")],
    "encode_tiled": [("pixel_samples", *_TILED), ("pixel_samples", *_TILED, "not_video")],
}
CORE_VAE_READS = ("vae_encode_crop_pixels", "output_device")  # what the replacements use of core's object
CHECKED_VERSIONS = "ComfyUI 0.3.64, 0.38 and 0.45"


def comfyui_version() -> str:
    try:
        import comfyui_version  # ComfyUI's own top-level module (from 0.3.4x)

        return comfyui_version.__version__
    except ImportError:
        return "unknown"


def check_core_vae(vae) -> None:
    """That core's VAE class still has the methods Wan VAE for Core Nodes replaces, taking what they took in the
    versions the pack was checked against; otherwise a TypeError naming the version, what was expected and found."""
    cls = type(vae)
    problems = [f"no {name}" for name in CORE_VAE_READS if not hasattr(vae, name)]
    for name, known in CORE_VAE_METHODS.items():
        method = getattr(cls, name, None)
        if not callable(method):
            problems.append(f"no {name}()")
            continue
        try:
            found = tuple(p for p in inspect.signature(method).parameters if p != "self")
        except (TypeError, ValueError):
            found = ("?",)
        if found not in known:
            expected = " or ".join("(" + ", ".join(k) + ")" for k in known)
            problems.append(f"{name}({', '.join(found)}) where the pack knows {name}{expected}")
    if problems:
        raise TypeError(
            f"Wan VAE for Core Nodes was built for {CHECKED_VERSIONS}; this ComfyUI ({comfyui_version()}) has a "
            f"{cls.__module__}.{cls.__qualname__} with {'; '.join(problems)}. Nothing was changed: wire Load VAE straight "
            "to the core nodes (core's own encode and decode), or use Wan Encode / Wan Decode, until the pack is updated."
        )


def core_vae_from_weights(state_dict: dict):
    """Core's own VAE object (comfy.sd.VAE) for a Wan VAE's weights in ComfyUI's key names; where dtypes agree it
    uses the given tensors' memory instead of keeping a second copy."""
    if not IN_COMFYUI:
        raise RuntimeError("core's VAE object exists only inside ComfyUI.")
    import comfy.sd

    vae = comfy.sd.VAE(sd=state_dict)
    model = getattr(vae, "first_stage_model", None)
    if model is None:
        raise TypeError("ComfyUI did not recognise these weights as a VAE.")
    own = model.state_dict()
    shared = {k: v.detach() for k, v in state_dict.items() if k in own and own[k].dtype == v.dtype and own[k].device == v.device
              and own[k].shape == v.shape}  # fmt: skip
    model.load_state_dict(shared, strict=False, assign=True)  # new Parameters over the same memory: moves stay apart
    return vae


# ----------------------------------------------------------------------------------------- VIDEO

try:  # ComfyUI's VIDEO type (0.3.64 on): the abstract class, the two kinds core makes, and their parts
    from comfy_api.latest import Input, InputImpl, Types

    VideoInput, VideoFromFile, VideoFromComponents = Input.Video, InputImpl.VideoFromFile, InputImpl.VideoFromComponents
    VideoComponents = Types.VideoComponents
except ImportError:  # outside ComfyUI: stand-ins of the same shape, enough for the pack's own VIDEOs (tests and scripts)
    import abc
    from dataclasses import dataclass

    class VideoInput(abc.ABC):
        @abc.abstractmethod
        def get_components(self): ...

        @abc.abstractmethod
        def save_to(self, path, format="auto", codec="auto", metadata=None): ...

        def get_stream_source(self):
            raise NotImplementedError

    @dataclass
    class VideoComponents:
        images: torch.Tensor
        frame_rate: object
        audio: dict | None = None
        metadata: dict | None = None
        alpha: torch.Tensor | None = None

    class VideoFromFile(VideoInput):
        def __init__(self, file, *, start_time: float = 0, duration: float = 0) -> None:
            self._file, self._window = file, (start_time, duration)

        def get_stream_source(self):
            return self._file

        def get_active_trim_window(self) -> tuple[float, float]:
            return float(self._window[0]), float(self._window[1])

        def get_components(self):
            raise NotImplementedError("a stand-in: ComfyUI reads the file")

        def save_to(self, path, format="auto", codec="auto", metadata=None):
            raise NotImplementedError("a stand-in: ComfyUI copies the file")

    class VideoFromComponents(VideoInput):
        def __init__(self, components) -> None:
            self._components = components

        def get_components(self):
            return self._components

        def save_to(self, path, format="auto", codec="auto", metadata=None):
            raise NotImplementedError("a stand-in: ComfyUI encodes the frames")


def components_have_alpha() -> bool:
    """Whether this ComfyUI's VideoComponents has an `alpha` field (newer than 0.3.64)."""
    import dataclasses

    return "alpha" in {f.name for f in dataclasses.fields(VideoComponents)}


def video_file(video) -> tuple[object, float, float] | None:
    """(stream source, start s, duration s) of a VIDEO that a file backs (core Load Video's VideoFromFile, with newer
    ComfyUI's trim window), or None. The source is a path, or a BytesIO for a video held in memory."""
    if not isinstance(video, VideoFromFile):
        overridden = getattr(type(video), "get_stream_source", None) not in (None, VideoInput.get_stream_source)
        if isinstance(video, VideoFromComponents) or not overridden:
            return None  # frames in memory, or nothing but save_to (whose default stream source encodes the video)
    window = video.get_active_trim_window() if callable(getattr(video, "get_active_trim_window", None)) else (0.0, 0.0)
    return video.get_stream_source(), float(window[0]), float(window[1])


# ----------------------------------------------------------------------------------------- devices and memory


def compute_devices(choice: str) -> list[torch.device]:
    """compute_device, or for "all gpus" every CUDA GPU, ComfyUI's own first (just it on a one-GPU machine)."""
    if choice != "all gpus":
        return [compute_device(choice)]
    first = compute_device("gpu")
    others = [torch.device("cuda", i) for i in range(torch.cuda.device_count()) if first.type == "cuda" and i != first.index]
    return [first, *others]


def compute_device(choice: str) -> torch.device:
    """auto: ComfyUI's VAE device (honours --cpu and --cpu-vae); gpu: ComfyUI's torch device; cpu."""
    if choice == "cpu":
        return torch.device("cpu")
    if IN_COMFYUI:
        device = mm.vae_device() if choice == "auto" else mm.get_torch_device()
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "gpu" and device.type == "cpu":
        raise ValueError("device gpu / all gpus, but no GPU is available to ComfyUI (or it runs with --cpu); choose auto or cpu.")
    return device


def offload_device() -> torch.device:
    """Where the VAE waits between decodes (ComfyUI's VAE offload device: the CPU)."""
    return mm.vae_offload_device() if IN_COMFYUI else torch.device("cpu")


def compute_dtype(choice: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPUs that support it, fp32 on the CPU (and ComfyUI's --fp32-vae/--bf16-vae/--fp16-vae win)."""
    if choice != "auto":
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]
    if IN_COMFYUI:
        return mm.vae_dtype(device, [torch.bfloat16, torch.float32])
    from ..wan_vae.device.precision import default_dtype

    return default_dtype(device)


def make_room(device: torch.device, needed_bytes: int) -> int:
    """Ask ComfyUI to unload models until `needed_bytes` fit on `device` beside the memory it keeps back; returns the
    bytes then free there for a decode: free memory less what ComfyUI reserves (`reserved_bytes`)."""
    if IN_COMFYUI:
        reserved = reserved_bytes(device)
        # The plain (non-dynamic) call: with dynamic VRAM it also unloads models partly, which newer ComfyUI logs at
        # its DETAIL level as "Non dynamic memory free called!". Our tensors are not the patcher's, so they need it.
        mm.free_memory(needed_bytes + reserved, device)
        mm.soft_empty_cache()
        return max(0, mm.get_free_memory(device) - reserved)
    from ..wan_vae.device.free_memory import free_bytes

    if device.type == "cuda":
        torch.cuda.empty_cache()
    return free_bytes(device)


def reserved_bytes(device: torch.device) -> int:
    """What ComfyUI keeps free on a GPU, which a decode must not plan to use: its reserved VRAM
    (`extra_reserved_memory()`: 400-700 MB by OS, or --reserve-vram) and --vram-headroom where the version has it
    (newer ComfyUI, for dynamic VRAM: "keep this much VRAM completely free"). Nothing on the CPU, as in core."""
    if not IN_COMFYUI or torch.device(device).type == "cpu":
        return 0
    reserved = mm.extra_reserved_memory() if callable(getattr(mm, "extra_reserved_memory", None)) else 0
    return int(reserved + float(getattr(args, "vram_headroom", 0) or 0) * 2**30)


def result_device() -> torch.device:
    """Where IMAGE outputs live (ComfyUI's intermediate device: the CPU unless --gpu-only)."""
    return mm.intermediate_device() if IN_COMFYUI else torch.device("cpu")


def image_dtype() -> torch.dtype:
    """The dtype of IMAGE outputs: ComfyUI's intermediate dtype where it has one (float16 under --fp16-intermediates),
    float32 otherwise (0.3.64)."""
    wanted = getattr(mm, "intermediate_dtype", None) if IN_COMFYUI else None
    return wanted() if callable(wanted) else torch.float32


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a device running out of memory, which a retry with smaller tiles may get past. Newer ComfyUI
    says so itself (`is_oom`: also an AcceleratorError with CUDA's error code 2, after which it clears the pending
    error so the retry can run); elsewhere the same test is made here."""
    core = getattr(mm, "is_oom", None) if IN_COMFYUI else None
    if callable(core) and core(error):
        return True
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    accelerator = getattr(torch, "AcceleratorError", None)  # torch 2.8 on: asynchronous CUDA errors
    if accelerator is not None and isinstance(error, accelerator) and getattr(error, "error_code", None) == 2:
        _discard_async_error()
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _discard_async_error() -> None:
    """Let a CUDA error that was raised asynchronously surface and be dropped, so the next launch does not re-raise it."""
    if not torch.cuda.is_available():
        return
    try:
        torch.ones(1, device="cuda").add_(1)  # a launch and a sync: the pending error is raised here, and dropped
        torch.cuda.synchronize()
    except RuntimeError:
        pass


def release_memory() -> None:
    if IN_COMFYUI:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------- progress, stop, metadata


class _NoProgress:
    def __init__(self, total: int) -> None:
        self.total, self.current = total, 0

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        self.current = value


def progress_bar(total: int):
    """The node's progress bar in the ComfyUI front end (update_absolute(done, total))."""
    return comfy.utils.ProgressBar(total) if IN_COMFYUI else _NoProgress(total)


class NodeProgress:
    """The node's progress bar, and on it the newest decoded frame as samplers show theirs, at most once a second.

    Frames between are dropped before any conversion, so a preview costs one uint8 conversion of one
    frame a second; ComfyUI's server scales and JPEG-encodes it in its own thread.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.bar, self.interval_s = progress_bar(1), interval_s
        self.done, self.total, self.previews, self._last = 0, 1, 0, -float("inf")

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.bar.update_absolute(done, total)

    def preview(self, frame: torch.Tensor) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        from PIL import Image  # ComfyUI's dependency, and imageio's

        size = getattr(args, "preview_size", 512) if IN_COMFYUI else 512
        step = -(-max(frame.shape[:2]) // size)  # every step-th pixel: the preview's size, 1/step² of the work
        x = frame.detach()[::step, ::step].float()
        if x.shape[-1] == 4:  # RGBA: over a grey checkerboard, as the saved video's preview shows it
            ys, xs = torch.meshgrid(torch.arange(x.shape[0]), torch.arange(x.shape[1]), indexing="ij")
            checker = (((ys // 8 + xs // 8) % 2) * 0.19 + 0.5).to(x).unsqueeze(-1)
            x = x[..., :3] * x[..., 3:] + checker * (1 - x[..., 3:])
        pixels = (x * 255 + 0.5).clamp_(0, 255).to(torch.uint8).cpu().numpy()
        self.bar.update_absolute(self.done, self.total, ("JPEG", Image.fromarray(pixels), size))
        self.previews += 1


def notify(text: str, severity: str = "info") -> None:
    """A line in the console and, in the front end, a notice (web/export_video_preview.js shows it)."""
    (log.warning if severity != "info" else log.info)("%s", text)
    if IN_COMFYUI:
        from server import PromptServer

        PromptServer.instance.send_sync("wan_vae.notice", {"text": text, "severity": severity})


def is_stop(error: BaseException) -> bool:
    """Whether `error` is the user's Stop (ComfyUI's interrupt), not a failure."""
    return IN_COMFYUI and isinstance(error, mm.InterruptProcessingException)


def stop_requested() -> bool:
    """True once the user pressed Stop (Cancel) in the front end."""
    return IN_COMFYUI and mm.processing_interrupted()


def raise_stopped(error: BaseException) -> None:
    """Turn a library cancellation into ComfyUI's own interrupt, which ends the run without an error dialog."""
    if IN_COMFYUI:
        raise mm.InterruptProcessingException() from error
    raise error


def metadata_disabled() -> bool:
    """ComfyUI's --disable-metadata."""
    return IN_COMFYUI and bool(getattr(args, "disable_metadata", False))
