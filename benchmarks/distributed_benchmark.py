"""What splitting a decode over processes costs: one process against two gloo processes doing the same work.

    python benchmarks/distributed_benchmark.py [--latent-frames 3] [--workdir DIR]

Both decode the same latent (Wan 2.1, real-size random weights, 240x416) with the same 256 px tiles
(1x2) to a lossless FFV1 file through the command line, and the time each reports for its decode and
write is compared. On a 2-core CPU two processes cannot be faster than one process using both cores:
the difference is what the split costs (the middle block run on every rank, the all-gather after
each chunk, sending the tiles to rank 0). On a machine with several GPUs, pass --device cuda and
--nproc N to measure 1 against N GPUs.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]


def timed(cmd: list[str]) -> float:
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-3000:])
    return float(re.search(r"in ([\d.]+) s", res.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent-frames", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import torch

    from decode_benchmark import make_weights
    from wan_vae.files.latents import write_latent_file

    workdir = args.workdir or Path(tempfile.gettempdir()) / "wan_vae_bench"
    workdir.mkdir(parents=True, exist_ok=True)
    make_weights(workdir, ("2.1",))
    latent = workdir / f"dist_{args.latent_frames}.latent"
    write_latent_file(latent, torch.randn(1, 16, args.latent_frames, 30, 52, generator=torch.Generator().manual_seed(0)))
    common = ["decode", str(latent), "--vae", str(workdir / "wan2.1.safetensors"), "--format", "ffv1-mkv", "--overwrite",
              "--tiling", "on", "--tile-size", "256", "--device", args.device]  # fmt: skip
    one = timed([sys.executable, "-m", "wan_vae", *common, "-o", str(workdir / "one.mkv")])
    many = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
                  "-m", "wan_vae", *common, "-o", str(workdir / "many.mkv")])  # fmt: skip
    frames = 1 + 4 * (args.latent_frames - 1)
    print(f"| decode + write, Wan 2.1 240x416, {frames} frames, 1x2 tiles | seconds |\n|---|---|")
    print(f"| one process ({args.device}) | {one:.1f} |\n| {args.nproc} processes ({args.device}) | {many:.1f} |")
    print(f"\n- {args.nproc} processes / one: {many / one:.2f}x the time")


if __name__ == "__main__":
    main()
