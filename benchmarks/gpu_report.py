"""The whole device check in one command: parity, decode and encode speed and memory, the knobs that set the defaults.

    python benchmarks/gpu_report.py --out DIR                    # on a GPU: under 8 minutes on one H200
    python benchmarks/gpu_report.py --device cpu --quick --out DIR   # small sizes, a minute or two (CI runs this)

Prints a Markdown table per section and writes report.json to DIR. Every row runs on its own: a row that cannot
(no GPU for --device cuda, no bf16 on the GPU, too little memory for the case) says so and the others go on.
Real-size seeded random weights (every parameter perturbed, tests/reference.py), the same latents for ours and
diffusers. Times are CUDA events around the call after one warm-up run (perf_counter on the CPU); memory is the
peak allocated and reserved by torch's caching allocator (peak RSS of the process on the CPU, which only grows).

Sections:
- parity: ours against diffusers AutoencoderKLWan, Wan 2.1 and 2.2, fp32 (TF32 off) and bf16: max abs and rel L2;
- decode: Wan 2.1, 21 latent frames (81) at 832x480 and 1280x720, bf16 and fp32, untiled, tiling auto with an
  8 GB budget, 256 px tiles, and diffusers' decode of the same latent (enable_tiling where untiled does not fit);
  Wan 2.2 TI2V-5B at 1280x704, 121 frames; an encode of an 81-frame 480p clip;
- knobs: channels_last_3d on/off, cudnn.benchmark on/off, frames_per_chunk 1/2/4, bf16 everywhere against bf16
  mixed (its non-heavy weights cast once per decode or kept in fp32), the fused Triton norm against the torch path,
  torch.compile of the residual blocks, and fastvae's FastVAEDecoder where it is installed; each A/B in the same run;
- devices: with two or more GPUs, `devices` over all of them and two torch.distributed ranks, with the scaling.

Targets to record against (one H200, bf16, Wan 2.1, 81 frames): 832x480 in at most 1.2 s and 1280x720 in at most
2.0 s, peak VRAM at most 6 GB at 720p untiled; two GPUs at least 1.8x one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

GB = 1e9
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Skip(Exception):
    """A row that cannot run here, and why."""


# ------------------------------------------------------------------------------------------ measuring


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run, device: str, warm: bool = True) -> tuple[object, float, dict]:
    """run()'s result, its time in seconds and peak memory (warm-up first, then one measured call)."""
    if warm:
        run()
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = run()
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
        memory = {"peak_allocated_gb": torch.cuda.max_memory_allocated() / GB, "peak_reserved_gb": torch.cuda.max_memory_reserved() / GB}
    else:
        begin = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - begin
        memory = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB}
    return out, seconds, memory


