"""Time and peak memory of a decode for each kind of VAE file (docs/vae-files.md's cost column), on this machine.

    python benchmarks/vae_files_table.py [--cases wan21 alpha flash qwen21_1024 qwen21_2048] [--frames 81]

Each case runs in a fresh process (peak RSS is the process's high-water mark, weights included), with seeded
random weights at the real widths: the time and memory of a file do not depend on its values. Video cases decode
`--frames` frames at 832x480 with `decode_frames` (streamed, as Wan Decode to Video runs them; `alpha` is the Wan-Alpha
pair, both decoders on every chunk); the image VAE decodes one picture with tiling auto.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CASES = ("wan21", "alpha", "flash", "qwen21_1024", "qwen21_2048")  # wan21 first: the others are read beside it


def _vae(case: str):
    from wan_vae.alpha_pair import pair_alpha
    from wan_vae.files.config import CONFIGS
    from wan_vae.network.flash_vaed import FlashModel
    from wan_vae.network.model import WanVAEModel
    from wan_vae.vae import load_vae

    torch.manual_seed(0)
    if case == "flash":
        model = FlashModel(16, (384, 192, 24, 12))
    else:
        model = WanVAEModel(CONFIGS["qwen-image-2.1" if case.startswith("qwen") else "2.1"])
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    vae = load_vae(model.state_dict(), name=case)
    return pair_alpha(vae, _vae("wan21")) if case == "alpha" else vae


def run_case(case: str, frames: int) -> dict:
    vae = _vae(case)
    if case.startswith("qwen"):
        side = int(case.rsplit("_", 1)[1]) // 16
        z = torch.randn(1, 64, 1, side, side)
        start = time.perf_counter()
        vae.decode(z, tiling="auto")
    else:
        z = torch.randn(1, 16, 1 + (frames - 1) // 4, 480 // 8, 832 // 8)
        start = time.perf_counter()
        for _ in vae.decode_frames(z, dtype=torch.uint8):
            pass
    seconds = time.perf_counter() - start
    return {"case": case, "seconds": round(seconds, 1), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args.frames)))
        return
    print("| case | what | seconds | peak RSS MB | beside wan21 (time, memory) |\n|---|---|---|---|---|")
    base = None  # the Wan 2.1 VAE's row of this run: the others are read beside it
    for case in args.cases:
        out = subprocess.run([sys.executable, __file__, "--one", case, "--frames", str(args.frames)], capture_output=True, text=True)
        if out.returncode:
            print(f"| {case} | failed: {out.stderr.strip().splitlines()[-1]} | | | |")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        base = row if case == "wan21" else base
        ratio = f"{row['seconds'] / base['seconds']:.2f}x, {row['peak_mb'] / base['peak_mb']:.2f}x" if base else ""
        what = f"{args.frames} frames at 832x480" if not case.startswith("qwen") else f"one {case.rsplit('_', 1)[1]}² picture, tiling auto"
        print(f"| {case} | {what} | {row['seconds']} | {row['peak_mb']} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
