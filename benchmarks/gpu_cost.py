"""The GPU cost model: a decode (and an encode) traced op by op under FakeTensorMode, costed on named GPUs' rooflines.

    python benchmarks/gpu_cost.py                        # Wan 2.1, 81 frames at 832x480 and 1280x720 (a few minutes)
    python benchmarks/gpu_cost.py --quick                # a small size in seconds (CI runs this: tests/test_gpu_cost.py)
    python benchmarks/gpu_cost.py --gpu H200 --top 15 --json out.json

No GPU and no weights are needed: every tensor is fake (shapes, dtypes, strides, no values), real-size. Ours is traced
on the GPU-shaped path (`shaped_for_gpu`, what a CUDA device runs) as Load Wan VAE's `auto` loads it on a GPU (bf16
everywhere, or `--mixed` for the heavy-convs-only precision), beside diffusers' `AutoencoderKLWan` eager in bf16 on the
same sizes. A dispatch mode sees every aten op (and our fused custom ops as one op each) and counts:
- launches: one per op that does work; views, allocations and metadata are free. cuDNN adds a conv's bias in a
  second kernel (a pass over the output) and copies a weight whose memory layout differs from the input's: both
  counted, as launches and bytes;
- bytes: every tensor an op reads plus what it writes, once (caches ignored: activations here are far larger);
- FLOPs: convolutions (2 x MACs), matmuls and attention.
Each op then costs max(FLOPs / (50% of the tensor-core peak for its dtype), bytes / (70% of HBM bandwidth), 3 us), fp32
convs at the TF32 rate (cuDNN's default, `torch.backends.cudnn.allow_tf32`) or with `--no-tf32` at the fp32 rate.
`--unfused` costs our norm as the torch path would run it on a GPU (bands of 16M elements, 8 kernels each, fp32
scratch): the fused kernel's worth.

Calibration: fastvae's published eager-diffusers figures on an RTX PRO 6000 (2,817 ms at 480p, 6,570 ms at 720p, Wan
2.1, 81 frames, bf16) against this model's estimate of the same decode are printed with --calibrate: 1.10x and 1.09x.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from wan_vae.device.gpu import shaped_for_gpu  # noqa: E402
from wan_vae.files.config import CONFIGS  # noqa: E402
from wan_vae.kernels.norm import SLICE_ELEMENTS  # noqa: E402
from wan_vae.network.model import WanVAEModel  # noqa: E402
from wan_vae.run import inputs  # noqa: E402
from wan_vae.vae import load_vae  # noqa: E402

aten = torch.ops.aten


@dataclass(frozen=True)
class GPU:
    """Dense peaks from the vendors' datasheets (no sparsity; fp32 accumulate for the GeForce cards' half precision)."""

    bf16_tflops: float
    tf32_tflops: float
    fp32_tflops: float
    hbm_tbs: float


GPUS = {  # the first is the one the breakdowns are printed for
    "H200": GPU(989, 494, 67, 4.8),
    "H100": GPU(989, 494, 67, 3.35),  # SXM
    "RTX PRO 6000": GPU(504, 126, 126, 1.792),  # Blackwell workstation; its TF32 rate is the least certain figure here
    "RTX 5090": GPU(209.5, 104.8, 104.8, 1.792),
    "RTX 4090": GPU(165, 82.6, 82.6, 1.008),
}
CONV_EFFICIENCY, MEMORY_EFFICIENCY, MIN_KERNEL_S = 0.5, 0.7, 3e-6
KINDS = ("conv", "norm", "elementwise", "copies and layout", "attention")
COPIES = {"copy_", "_to_copy", "clone", "cat", "stack", "constant_pad_nd", "slice_scatter", "index_put", "repeat",
          "repeat_interleave", "_unsafe_index", "index", "contiguous", "pixel_shuffle", "new_zeros", "zeros"}  # fmt: skip
FREE = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "detach", "alias",
        "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "is_same_size", "_has_compatible_shallow_copy_type",
        "resize_", "set_", "device", "_reshape_alias", "_unsafe_view", "unbind", "split", "split_with_sizes", "chunk"}  # fmt: skip


def nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def tensors(tree) -> list[torch.Tensor]:
    out = []
    for item in tree if isinstance(tree, list | tuple) else [tree]:
        if isinstance(item, torch.Tensor):
            out.append(item)
        elif isinstance(item, list | tuple):
            out += tensors(item)
    return out


@dataclass
class Op:
    name: str
    kind: str
    flops: float = 0.0
    bytes: float = 0.0
    launches: int = 1
    precision: str = "bf16"  # the conv / matmul rate: bf16 (fp16 alike), fp32 (TF32 or not)


@dataclass
class Trace:
    ops: list[Op] = field(default_factory=list)

    def total(self, attr: str) -> float:
        return sum(getattr(op, attr) for op in self.ops)

    def seconds(self, gpu: GPU, tf32: bool = True) -> float:
        return sum(op_seconds(op, gpu, tf32) for op in self.ops)

    def by_kind(self, gpu: GPU, tf32: bool = True) -> dict[str, dict[str, float]]:
        table = {kind: {"seconds": 0.0, "launches": 0, "GB": 0.0, "TFLOP": 0.0} for kind in KINDS}
        for op in self.ops:
            row = table[op.kind]
            row["seconds"] += op_seconds(op, gpu, tf32)
            row["launches"] += op.launches
            row["GB"] += op.bytes / 1e9
            row["TFLOP"] += op.flops / 1e12
        return table

    def top(self, gpu: GPU, n: int, tf32: bool = True) -> list[tuple[str, int, float, float]]:
        """(op, calls, seconds, GB) of the n ops that cost most, summed by name."""
        rows: dict[str, list] = collections.defaultdict(lambda: [0, 0.0, 0.0])
        for op in self.ops:
            row = rows[op.name]
            row[0] += 1
            row[1] += op_seconds(op, gpu, tf32)
            row[2] += op.bytes / 1e9
        return sorted(((name, *row) for name, row in rows.items()), key=lambda r: -r[2])[:n]


def op_seconds(op: Op, gpu: GPU, tf32: bool = True) -> float:
    peak = gpu.bf16_tflops if op.precision == "bf16" else gpu.tf32_tflops if tf32 else gpu.fp32_tflops
    compute = op.flops / (CONV_EFFICIENCY * peak * 1e12)
    memory = op.bytes / (MEMORY_EFFICIENCY * gpu.hbm_tbs * 1e12)
    return max(compute, memory, MIN_KERNEL_S * op.launches) if op.launches else 0.0


class Counter(TorchDispatchMode):
    """Records an `Op` per aten op (and per fused custom op), classified by the op and the module it runs in."""

    def __init__(self, unfused: bool = False) -> None:
        super().__init__()
        self.trace, self.unfused, self.modules = Trace(), unfused, []

    def kind(self, name: str) -> str:
        inside = " ".join(self.modules)
        if "Attention" in inside or "attention" in name or name in ("bmm", "mm", "_softmax", "baddbmm"):
            return "attention"
        if "RMS" in inside or "rms_norm" in name:
            return "norm"
        return "copies and layout" if name in COPIES else "elementwise"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default):
            return 0  # a read of a value (the latents' NaN count): fake tensors have none, and it costs a sync, not a kernel
        name = func.overloadpacket.__name__
        if func.namespace == "aten" and torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd"):
            with self:  # inference mode hands composite ops (conv3d, to, reshape) to the mode: count what they run
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if name in FREE or func.namespace == "prim" or getattr(func, "is_view", False):
            return out
        ins, outs = tensors(list(args) + list(kwargs.values())), tensors(out)
        if name == "convolution":
            self.conv(args, out)
            if channels_last(args[0]) and not channels_last(out):
                # cuDNN gives a channels-last output for a channels-last input (cudnn_conv_suggest_memory_format);
                # the CPU's meta rules that fake tensors follow may not: lay it out as a GPU would, uncounted
                out = out.contiguous(memory_format=torch.channels_last_3d if out.dim() == 5 else torch.channels_last)
        elif name == "rms_norm" and self.unfused:
            self.torch_norm(args)
        elif "scaled_dot_product" in name:
            q, k, v = args[:3]
            flops = 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
            self.trace.ops.append(Op(name, "attention", flops, sum(map(nbytes, (q, k, v))) + nbytes(outs[0]), 1, precision(q)))
        elif name in ("mm", "bmm", "addmm", "baddbmm"):
            a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
            flops = 2 * a.numel() * b.shape[-1]
            self.trace.ops.append(Op(name, "attention", flops, sum(map(nbytes, ins)) + sum(map(nbytes, outs)), 1, precision(a)))
        elif name in ("zero_", "fill_", "zeros", "new_zeros", "full", "ones"):
            self.trace.ops.append(Op(name, self.kind(name), 0, sum(map(nbytes, outs))))
        elif ins or outs:
            written = 0 if name.endswith("_") and outs and ins and outs[0] is ins[0] else sum(map(nbytes, outs))
            self.trace.ops.append(Op(name, self.kind(name), 0, sum(map(nbytes, ins)) + written))
        return out

    def conv(self, args, out) -> None:
        x, weight, bias = args[:3]
        flops = 2 * out.numel() * weight[0].numel()  # weight[0]: one output's C_in / groups x kernel taps
        self.trace.ops.append(Op("convolution", "conv", flops, nbytes(x) + nbytes(weight) + nbytes(out), 1, precision(x)))
        if bias is not None:  # cuDNN convolutions take no bias: aten adds it to the output afterwards
            self.trace.ops.append(Op("conv bias add", "elementwise", 0, 2 * nbytes(out) + nbytes(bias)))
        if channels_last(x) != channels_last(weight) and weight[0, 0].numel() > 1:
            self.trace.ops.append(Op("weight layout copy", "copies and layout", 0, 2 * nbytes(weight)))

    def torch_norm(self, args) -> None:
        """What kernels/norm.py's torch path does on a GPU: per band of rows, copy in (fp32), vector norm, clamp, div,
        mul, SiLU, copy out, and the gamma cast and scale; fp32 in and out of the same dtype runs whole."""
        x, gamma, bias, out = args[:4]
        n = x.numel()
        bands = 1 if x.dtype == out.dtype == torch.float32 else math.ceil(n / SLICE_ELEMENTS["cuda"])
        scratch = 4 * n
        io = nbytes(x) + nbytes(out)
        self.trace.ops.append(Op("rms_norm (torch)", "norm", 0, io + scratch * (1 + 1 + 2 + 2 + 2 + 1), 8 * bands + 2 * bands))


def channels_last(t: torch.Tensor) -> bool:
    return t.dim() > 3 and t.shape[1] > 1 and t.stride(1) == 1


def precision(t: torch.Tensor) -> str:
    return "fp32" if t.dtype in (torch.float32, torch.float64) else "bf16"


@contextlib.contextmanager
def module_names(counter: Counter):
    """Keeps `counter.modules` as the stack of module classes running (global forward hooks)."""

    def enter(module, args):
        counter.modules.append(type(module).__name__)

    def leave(module, args, output):
        counter.modules.pop()

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(enter),
               torch.nn.modules.module.register_module_forward_hook(leave)]  # fmt: skip
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def fake_weights(shapes: dict[str, torch.Size], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, dtype=dtype) for k, shape in shapes.items()}


def fake_to(self, *args, **kwargs):
    """nn.Module.to for fake tensors (Module._apply cannot swap them): parameters and buffers replaced. The CUDA dry run
    (tests/test_cuda_dryrun.py) uses it too."""
    device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
    for module in self.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                new = p.detach().to(device=device, dtype=dtype if dtype is not None and p.is_floating_point() else None)
                module._parameters[name] = torch.nn.Parameter(new, requires_grad=False)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = b.to(device=device)
    return self


def fake_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A meta model's parameters and buffers replaced by fake tensors of `dtype` (inside a FakeTensorMode)."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(torch.empty(p.shape, dtype=dtype), requires_grad=False)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.empty(b.shape, dtype=b.dtype if not b.is_floating_point() else dtype)
    return model


def trace_ours(version: str, what: str, shape, dtype=torch.bfloat16, mixed: bool = False, frames_per_chunk: int = 1,
               unfused: bool = False) -> Trace:  # fmt: skip
    """Our decode (shape: latents [B, C, T, h, w]) or encode (video [B, 3, F, H, W]) on the GPU-shaped path."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanVAEModel(CONFIGS[version]).state_dict().items()}
    counter = Counter(unfused)
    with FakeTensorMode(), shaped_for_gpu(), torch.inference_mode(), mock.patch.object(torch.nn.Module, "to", fake_to):
        vae = load_vae(fake_weights(shapes, torch.bfloat16), dtype=dtype, mixed=mixed, name=f"fake Wan {version}")
        data = torch.empty(shape, dtype=torch.float32)
        with counter, module_names(counter):
            if what == "decode":
                vae.decode(data, frames_per_chunk=frames_per_chunk)
            else:
                with mock.patch.object(inputs, "check_values", lambda *a, **k: None):  # reads values fakes lack
                    vae.encode(data, frames_per_chunk=frames_per_chunk)
    return counter.trace