def guarded(rows: list, label: str, fn) -> dict:
    """fn() -> row dict; a Skip, an out-of-memory or any failure becomes the row's note, and the report goes on."""
    row = {"case": label}
    try:
        row |= fn()
    except Skip as e:
        row["note"] = f"skipped: {e}"
    except torch.cuda.OutOfMemoryError as e:
        row["note"] = f"out of memory: {str(e).splitlines()[0][:120]}"
    except Exception as e:  # noqa: BLE001 - one row's failure is reported, the others still run
        row["note"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        row["traceback"] = traceback.format_exc(limit=4)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    rows.append(row)
    print(f"  {label}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                                     if k not in ("case", "traceback")), flush=True)  # fmt: skip
    return row


# ------------------------------------------------------------------------------------------ the networks


class Models:
    """Ours and diffusers' for one version, the same seeded weights, made once per device and precision."""

    def __init__(self, device: str, real: bool) -> None:
        self.device, self.real, self._made = device, real, {}

    def reference(self, version: str):
        from reference import reference_model

        return reference_model(version, real=self.real)

    def ours(self, version: str, dtype: torch.dtype):
        key = (version, dtype)
        if key not in self._made:
            from wan_vae import load_vae

            self._made.clear()  # one at a time: real-size Wan 2.2 is 2.8 GB in fp32
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            sd = {k: v.to(dtype if dtype != torch.float32 and v.is_floating_point() else v.dtype)
                  for k, v in _original(self.reference(version).state_dict(), version).items()}  # fmt: skip
            self._made[key] = load_vae(sd, device=self.device, dtype=dtype)
        return self._made[key]


def _original(sd: dict, version: str) -> dict:
    from wan_vae.files.key_names import diffusers_to_original
    from wan_vae.files.config import CONFIGS

    names = diffusers_to_original(sd, CONFIGS[version])
    return {names[k]: v for k, v in sd.items()}


def check_device(device: str, dtype: torch.dtype) -> None:
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Skip("no CUDA GPU here (torch.cuda.is_available() is False)")
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise Skip(f"{torch.cuda.get_device_name()} has no bf16")


def latent(version: str, frames: int, h: int, w: int, device: str) -> torch.Tensor:
    from wan_vae.files.config import CONFIGS

    cfg = CONFIGS[version]
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, cfg.z_dim, frames, h // cfg.spatial_scale, w // cfg.spatial_scale, generator=g).to(device)


# ------------------------------------------------------------------------------------------ sections


def parity(args, models: Models, rows: list) -> None:
    from reference import rel_l2

    size = (2, 64, 64) if args.quick else (3, 240, 416)
    for version in ("2.1", "2.2"):
        for name, dtype in DTYPES.items():
            def run(version=version, dtype=dtype):
                check_device(args.device, dtype)
                z = latent(version, *size, args.device)
                ref = models.reference(version).to(args.device)
                try:
                    with torch.inference_mode():
                        expected = ref.decode(z).sample.float()
                finally:
                    ref.to("cpu")
                got = models.ours(version, dtype).decode(z).float()
                return {"max_abs": (got - expected).abs().max().item(), "rel_l2": rel_l2(got, expected)}

            guarded(rows, f"Wan {version} decode {name} vs diffusers fp32, {size[0]} latent frames {size[2]}x{size[1]}", run)


def decode_cases(args) -> list[tuple[str, int, int, int, dict]]:
    if args.quick:
        return [("2.1", 3, 64, 96, {}), ("2.1", 3, 64, 96, {"tiling": "on", "tile_size": 64})]
    cases = []
    for h, w in ((480, 832), (720, 1280)):
        for opts in ({"tiling": "off"}, {"tiling": "auto", "memory_budget": 8 * 2**30}, {"tiling": "on", "tile_size": 256}):
            cases.append(("2.1", 21, h, w, opts))
    return cases


def decode(args, models: Models, rows: list) -> None:
    for version, frames, h, w, opts in decode_cases(args):
        for name, dtype in DTYPES.items():
            def run(version=version, frames=frames, h=h, w=w, opts=opts, dtype=dtype):
                check_device(args.device, dtype)
                vae, z = models.ours(version, dtype), latent(version, frames, h, w, args.device)
                _, seconds, memory = timed(lambda: vae.decode(z, **opts), args.device)
                return {"seconds": seconds, **memory}

            setting = ", ".join(f"{k} {v}" for k, v in opts.items()) or "untiled"
            label = f"ours Wan {version} {name} {w}x{h} {1 + 4 * (frames - 1)} frames, {setting}"
            guarded(rows, label, run)
        if opts.get("tiling") in (None, "off"):
            for name, dtype in DTYPES.items():
                def reference(version=version, frames=frames, h=h, w=w, dtype=dtype):
                    check_device(args.device, dtype)
                    model = copy.deepcopy(models.reference(version)).to(args.device, dtype)  # the cached one stays fp32
                    z = latent(version, frames, h, w, args.device).to(dtype)
                    try:
                        with torch.inference_mode():
                            try:
                                _, seconds, memory = timed(lambda: model.decode(z).sample, args.device)
                                tiled = False
                            except torch.cuda.OutOfMemoryError:
                                torch.cuda.empty_cache()
                                model.enable_tiling()
                                _, seconds, memory = timed(lambda: model.decode(z).sample, args.device)
                                tiled = True
                    finally:
                        del model
                    return {"seconds": seconds, **memory, "tiling": "enable_tiling()" if tiled else "off"}

                guarded(rows, f"diffusers Wan {version} {name} {w}x{h} {1 + 4 * (frames - 1)} frames", reference)
    if not args.quick:
        for name, dtype in DTYPES.items():
            def wan22(dtype=dtype):
                check_device(args.device, dtype)
                vae, z = models.ours("2.2", dtype), latent("2.2", 31, 704, 1280, args.device)
                _, seconds, memory = timed(lambda: vae.decode(z, tiling="auto"), args.device, warm=False)
                return {"seconds": seconds, **memory}

            guarded(rows, f"ours Wan 2.2 TI2V-5B {name} 1280x704 121 frames, tiling auto", wan22)


def encode(args, models: Models, rows: list) -> None:
    f, h, w = (5, 64, 96) if args.quick else (81, 480, 832)
    for name, dtype in DTYPES.items():
        def run(dtype=dtype):
            check_device(args.device, dtype)
            video = torch.rand(1, 3, f, h, w, generator=torch.Generator().manual_seed(1)).to(args.device) * 2 - 1
            vae = models.ours("2.1", dtype)
            _, seconds, memory = timed(lambda: vae.encode(video, tiling="auto"), args.device)
            return {"seconds": seconds, **memory}

        guarded(rows, f"ours Wan 2.1 encode {name} {w}x{h} {f} frames, tiling auto", run)


def knobs(args, models: Models, rows: list) -> None:
    frames, h, w = (3, 64, 96) if args.quick else (21, 480, 832)
    z_of = lambda: latent("2.1", frames, h, w, args.device)  # noqa: E731

    def ab(label: str, setup, teardown, dtype=torch.bfloat16, **opts):
        def run():
            check_device(args.device, dtype)
            vae = models.ours("2.1", dtype)
            setup(vae)
            try:
                z = z_of()
                _, seconds, memory = timed(lambda: vae.decode(z, **opts), args.device)
            finally:
                teardown(vae)
            return {"seconds": seconds, **memory}

        guarded(rows, label, run)

    keep = lambda vae: None  # noqa: E731
    for on in (True, False):
        def layout(vae, on=on):
            vae.channels_last = on
        ab(f"channels_last_3d {'on' if on else 'off'}", layout, lambda vae: setattr(vae, "channels_last", True))
    if args.device.startswith("cuda"):
        for on in (False, True):
            def bench(vae, on=on):
                torch.backends.cudnn.benchmark = on
            ab(f"cudnn.benchmark {'on' if on else 'off'}", bench, lambda vae: setattr(torch.backends.cudnn, "benchmark", False))
    for fpc in (1, 2, 4):
        ab(f"frames_per_chunk {fpc}", keep, keep, frames_per_chunk=fpc)

    def fp32_weights(vae):
        from wan_vae.network.blocks import CausalConv3d

        vae._saved = {m: (m.weight, m.bias) for m in vae.model.modules() if isinstance(m, CausalConv3d) and m.compute_dtype == torch.float32}
        for m in vae._saved:
            m.weight, m.bias = (torch.nn.Parameter(t.float(), requires_grad=False) if t is not None else None for t in (m.weight, m.bias))

    def restore(vae):
        for m, (weight, bias) in vae._saved.items():
            m.weight, m.bias = weight, bias

    def mixed(vae):
        vae._was_mixed = vae.mixed
        vae.to(dtype=torch.bfloat16, mixed=True)

    def unmixed(vae):
        vae.to(dtype=torch.bfloat16, mixed=vae._was_mixed)

    ab("bf16 as loaded (GPU: every conv in bf16; CPU: mixed)", keep, keep)
    if not args.device.startswith("cuda"):  # the CPU runs mixed and its torch norm already; compile takes minutes there
        return
    ab("bf16 mixed: non-heavy convs in fp32 (TF32), their bf16 weights cast once per decode", mixed, unmixed)
    ab("bf16 mixed, non-heavy weights kept in fp32", lambda vae: (mixed(vae), fp32_weights(vae)), lambda vae: (restore(vae), unmixed(vae)))
    ab("fused norm off (the torch path)", lambda vae: fused_norm(False), lambda vae: fused_norm(True))
    ab("torch.compile of every residual block (max-autotune-no-cudagraphs)", compile_blocks, uncompile_blocks)
    guarded(rows, "fastvae FastVAEDecoder, same weights and latent", lambda: fastvae_decode(args, models, z_of))


def fused_norm(on: bool) -> None:
    """The Triton norm on (as it loads) or off (the torch path), in every copy of the library this process imported."""
    for name, module in list(sys.modules.items()):
        if name.endswith("wan_vae.kernels.norm"):
            module._triton = None if on else False


def compile_blocks(vae) -> None:
    from wan_vae.network.blocks import ResidualBlock

    for block in vae.model.modules():
        if isinstance(block, ResidualBlock):
            block.forward = torch.compile(block.forward, mode="max-autotune-no-cudagraphs", dynamic=False)


def uncompile_blocks(vae) -> None:
    from wan_vae.network.blocks import ResidualBlock

    for block in vae.model.modules():
        if isinstance(block, ResidualBlock):
            block.__dict__.pop("forward", None)


def fastvae_decode(args, models, z_of) -> dict:
    """fastvae (PyPI) on diffusers' model with the same weights, bf16, the same latent (normalized space is not
    involved: both take raw latents)."""
    try:
        from fastvae import FastVAEDecoder
    except ImportError as e:
        raise Skip(f"fastvae is not installed ({e}); pip install fastvae") from None
    check_device(args.device, torch.bfloat16)
    model = copy.deepcopy(models.reference("2.1")).to(args.device, torch.bfloat16)
    decoder = FastVAEDecoder.from_vae(model)
    z = z_of().to(torch.bfloat16)
    _, seconds, memory = timed(lambda: decoder.decode(z), args.device)
    return {"seconds": seconds, **memory}


def devices(args, models: Models, rows: list) -> None:
    count = torch.cuda.device_count() if args.device.startswith("cuda") and torch.cuda.is_available() else 0
    frames, h, w = (3, 64, 96) if args.quick else (21, 720, 1280)

    def one_and_all(opts):
        def run():
            if count < 2:
                raise Skip(f"{count} GPU(s): several devices need two or more")
            vae, z = models.ours("2.1", torch.bfloat16), latent("2.1", frames, h, w, args.device)
            _, single, _ = timed(lambda: vae.decode(z, **opts), args.device)
            every = [f"cuda:{i}" for i in range(count)]
            _, spread, memory = timed(lambda: vae.decode(z, devices=every, **opts), args.device)
            vae.release_replicas()
            return {"seconds": spread, "one_gpu_seconds": single, "speedup": single / spread, **memory}

        return run

    guarded(rows, f"devices: all GPUs, 2.1 bf16 {w}x{h} {1 + 4 * (frames - 1)} frames, tiling auto", one_and_all({"tiling": "auto"}))

    def ranks():
        if count < 2:
            raise Skip(f"{count} GPU(s): two ranks need two GPUs")
        from decode_benchmark import make_weights
        from wan_vae.files.latents import write_latent_file

        work = Path(args.out) / "dist"
        work.mkdir(parents=True, exist_ok=True)
        make_weights(work, ("2.1",))
        write_latent_file(work / "z.latent", latent("2.1", frames, h, w, "cpu"))
        common = ["decode", str(work / "z.latent"), "--vae", str(work / "wan2.1.safetensors"), "--format", "ffv1-mkv", "--overwrite",
                  "--tiling", "auto", "--precision", "bf16", "--device", "cuda"]  # fmt: skip
        seconds = {}
        for n in (1, 2):
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"] if n > 1 else [sys.executable]
            begin = time.perf_counter()
            res = subprocess.run([*launcher, "-m", "wan_vae", *common, "-o", str(work / f"{n}.mkv")], cwd=ROOT, capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(res.stderr[-500:])
            seconds[n] = time.perf_counter() - begin
        return {"seconds": seconds[2], "one_rank_seconds": seconds[1], "speedup": seconds[1] / seconds[2]}

    guarded(rows, "torch.distributed: two ranks against one (decode + FFV1 write, whole command)", ranks)


# ------------------------------------------------------------------------------------------ the report


def environment(args) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": args.device, "quick": args.quick}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        info |= {"gpu": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "cudnn": torch.backends.cudnn.version(),
                 "cuda": torch.version.cuda}  # fmt: skip
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def markdown(title: str, rows: list[dict]) -> str:
    keys = [k for k in ("seconds", "peak_allocated_gb", "peak_reserved_gb", "peak_rss_gb", "max_abs", "rel_l2", "speedup", "tiling", "note")
            if any(k in r for r in rows)]  # fmt: skip

    def cell(value) -> str:
        return f"{value:.3g}" if isinstance(value, float) else "" if value is None else str(value)

    lines = [f"### {title}", "", "| case | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += ["| " + r["case"] + " | " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


SECTIONS = {"parity": parity, "decode": decode, "encode": encode, "knobs": knobs, "devices": devices}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (and reduced widths): a minute or two on a CPU")
    parser.add_argument("--out", required=True, help="folder for report.json (and the distributed case's files)")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="some sections only")
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (reference §4)
    started = time.perf_counter()
    models = Models(args.device, real=not args.quick)
    report = {"environment": environment(args), "sections": {}}
    print(f"GPU report on {report['environment']}", flush=True)
    for name, section in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"{name}:", flush=True)
        rows: list[dict] = []
        section(args, models, rows)
        report["sections"][name] = rows
    report["seconds"] = time.perf_counter() - started
    (Path(args.out) / "report.json").write_text(json.dumps(report, indent=1))
    print()
    print("\n\n".join(markdown(name, rows) for name, rows in report["sections"].items()))
    print(f"\n{report['seconds']:.0f} s in all; report.json in {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
