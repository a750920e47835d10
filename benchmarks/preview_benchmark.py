"""What the decode previews cost: the newest frame shown on the node at most once a second.

    python benchmarks/preview_benchmark.py [--decode]

1. Per preview, at 480x832 and 720x1280: the node's work (frame -> uint8 -> PIL image, nodes/comfy_host.py
   NodeProgress.preview) plus what ComfyUI's server then does with it (scale to 512 px, JPEG at quality 95,
   server.py send_image), in this process as the worst case. At one preview a second, that time over one
   second is the share of decode time previews can take, whatever the device (the decode does not wait
   for the server, but on the CPU they share cores).
2. --decode: Wan Decode Latents side by side with and without previews (real-size Wan 2.1, random weights,
   240x416, 5 latent frames, CPU fp32), each in a fresh process; ratio of wall times.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _comfy_host():
    """nodes/comfy_host.py alone (the nodes package needs the pack's parent package; this module does not)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("comfy_host", ROOT / "nodes" / "comfy_host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preview_cost_ms(height: int, width: int, repeats: int = 20) -> tuple[float, float]:
    import torch
    from PIL import ImageOps

    NodeProgress = _comfy_host().NodeProgress
    sent = []

    class Bar:  # ComfyUI's ProgressBar hands the preview to the server; keep it to encode as the server does
        def update_absolute(self, value, total=None, preview=None):
            if preview is not None:
                sent.append(preview)

    shown = NodeProgress(interval_s=0.0)
    shown.bar = Bar()
    frame = torch.rand(height, width, 3)
    node = server = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        shown.preview(frame)
        t1 = time.perf_counter()
        kind, image, size = sent.pop()
        small = ImageOps.contain(image, (size, size))
        small.save(io.BytesIO(), format=kind, quality=95)
        t2 = time.perf_counter()
        node, server = node + (t1 - t0), server + (t2 - t1)
    return node / repeats * 1000, server / repeats * 1000


def decode_worker(previews: bool) -> dict:
    import torch

    from reference import latents, write_vae_file
    from wan_vae import load_vae

    host = _comfy_host()
    torch.set_num_threads(2)
    path = Path("/tmp/preview_benchmark_vae.safetensors")
    if not path.exists():
        write_vae_file(path, "2.1", torch.float32, real=True)
    vae = load_vae(path)
    z = latents("2.1", (1, 5, 30, 52))
    shown = host.NodeProgress()
    start = time.perf_counter()
    vae.decode(z, layout="images", progress=shown.progress, preview=shown.preview if previews else None)
    return {"seconds": time.perf_counter() - start, "previews": shown.previews}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decode", action="store_true")
    parser.add_argument("--worker", choices=["on", "off"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(decode_worker(args.worker == "on")))
        return
    print("| frame | node: frame -> PIL ms | server: scale + JPEG ms | total ms | share of decode time at 1 preview/s |")
    print("|---|---|---|---|---|")
    for h, w in ((480, 832), (720, 1280)):
        node, server = preview_cost_ms(h, w)
        print(f"| {w}x{h} | {node:.1f} | {server:.1f} | {node + server:.1f} | {(node + server) / 10:.2f} % |")
    if args.decode:
        runs = {}
        for case in ("off", "on", "off", "on"):
            out = subprocess.run([sys.executable, __file__, "--worker", case], capture_output=True, text=True, check=True)
            runs.setdefault(case, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
        off = min(r["seconds"] for r in runs["off"])
        on = min(r["seconds"] for r in runs["on"])
        print(f"\nWan Decode Latents, Wan 2.1 416x240, 17 frames, CPU fp32 (best of 2): without previews {off:.1f} s, "
              f"with {on:.1f} s ({runs['on'][0]['previews']} previews): {on / off:.3f}x")


if __name__ == "__main__":
    main()