def trace_diffusers(version: str, what: str, shape) -> Trace:
    """diffusers' AutoencoderKLWan eager in bf16 (its frame-by-frame decode, its chunked encode)."""
    from diffusers import AutoencoderKLWan

    from reference import diffusers_kwargs

    with torch.device("meta"):
        model = AutoencoderKLWan(**diffusers_kwargs(version, real=True)).eval()
    counter = Counter()
    with FakeTensorMode(), torch.inference_mode():
        model = fake_parameters(model, torch.bfloat16)
        data = torch.empty(shape, dtype=torch.bfloat16)
        with counter, module_names(counter):
            if what == "decode":
                model.decode(data)
            else:
                model.encode(data)
    return counter.trace


# ------------------------------------------------------------------------------------------ printing


def summary(trace: Trace, gpu: GPU, tf32: bool = True) -> dict:
    return {"seconds": trace.seconds(gpu, tf32), "launches": int(trace.total("launches")), "GB": trace.total("bytes") / 1e9,
            "TFLOP": trace.total("flops") / 1e12}  # fmt: skip


def print_case(title: str, ours: Trace, theirs: Trace, gpus: list[str], top: int, record: dict) -> None:
    print(f"\n### {title}\n")
    print("| GPU | ours s | diffusers bf16 s | ours / diffusers | ours launches | diffusers launches | ratio | ours GB | diffusers GB | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = record.setdefault("gpus", {})
    for name in gpus:
        a, b = summary(ours, GPUS[name]), summary(theirs, GPUS[name])
        rows[name] = {"ours": a, "diffusers": b}
        print(f"| {name} | {a['seconds']:.3f} | {b['seconds']:.3f} | {a['seconds'] / b['seconds']:.2f}x | {a['launches']:,} | "
              f"{b['launches']:,} | {a['launches'] / b['launches']:.2f}x | {a['GB']:,.0f} | {b['GB']:,.0f} | {a['GB'] / b['GB']:.2f}x |")
    gpu = GPUS[gpus[0]]
    print(f"\nBy kind on the {gpus[0]} (seconds, launches, GB, TFLOP), ours | diffusers:\n")
    print("| kind | ours s | launches | GB | TFLOP | diffusers s | launches | GB | TFLOP |")
    print("|---|---|---|---|---|---|---|---|---|")
    mine, theirs_kinds = ours.by_kind(gpu), theirs.by_kind(gpu)
    record["by_kind"] = {"ours": mine, "diffusers": theirs_kinds}
    for kind in KINDS:
        a, b = mine[kind], theirs_kinds[kind]
        print(f"| {kind} | {a['seconds']:.3f} | {a['launches']:,} | {a['GB']:,.0f} | {a['TFLOP']:.1f} | {b['seconds']:.3f} | "
              f"{b['launches']:,} | {b['GB']:,.0f} | {b['TFLOP']:.1f} |")
    if top:
        for who, trace in (("ours", ours), ("diffusers", theirs)):
            print(f"\nTop {top} ops, {who} ({gpus[0]}): op, calls, seconds, GB\n")
            print("| op | calls | s | GB |\n|---|---|---|---|")
            for name, calls, seconds, gb in trace.top(gpu, top):
                print(f"| {name} | {calls:,} | {seconds:.3f} | {gb:,.1f} |")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one small size (CI)")
    p.add_argument("--version", default="2.1", choices=["2.1", "2.2"])
    p.add_argument("--gpu", nargs="*", default=list(GPUS), choices=list(GPUS))
    p.add_argument("--frames-per-chunk", type=int, default=4, help="ours: latent frames per pass (Load Wan VAE's auto "
                   "picks 4 on a GPU where it fits)")  # fmt: skip
    p.add_argument("--mixed", action="store_true", help="ours in the mixed precision (heavy convs only in bf16)")
    p.add_argument("--unfused", action="store_true", help="cost our norm as the torch path instead of the fused kernel")
    p.add_argument("--no-encode", action="store_true")
    p.add_argument("--calibrate", action="store_true", help="compare with fastvae's published RTX PRO 6000 figures")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    cfg = CONFIGS[args.version]
    sizes = [(256, 160, 9)] if args.quick else [(832, 480, 81), (1280, 720, 81)]
    record: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "cases": {}}
    for w, h, frames in sizes:
        t = 1 + (frames - 1) // cfg.temporal_scale
        latent = (1, cfg.z_dim, t, h // cfg.spatial_scale, w // cfg.spatial_scale)
        ours = trace_ours(args.version, "decode", latent, mixed=args.mixed, frames_per_chunk=args.frames_per_chunk, unfused=args.unfused)
        theirs = trace_diffusers(args.version, "decode", latent)
        title = f"decode, Wan {args.version}, {frames} frames at {w}x{h}"
        print_case(title, ours, theirs, args.gpu, args.top, record["cases"].setdefault(title, {}))
        if args.calibrate and not args.quick:
            calibrate(theirs, h, record["cases"][title])
        if not args.no_encode and (args.quick or h == 480):
            video = (1, 3, frames, h, w)
            title = f"encode, Wan {args.version}, {frames} frames at {w}x{h}"
            print_case(title, trace_ours(args.version, "encode", video, mixed=args.mixed, frames_per_chunk=args.frames_per_chunk,
                                         unfused=args.unfused), trace_diffusers(args.version, "encode", video),
                       args.gpu, 0, record["cases"].setdefault(title, {}))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return record


def calibrate(diffusers: Trace, height: int, record: dict) -> None:
    """fastvae's README (PyPI, 2026-08): eager diffusers bf16, Wan 2.1, 81 frames on an RTX PRO 6000: 2,817 ms at 480p,
    6,570 ms at 720p (fastvae itself: 1,171 and 2,782 ms)."""
    published = {480: 2.817, 720: 6.570}[height]
    estimate = diffusers.seconds(GPUS["RTX PRO 6000"])
    record["calibration"] = {"published_s": published, "estimated_s": estimate}
    print(f"\nCalibration: diffusers eager on an RTX PRO 6000, published {published:.2f} s (fastvae's README), estimated "
          f"{estimate:.2f} s: the model is {estimate / published:.2f}x the published figure.")


if __name__ == "__main__":
    main()
