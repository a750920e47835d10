"""Exact tiles: time, peak memory and the planner's estimate for untiled and tiled decodes, side by side.

    python benchmarks/tiling_benchmark.py [--quick] [--device cpu|cuda] [--workdir DIR]

Each case runs in a fresh process (benchmarks/decode_benchmark.py's worker: seeded real-size random
weights, fp32). Per video size: untiled, tiles of 512, 384 and 256 px, `tiling="auto"` with a budget of
half the untiled peak, and the streamed decode (`decode_frames`) with 256 px tiles. Columns: the grid,
time and its ratio to untiled, the work model's ratio (multiply-adds with the halos), measured peak
RSS (or VRAM on CUDA), the planner's estimate and its ratio to the measured peak, and the largest
difference from the untiled frames. `--upscale` measures spacepxl's 2x upscale decoder instead, decoding to
1280x720 (a 640x360 video's latent): untiled, and `auto` with a budget of half that peak and of 1.1 GiB (near the least it plans for).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_benchmark import make_weights, print_table, run_case  # noqa: E402

CASES = [("2.1", [1, 16, 2, 60, 104]), ("2.1", [1, 16, 5, 60, 104]), ("2.2", [1, 48, 1, 44, 80])]
TILES = (512, 384, 256)


def runner(args, base: dict, prefix: str, size: str = ""):
    """run(label, **options): one case in a fresh worker, its output saved under `prefix` + label, printed as it ends."""
    peak = "peak_vram_gb" if args.device == "cuda" else "peak_rss_mb"
    scale_mb = 1024 if args.device == "cuda" else 1

    def run(label, **opts):
        save = str(Path(base["workdir"]) / f"{prefix}{label.replace(' ', '_')}.pt")
        res = run_case({**base, "save": save, **opts})
        res.update(label=label, save=save, peak_mb=res[peak] * scale_mb)
        print(f"  {size}{label:32s} {res['seconds']:7.1f} s  {res['peak_mb']:7.0f} MB  (estimate {res['estimate_mb']:.0f} MB)", flush=True)
        return res

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="only Wan 2.1 480x832 with 2 latent frames")
    parser.add_argument("--wan22-frames", type=int, default=1, help="latent frames of the Wan 2.2 704x1280 case (default 1)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--upscale", action="store_true", help="the 2x upscale decoder, 1280x720 out, auto tiles")
    args = parser.parse_args()
    import torch

    if args.upscale:
        return upscale(args)

    workdir = args.workdir or Path(tempfile.gettempdir()) / "wan_vae_bench"
    workdir.mkdir(parents=True, exist_ok=True)
    cases = CASES[:1] if args.quick else [c if c[0] == "2.1" else ("2.2", [1, 48, args.wan22_frames, 44, 80]) for c in CASES]
    make_weights(workdir, sorted({v for v, _ in cases}))
    lines, notes = [], []
    for version, latent in cases:
        s = 8 if version == "2.1" else 16
        size = f"Wan {version} {latent[4] * s}x{latent[3] * s}, {1 + 4 * (latent[2] - 1)} frames"
        base = {"device": args.device, "workdir": str(workdir), "impl": "ours", "version": version, "latent": latent, "dtype": "fp32"}
        run = runner(args, base, f"tile_{version}_{latent[2]}_", f"{size}, ")

        untiled = run("untiled", tiling="off")
        runs = [untiled] + [run(f"{t} px tiles", tiling="on", tile_size=t) for t in TILES]
        budget = int(untiled["peak_mb"] * 2**20 / 2)
        auto = run("auto, half the untiled peak", tiling="auto", memory_budget=budget)
        runs.append(auto)
        streamed = run("streamed, 256 px tiles", tiling="on", tile_size=256, stream=True)
        reference = torch.load(untiled["save"])
        for r in runs:
            diff = (torch.load(r["save"]) - reference).abs().max().item() if r is not untiled else 0.0
            lines.append(f"| {size} | {r['label']} | {r['grid']} | {r['seconds']:.1f} | {r['seconds'] / untiled['seconds']:.2f} | "
                         f"{r['work_ratio']:.2f} | {r['peak_mb']:.0f} | {r['peak_mb'] / untiled['peak_mb']:.2f} | "
                         f"{r['estimate_mb']:.0f} | {r['estimate_mb'] / r['peak_mb']:.2f} | {diff:.1e} |")  # fmt: skip
        lines.append(f"| {size} | {streamed['label']} | {streamed['grid']} | {streamed['seconds']:.1f} | "
                     f"{streamed['seconds'] / untiled['seconds']:.2f} | {streamed['work_ratio']:.2f} | {streamed['peak_mb']:.0f} | "
                     f"{streamed['peak_mb'] / untiled['peak_mb']:.2f} | {streamed['estimate_mb']:.0f} | "
                     f"{streamed['estimate_mb'] / streamed['peak_mb']:.2f} | (not kept) |")  # fmt: skip
        t256 = runs[TILES.index(256) + 1]
        notes.append(f"{size}: 256 px tiles peak {t256['peak_mb'] / untiled['peak_mb']:.2f}x untiled (target <= 0.5); "
                     f"auto at {budget / 2**20:.0f} MB picked {auto['grid']}, peak {auto['peak_mb']:.0f} MB "
                     f"({'within' if auto['peak_mb'] * 2**20 <= budget else 'OVER'} the budget), time "
                     f"{auto['seconds'] / untiled['seconds']:.2f}x untiled (target <= 1.25)")  # fmt: skip
    print_table(f"| video | decode | grid | time s | time / untiled | work / untiled | peak {'VRAM' if args.device == 'cuda' else 'RSS'} MB | "
                "peak / untiled | estimate MB | estimate / peak | max abs vs untiled |", lines, notes)


def upscale(args) -> None:
    """The 2x upscale decoder decoding to 1280x720: untiled, and auto at half its peak and at 1.1 GiB."""
    import torch

    workdir = args.workdir or Path(tempfile.gettempdir()) / "wan_vae_bench"
    workdir.mkdir(parents=True, exist_ok=True)
    make_weights(workdir, ("2.1",), "-up2")
    latent = [1, 16, 2, 45, 80]
    base = {"device": args.device, "workdir": str(workdir), "impl": "ours", "version": "2.1", "variant": "-up2", "latent": latent,
            "dtype": "fp32"}  # fmt: skip
    size = "2x upscale decoder, 640x360 latent -> 1280x720, 5 frames"
    run = runner(args, base, "up2_")

    untiled = run("untiled", tiling="off")
    budgets = (("half the untiled peak", int(untiled["peak_mb"] * 2**20 / 2)), ("1.1 GiB", int(1.1 * 2**30)))  # 1.1: near the least
    runs = [untiled] + [run(f"auto, {name}", tiling="auto", memory_budget=budget) for name, budget in budgets]
    reference = torch.load(untiled["save"])
    lines = [f"| {size} | {r['label']} | {r['grid']} | {r['seconds']:.1f} | {r['seconds'] / untiled['seconds']:.2f} | "
             f"{r['peak_mb']:.0f} | {r['peak_mb'] / untiled['peak_mb']:.2f} | {r['estimate_mb']:.0f} | "
             f"{r['estimate_mb'] / r['peak_mb']:.2f} | {(torch.load(r['save']) - reference).abs().max().item():.1e} |" for r in runs]  # fmt: skip
    print_table(f"| video | decode | grid | time s | time / untiled | peak {'VRAM' if args.device == 'cuda' else 'RSS'} MB | "
                "peak / untiled | estimate MB | estimate / peak | max abs vs untiled |", lines, [])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
