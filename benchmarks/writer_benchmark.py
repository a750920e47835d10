"""Video export speed and memory: write_video against the seed's approach (imageio writer, all frames in memory).

    python benchmarks/writer_benchmark.py

81 frames at 480x832 to H.264 (crf 19, preset medium, yuv420p) in both; each case in a fresh process,
wall time and peak RSS. Then write_video fed by a generator of 4-frame chunks for 81 and 321 frames:
its peak RSS must stay flat.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
H, W = 480, 832


def synthetic(start: int, count: int):
    """Frames [count, H, W, 3] float32 in [0, 1]: moving gradients, as a decoder would hand them over."""
    import torch

    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    t = torch.arange(start, start + count, dtype=torch.float32)[:, None, None]
    r = 0.5 + 0.4 * torch.sin(6.28 * (x + 0.01 * t))
    g = (0.2 + 0.6 * y).expand_as(r)
    b = 0.5 + 0.3 * torch.cos(6.28 * (x * y + 0.02 * t))
    return torch.stack([r, g, b], -1)


def worker(case: dict) -> dict:
    import numpy as np

    out = Path(case["out"])
    start = time.perf_counter()
    if case["impl"] == "seed":
        import imageio

        frames = [(f.numpy() * 255).astype(np.uint8) for f in synthetic(0, case["frames"])]  # as export_to_video does
        with imageio.get_writer(out, fps=16, codec="libx264", quality=None, macro_block_size=16,
                                output_params=["-crf", "19", "-preset", "medium"]) as writer:  # fmt: skip
            for frame in frames:
                writer.append_data(frame)
    else:
        from wan_vae.video.writer import write_video

        if case["impl"] == "tensor":
            frames = synthetic(0, case["frames"])
        else:
            frames = (synthetic(i, min(4, case["frames"] - i)) for i in range(0, case["frames"], 4))
        write_video(frames, out, fps=16, quality=80)  # quality 80 = crf 19
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "mb": out.stat().st_size / 2**20}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, impl, frames in [
            ("seed: imageio writer, frames list in memory", "seed", 81),
            ("write_video, whole float tensor", "tensor", 81),
            ("write_video, generator of 4-frame chunks", "generator", 81),
            ("write_video, generator of 4-frame chunks", "generator", 321),
            ("seed: imageio writer, frames list in memory", "seed", 321),
        ]:
            case = {"impl": impl, "frames": frames, "out": str(Path(tmp) / f"{impl}{frames}.mp4")}
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(case)], capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            res = json.loads(proc.stdout.strip().splitlines()[-1]) | {"label": label, "frames": frames}
            rows.append(res)
            print(f"  {label:45s} {frames:4d} frames {res['seconds']:6.1f} s {res['peak_rss_mb']:7.0f} MB", flush=True)
    print(f"\n| {H}x{W} H.264 crf 19 | frames | time s | peak RSS MB | file MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['frames']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['mb']:.1f} |")
    seed, ours, g81, g321 = rows[0], rows[1], rows[2], rows[3]
    print(f"\n- write_video / seed time (81 frames): {ours['seconds'] / seed['seconds']:.2f}x; "
          f"peak RSS {ours['peak_rss_mb']:.0f} vs {seed['peak_rss_mb']:.0f} MB")  # fmt: skip
    print(f"- generator peak RSS 81 -> 321 frames: {g81['peak_rss_mb']:.0f} -> {g321['peak_rss_mb']:.0f} MB "
          f"(seed: {seed['peak_rss_mb']:.0f} -> {rows[4]['peak_rss_mb']:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
