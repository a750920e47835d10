"""Decode speed and memory against diffusers AutoencoderKLWan, on CPU (or CUDA with --device cuda); tiles: tiling_benchmark.py.

    python benchmarks/decode_benchmark.py [--device cpu|cuda] [--quick] [--workdir DIR]

Every case runs in a fresh process (wall time of the decode call, peak RSS of the process; peak
VRAM on CUDA) with the same seeded random weights (real-size configs, every parameter perturbed)
and latents. Ratios compare cases measured side by side in this one run. GFLOP/s uses the reference
FLOP count (shared/reference/wan_reference.md section 1.4: 2.1 decoder 3.39 TFLOP per frame at
480x832, 4.35 for the first; 2.2: 7.35 / 9.11), i.e. what the reference executes, so it measures
time saved, not arithmetic done.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

REF_TFLOP_PER_FRAME = {"2.1": (4.35, 3.39), "2.2": (9.11, 7.35)}  # (first frame, later frames) at 480x832


def ref_tflop(version: str, t: int, h_px: int, w_px: int) -> float:
    first, later = REF_TFLOP_PER_FRAME[version]
    return (first + 4 * (t - 1) * later) * h_px * w_px / (480 * 832)


# ------------------------------------------------------------------------------------------ worker


def worker(case: dict) -> dict:
    import torch

    torch.set_num_threads(case.get("threads", torch.get_num_threads()))
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    device, dtype = case["device"], {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[case["dtype"]]
    weights = Path(case["workdir"]) / f"wan{case['version']}{case.get('variant', '')}.safetensors"
    z = torch.randn(case["latent"], generator=torch.Generator().manual_seed(case.get("seed", 0)))
    if case.get("smooth"):
        b, c, t, h, w = z.shape
        small = torch.randn(b, c * t, max(h // 4, 1), max(w // 4, 1), generator=torch.Generator().manual_seed(3))
        z = 1.5 * torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic").view(b, c, t, h, w)
    if case["impl"] == "diffusers":
        from diffusers import AutoencoderKLWan
        from safetensors.torch import load_file

        from reference import diffusers_kwargs

        with torch.device("meta"):
            model = AutoencoderKLWan(**diffusers_kwargs(case["version"], real=True))
        model.load_state_dict(load_file(weights), assign=True)
        model.eval().to(device=device, dtype=dtype)
        if case.get("tiling") == "on":
            model.enable_tiling()

        def run():
            return model.decode(z.to(device=device, dtype=dtype)).sample
    else:
        from wan_vae import load_vae

        vae = load_vae(weights, device=device, dtype=dtype)
        opts = {k: case[k] for k in ("tiling", "tile_size", "tile_overlap", "frames_per_chunk", "memory_budget") if k in case}
        plan = planned_grid(vae, z.shape, opts, streaming=case.get("stream", False))

        def run():
            if case.get("stream"):  # decode_frames: one chunk of frames alive at a time
                for _ in vae.decode_frames(z, **opts):
                    pass
                return None
            return vae.decode(z, **opts)

    out, result = measure(run, device)
    if case["impl"] == "ours":
        result.update(plan)
    if case.get("save") and out is not None:
        torch.save(out.float().cpu(), case["save"])
    return result


def print_table(header: str, lines: list[str], notes: list[str]) -> None:
    """A markdown table (`header`: "| a | b |"), then the notes as a list."""
    print(f"\n{header}\n|{'---|' * header.count(' |')}")
    print("\n".join(lines))
    print()
    for line in notes:
        print("- " + line)


def measure(run, device: str):
    """run()'s output, and its wall time and the process's peak RSS (and peak VRAM on CUDA)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        start = time.perf_counter()
        out = run()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    result = {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        result["peak_vram_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out, result


def planned_grid(vae, shape, opts, streaming: bool = False) -> dict:
    """The tile grid a decode with `opts` runs, and the planner's peak estimate for it (MB)."""
    import math

    from wan_vae.plan import memory
    from wan_vae.plan.tiling import tile_cells

    _, _, t, h, w = shape
    fpc = opts.get("frames_per_chunk", 1)
    if opts.get("tiling") == "auto":
        auto = memory.plan_for_budget(vae, h, w, fpc, opts["memory_budget"], streaming, t, output_on_device=True)
        rows, cols, fpc = auto.rows, auto.cols, auto.frames_per_chunk
    elif opts.get("tiling") == "on":
        cells = tile_cells(opts.get("tile_size", 512), 0, vae.output_scale)
        rows, cols = math.ceil(h / cells), math.ceil(w / cells)
    else:
        rows = cols = 1
    est = memory.estimate(vae, h, w, rows, cols, fpc, streaming, latent_frames=t, output_on_device=True)
    fig = memory.figures(vae)
    work = memory.grid_cost(fig, h, w, rows, cols).work / memory.grid_cost(fig, h, w, 1, 1).work
    return {"grid": f"{rows}x{cols}", "estimate_mb": est / 2**20, "work_ratio": work}


# ------------------------------------------------------------------------------------------ driver


VARIANTS = {"": {}, "-up2": {"out_channels": 12}}  # the standard VAE; spacepxl's 2x upscale decoder (12 head channels)


def make_weights(workdir: Path, versions, variant: str = "") -> None:
    import torch
    from safetensors.torch import save_file

    from reference import reference_model

    for version in versions:
        path = workdir / f"wan{version}{variant}.safetensors"
        if not path.exists():
            sd = reference_model(version, real=True, **VARIANTS[variant]).state_dict()
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
            del sd
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


def fast_bf16(device: str) -> bool:
    """Whether bf16 convolutions run natively here: on a CPU without them (no AVX-512 BF16 or AMX) oneDNN falls back
    to a kernel tens of times slower than fp32, which measures nothing but the fallback."""
    import torch

    if torch.device(device).type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # not a oneDNN build: try it
        return True


def run_case(case: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(case)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rel_l2(a_path, b_path) -> float:
    import torch

    a, b = torch.load(a_path).double(), torch.load(b_path).double()
    return ((a - b).norm() / b.norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="only the 240x416 Wan 2.1 comparison")
    parser.add_argument("--workdir", type=Path, default=None, help="where the random-weight files are kept")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    workdir = args.workdir or Path(tempfile.gettempdir()) / "wan_vae_bench"
    workdir.mkdir(parents=True, exist_ok=True)
    make_weights(workdir, ("2.1",) if args.quick else ("2.1", "2.2"))
    base = {"device": args.device, "workdir": str(workdir)}
    if args.threads:
        base["threads"] = args.threads
    rows = []

    def measure(label, impl, version, latent, dtype="fp32", **opts):
        save = str(workdir / f"out_{len(rows)}.pt")
        case = {**base, "impl": impl, "version": version, "latent": latent, "dtype": dtype, "save": save, **opts}
        res = run_case(case)
        t, h, w = latent[2], latent[3] * (8 if version == "2.1" else 16), latent[4] * (8 if version == "2.1" else 16)
        res.update(label=label, impl=impl, version=version, dtype=dtype, save=save,
                   size=f"{1 + 4 * (t - 1)}f {h}x{w}", gflops=ref_tflop(version, t, h, w) * 1000 / res["seconds"])  # fmt: skip
        rows.append(res)
        print(f"  {label:44s} {res['seconds']:7.1f} s  {res['peak_rss_mb']:7.0f} MB", flush=True)
        return res

    print(f"Decode benchmark on {args.device}; each case in a fresh process", flush=True)
    small = [1, 16, 2, 30, 52]
    ref = measure("diffusers fp32, untiled", "diffusers", "2.1", small)
    ours = measure("ours fp32, untiled", "ours", "2.1", small)
    ours["err"] = rel_l2(ours["save"], ref["save"])
    ratios = [
        f"ours/diffusers time {ours['seconds'] / ref['seconds']:.2f}x (target <= 0.77), "
        f"peak RSS {ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x (target <= 0.6); rel L2 vs diffusers {ours['err']:.1e}",
    ]
    bf16 = fast_bf16(args.device)
    if bf16:
        ours16 = measure("ours bf16, untiled", "ours", "2.1", small, dtype="bf16")
        ours16["err"] = rel_l2(ours16["save"], ours["save"])
        ratios.append(f"bf16: {ref['seconds'] / ours16['seconds']:.2f}x faster than diffusers fp32 (target >= 2.5), "
                      f"{ours['seconds'] / ours16['seconds']:.2f}x faster than ours fp32; rel L2 vs ours fp32 {ours16['err']:.1e} "
                      "(target <= 1e-2)")  # fmt: skip
    else:
        ratios.append("bf16: not measured: this CPU has no native bf16 convolutions (oneDNN says so), and its fallback "
                      "kernel is tens of times slower than fp32")  # fmt: skip
    if not args.quick:
        r22 = measure("diffusers fp32, Wan 2.2, untiled", "diffusers", "2.2", [1, 48, 2, 15, 26])
        o22 = measure("ours fp32, Wan 2.2, untiled", "ours", "2.2", [1, 48, 2, 15, 26])
        line = (f"Wan 2.2 5f 240x416: ours/diffusers time {o22['seconds'] / r22['seconds']:.2f}x, "
                f"peak RSS {o22['peak_rss_mb'] / r22['peak_rss_mb']:.2f}x, rel L2 {rel_l2(o22['save'], r22['save']):.1e}")
        if bf16:
            h22 = measure("ours bf16, Wan 2.2, untiled", "ours", "2.2", [1, 48, 2, 15, 26], dtype="bf16")
            line += (f"; bf16 {r22['seconds'] / h22['seconds']:.2f}x faster than diffusers fp32, rel L2 vs ours fp32 "
                     f"{rel_l2(h22['save'], o22['save']):.1e}")
        ratios.append(line)

    print("\n| case | frames | time s | peak RSS MB | GFLOP/s (ref count) |" + (" peak VRAM GB |" if args.device == "cuda" else ""))
    print("|---|---|---|---|---|" + ("---|" if args.device == "cuda" else ""))
    for r in rows:
        vram = f" {r['peak_vram_gb']:.2f} |" if "peak_vram_gb" in r else ""
        print(f"| {r['label']} (Wan {r['version']}) | {r['size']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['gflops']:.0f} |{vram}")
    print()
    for line in ratios:
        print("- " + line)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
