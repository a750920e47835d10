"""Exact tiled encode: time, peak memory and the planner's estimate, against diffusers' encode, side by side.

    python benchmarks/encode_benchmark.py [--quick] [--device cpu|cuda] [--workdir DIR]
    python benchmarks/encode_benchmark.py --stream-frames 81,1001   # CLI encode RSS against the video's length

Each case runs in a fresh process with the same seeded real-size random weights (decode_benchmark.py's
files) and the same smooth random video. Cases: diffusers `AutoencoderKLWan.encode` (posterior mean),
ours untiled, tiles of 512, 384 and 256 px (the planner splitting the down path where that is less work:
encode_memory.best_split), 256 px tiles unsplit (as before splits: every tile carries the whole down
path's margin), `tiling="auto"` with a budget of half the untiled peak, and `encode_frames` (frames
streamed in chunks of 8, 256 px tiles). Columns: grid, split, time and its ratio to
untiled, peak RSS (VRAM on CUDA) and its ratio, the planner's estimate and its ratio to the measured
peak, and the largest difference from our untiled latents (and diffusers' from ours).

`--stream-frames` writes videos of the given lengths (64x64, H.264) and encodes each with
`python -m wan_vae encode` (reduced-width random weights: the network's size does not change what
streaming holds), printing the process's peak RSS for each length.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]
from decode_benchmark import make_weights, measure, print_table  # noqa: E402

CASES = [("2.1", (9, 480, 832)), ("2.2", (5, 704, 1280))]
TILES = (512, 384, 256)


def smooth_video(frames: int, height: int, width: int, seed: int = 0):
    """[1, 3, F, H, W] in [-1, 1]: bicubic-upsampled noise, so that tiles see image-like content."""
    import torch

    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3 * frames, max(height // 16, 1), max(width // 16, 1), generator=g) * 2 - 1
    big = torch.nn.functional.interpolate(small, size=(height, width), mode="bicubic").clamp_(-1, 1)
    return big.view(1, 3, frames, height, width)


def worker(case: dict) -> dict:
    import torch

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    device = case["device"]
    weights = Path(case["workdir"]) / f"wan{case['version']}.safetensors"
    f, h, w = case["video"]
    x = None if case.get("stream") else smooth_video(f, h, w).to(device)
    result = {}
    if case["impl"] == "diffusers":
        from diffusers import AutoencoderKLWan
        from safetensors.torch import load_file

        from reference import diffusers_kwargs

        with torch.device("meta"):
            model = AutoencoderKLWan(**diffusers_kwargs(case["version"], real=True))
        model.load_state_dict(load_file(weights), assign=True)
        model.eval().to(device=device)

        def run():
            return model.encode(x).latent_dist.mean
    else:
        from wan_vae import Options, load_vae
        from wan_vae.plan import encode_memory

        if case.get("unsplit"):  # the encode as it ran before splits: one segment, the whole margin per tile
            encode_memory.best_split = lambda *args, **kwargs: None
        vae = load_vae(weights, device=device)
        # The file is mapped: weights the encode never reads (the decoder's) would stay out of RSS. In ComfyUI,
        # and in diffusers here, they are all in memory, so they are read once here, as the planner counts them.
        sum(p.float().sum().item() for p in vae.model.parameters())
        options = Options(**{k: case[k] for k in ("tiling", "tile_size", "frames_per_chunk", "memory_budget") if k in case})
        result.update(planned(vae, (f, h, w), options, encode_memory, streaming=bool(case.get("stream"))))

        def run():
            if case.get("stream"):
                def chunks():  # the video made 8 frames at a time, never whole
                    video = smooth_video(f, h, w)
                    for f0 in range(0, f, 8):
                        yield ((video[0, :, f0 : f0 + 8] + 1) / 2).permute(1, 2, 3, 0).contiguous()
                    del video

                return vae.encode_frames(chunks(), options=options)
            return vae.encode(x, options=options)

    out, measured = measure(run, device)
    result.update(measured)
    torch.save(out.float().cpu(), case["save"])
    return result


def planned(vae, video, options, encode_memory, streaming: bool) -> dict:
    """The grid an encode with `options` runs and the planner's estimate for it (MB)."""
    from wan_vae.run.encode import make_encode_plan

    f, h, w = video
    video_bytes = 0 if streaming else 3 * f * h * w * 4
    plan = make_encode_plan(vae, h, w, None if streaming else f, options, streaming=streaming, video_bytes=video_bytes)
    tiles = plan.segments[0].tiles
    rows, cols = len({t.y0 for t in tiles}), len({t.x0 for t in tiles})
    s = vae.spatial_scale
    t = 1 + (f - 1) // 4
    est, work = encode_memory.estimate(vae, h // s, w // s, rows, cols, plan.frames_per_chunk, streaming,
                                       None if streaming else t, video_bytes, split=plan.split)  # fmt: skip
    whole = encode_memory.estimate(vae, h // s, w // s, 1, 1)[1]
    split = plan.split and f"stage {plan.split.stage}, rest {'in the tiles' if plan.split.rest_tiled else 'whole'}"
    return {"grid": f"{rows}x{cols}", "split": split or "", "estimate_mb": est / 2**20, "work_ratio": work / whole}


def run_case(case: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(case)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(args, workdir: Path, version: str, video) -> tuple[list[str], list[str]]:
    import torch

    f, h, w = video
    size = f"Wan {version} {w}x{h}, {f} frames"
    base = {"device": args.device, "workdir": str(workdir), "impl": "ours", "version": version, "video": list(video)}
    peak = "peak_vram_gb" if args.device == "cuda" else "peak_rss_mb"
    scale_mb = 1024 if args.device == "cuda" else 1

    def run(label, **opts):
        save = str(workdir / f"enc_{version}_{f}_{label.replace(' ', '_').replace(',', '')}.pt")
        res = run_case({**base, "save": save, **opts})
        res.update(label=label, save=save, peak_mb=res[peak] * scale_mb)
        est = f"(estimate {res['estimate_mb']:.0f} MB)" if "estimate_mb" in res else ""
        print(f"  {size}, {label:30s} {res['seconds']:7.1f} s  {res['peak_mb']:7.0f} MB  {est}", flush=True)
        return res

    reference = run("diffusers encode", impl="diffusers")
    untiled = run("ours untiled", tiling="off")
    runs = [untiled] + [run(f"ours {t} px tiles", tiling="on", tile_size=t) for t in TILES]
    runs.append(run("ours 256 px tiles, unsplit", tiling="on", tile_size=256, unsplit=True))
    budget = int(untiled["peak_mb"] * 2**20 / 2)
    runs.append(run("ours auto, half the untiled peak", tiling="auto", memory_budget=budget))
    runs.append(run("ours streamed, 256 px tiles", tiling="on", tile_size=256, stream=True))
    ours = torch.load(untiled["save"])
    lines = [f"| {size} | {reference['label']} | | | {reference['seconds']:.1f} | {reference['seconds'] / untiled['seconds']:.2f} | "
             f"{reference['peak_mb']:.0f} | {reference['peak_mb'] / untiled['peak_mb']:.2f} | | | "
             f"{(torch.load(reference['save']) - ours).abs().max().item():.1e} |"]  # fmt: skip
    for r in runs:
        diff = (torch.load(r["save"]) - ours).abs().max().item()
        lines.append(f"| {size} | {r['label']} | {r['grid']} | {r['split']} | {r['seconds']:.1f} | {r['seconds'] / untiled['seconds']:.2f} | "
                     f"{r['peak_mb']:.0f} | {r['peak_mb'] / untiled['peak_mb']:.2f} | {r['estimate_mb']:.0f} | "
                     f"{r['estimate_mb'] / r['peak_mb']:.2f} | {diff:.1e} |")  # fmt: skip
    t256, unsplit = runs[TILES.index(256) + 1], runs[len(TILES) + 1]
    notes = [f"{size}: 256 px tiles peak {t256['peak_mb'] / untiled['peak_mb']:.2f}x untiled (target <= 0.5) at "
             f"{t256['seconds'] / untiled['seconds']:.2f}x its time (target <= 1.3); ours untiled vs diffusers: "
             f"{untiled['seconds'] / reference['seconds']:.2f}x the time, {untiled['peak_mb'] / reference['peak_mb']:.2f}x the peak; "
             f"256 px tiles unsplit: {unsplit['seconds'] / untiled['seconds']:.2f}x the time, {unsplit['peak_mb'] / untiled['peak_mb']:.2f}x the peak"]  # fmt: skip
    return lines, notes


def stream_lengths(workdir: Path, lengths: list[int]) -> None:
    """Peak RSS of `python -m wan_vae encode` against the video's length."""
    import imageio.v2 as imageio
    import numpy as np

    from reference import write_vae_file

    vae = write_vae_file(workdir / "reduced_wan2.1.safetensors", "2.1")
    print("| frames | encode s | peak RSS MB |\n|---|---|---|")
    for n in lengths:
        video = workdir / f"stream_{n}.mp4"
        if not video.exists():
            rng = np.random.default_rng(0)
            with imageio.get_writer(video, fps=16, codec="libx264", macro_block_size=1) as out:
                for _ in range(n):
                    out.append_data(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        code = ("import resource, runpy, sys; sys.argv = ['wan_vae', 'encode', *sys.argv[1:]]\n"
                "try:\n    runpy.run_module('wan_vae', run_name='__main__')\nexcept SystemExit: pass\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, str(video), "--vae", str(vae), "-o", str(workdir / f"stream_{n}.latent"),
                               "--overwrite", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        print(f"| {n} | {time.perf_counter() - start:.1f} | {float(proc.stdout.strip().splitlines()[-1]):.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="only Wan 2.1 832x480, 9 frames")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--stream-frames", help="comma-separated video lengths for the CLI streaming check")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    workdir = args.workdir or Path(tempfile.gettempdir()) / "wan_vae_bench"
    workdir.mkdir(parents=True, exist_ok=True)
    if args.stream_frames:
        stream_lengths(workdir, [int(n) for n in args.stream_frames.split(",")])
        return
    cases = CASES[:1] if args.quick else CASES
    make_weights(workdir, sorted({v for v, _ in cases}))
    lines, notes = [], []
    for version, video in cases:
        more_lines, more_notes = compare(args, workdir, version, video)
        lines += more_lines
        notes += more_notes
    print_table(f"| video | encode | grid | split | time s | time / untiled | peak {'VRAM' if args.device == 'cuda' else 'RSS'} MB | "
                "peak / untiled | estimate MB | estimate / peak | max abs vs ours untiled |", lines, notes)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
