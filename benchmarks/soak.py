"""Soak: many runs back to back in one real ComfyUI, and what each leaves behind.

    COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=...] python benchmarks/soak.py [--runs 40] [--plot docs/soak_rss.svg]

Starts ComfyUI on the CPU (a temporary --base-directory with random-weight VAEs, as tests/test_real_comfyui.py does)
and queues `--runs` prompts one after the other, cycling through every decode path: Wan Decode Latents -> Export
Video, Wan Decode to Video, core Load VAE's VAE in Wan Decode Latents, a tiny decoder (taew2_1), core VAE Decode
through Wan VAE for Core Nodes, and Wan Encode -> Wan Decode to Video. Every fifth run is a long decode stopped
midway (POST /interrupt). After each run it records the server's RSS and threads, ffmpeg processes under the server,
the pack's partial files, and whether each finished video has all its frames. tests/test_soak.py runs it (opt-in).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from media import probe  # noqa: E402
from reference import latents  # noqa: E402
from test_real_comfyui import _http, _prepare, _run, _start, _stop  # noqa: E402
from test_tiny_decoders import tiny_file  # noqa: E402
from wan_vae.files.latents import write_latent_file  # noqa: E402


def _decode_latents(vae_node: dict, name: str, prefix: str) -> dict:
    return {"1": {"class_type": "LoadLatent", "inputs": {"latent": name}}, "2": vae_node,
            "3": {"class_type": "WanDecodeLatents", "inputs": {"vae": ["2", 0], "samples": ["1", 0], "latent_space": "raw",
                  "tiling": "auto", "tile_size": 512, "tile_overlap": 64, "frames_per_chunk": 1}},
            "4": {"class_type": "ExportVideo", "inputs": {"images": ["3", 0], "fps": 16, "format": "h264-mp4", "quality": 80,
                  "filename_prefix": prefix, "save_metadata": True, "bit_depth": 8}}}  # fmt: skip


def _decode_to_video(vae_node: dict, samples: list, prefix: str) -> dict:
    return {"2": vae_node, "3": {"class_type": "WanDecodeToVideo", "inputs": {"vae": ["2", 0], "samples": samples, "latent_space": "raw",
            "tiling": "auto", "tile_size": 512, "tile_overlap": 64, "frames_per_chunk": 1, "fps": 16, "format": "h264-mp4", "quality": 80,
            "filename_prefix": prefix, "save_metadata": True, "bit_depth": 8, "save_latent": False}}}  # fmt: skip


def _wan_vae(name="wan_2.1_vae.safetensors") -> dict:
    return {"class_type": "LoadWanVAE", "inputs": {"vae_name": name, "precision": "auto", "device": "auto"}}


CORE_VAE = {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_real_size.safetensors"}}


def graph(kind: str, i: int, base: Path) -> tuple[dict, int]:
    """The prompt of run `i` and the frames its video must have; a fresh latent each run, so nothing is cached."""
    name, prefix = f"soak_{i:03d}.latent", f"soak/{kind}_{i:03d}"
    t = 120 if kind == "stopped" else 3
    write_latent_file(base / "input" / name, latents("2.1", (1, t, 8, 8) if kind == "stopped" else (1, t, 6, 10), seed=i))
    load = {"1": {"class_type": "LoadLatent", "inputs": {"latent": name}}}
    frames = 1 + 4 * (t - 1)
    if kind == "decode_latents":
        return _decode_latents(_wan_vae(), name, prefix), frames
    if kind in ("decode_to_video", "stopped"):
        return load | _decode_to_video(_wan_vae(), ["1", 0], prefix), frames
    if kind == "core_load_vae":
        return _decode_latents(CORE_VAE, name, prefix), frames
    if kind == "tiny_decoder":
        return load | _decode_to_video(_wan_vae("taew2_1.safetensors"), ["1", 0], prefix), frames
    if kind == "core_nodes_vae":
        return {**load, "2": CORE_VAE,
                "3": {"class_type": "WanVAEForCoreNodes", "inputs": {"vae": ["2", 0], "tiling": "on", "tile_size": 128, "frames_per_chunk": 1}},
                "4": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["3", 0]}},
                "5": {"class_type": "ExportVideo", "inputs": {"images": ["4", 0], "fps": 16, "format": "h264-mp4", "quality": 80,
                      "filename_prefix": prefix, "save_metadata": True, "bit_depth": 8}}}, frames  # fmt: skip
    if kind == "encode":
        noise = {"class_type": "WanTestNoise", "inputs": {"frames": 9, "width": 80, "height": 48, "seed": i}}
        encode = {"class_type": "WanEncode", "inputs": {"vae": ["2", 0], "images": ["5", 0], "latent_space": "raw", "tiling": "auto",
                  "tile_size": 512, "frames_per_chunk": 1, "trim": False}}  # fmt: skip
        return {"5": noise, "6": encode} | _decode_to_video(_wan_vae(), ["6", 0], prefix), 9
    raise ValueError(kind)


KINDS = ["decode_latents", "decode_to_video", "core_load_vae", "tiny_decoder", "stopped",
         "core_nodes_vae", "encode", "decode_latents", "decode_to_video", "stopped"]  # fmt: skip


def _status(pid: int, key: str) -> int:
    line = next(s for s in Path(f"/proc/{pid}/status").read_text().splitlines() if s.startswith(key + ":"))
    return int(line.split()[1])


def _ffmpeg_children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid \
                    and b"ffmpeg" in (proc / "cmdline").read_bytes():  # fmt: skip
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _stop_midway(url: str, prompt: dict, folder: Path) -> dict:
    status, reply = _http(f"{url}/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
    assert status == 200, reply
    deadline = time.time() + 120
    while not list(folder.glob(".*.wanvae-partial.*")) and time.time() < deadline:  # the video is being written
        time.sleep(0.1)
    time.sleep(0.5)
    _http(f"{url}/interrupt", {})
    while not (history := _http(f"{url}/history/{reply['prompt_id']}")[1]):
        assert time.time() < deadline + 120, "the stopped run did not end"
        time.sleep(0.3)
    return history[reply["prompt_id"]]


def soak(base: Path, runs: int = 40) -> list[dict]:
    _prepare(base)
    tiny_file(base / "models" / "vae" / "taew2_1.safetensors", 16)
    proc, url = _start(base)
    comfy, rows = {"url": url, "base": base}, []
    try:
        for i in range(runs):
            kind = KINDS[i % len(KINDS)]
            prompt, frames = graph(kind, i, base)
            folder = base / "output" / "soak"
            folder.mkdir(parents=True, exist_ok=True)
            start = time.time()
            entry = _stop_midway(url, prompt, folder) if kind == "stopped" else _run(comfy, prompt)[1]
            seconds = time.time() - start
            events = [m[0] for m in entry["status"]["messages"]]
            videos = sorted(folder.glob(f"{kind}_{i:03d}_*.mp4"))
            complete = all(probe(v)["frames"] == frames for v in videos)
            time.sleep(0.5)  # the writer's threads and ffmpeg have had time to end
            rows.append({"run": i + 1, "kind": kind, "seconds": round(seconds, 2), "ended": entry["status"]["status_str"],
                         "interrupted": "execution_interrupted" in events, "videos": len(videos), "complete": complete,
                         "rss_mb": round(_status(proc.pid, "VmRSS") / 1024, 1), "threads": _status(proc.pid, "Threads"),
                         "ffmpeg": len(_ffmpeg_children(proc.pid)), "partials": len(list((base / "output").rglob("*.wanvae-partial.*")))})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    finally:
        _stop(proc)
    return rows


def svg_plot(rows: list[dict], path: Path) -> None:
    """A small line plot of the server's RSS after each run (stopped runs marked), as plain SVG."""
    w, h, pad = 560, 220, 44
    rss = [r["rss_mb"] for r in rows]
    lo, hi = min(rss) * 0.98, max(rss) * 1.02
    x = lambda i: pad + (w - 2 * pad) * i / max(len(rows) - 1, 1)  # noqa: E731
    y = lambda v: h - pad - (h - 2 * pad) * (v - lo) / (hi - lo)  # noqa: E731
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(rss))
    marks = "".join(f'<circle cx="{x(i):.1f}" cy="{y(r["rss_mb"]):.1f}" r="3" fill="#d33"/>' for i, r in enumerate(rows) if r["kind"] == "stopped")
    ticks = "".join(f'<text x="{pad - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>' for v in (lo, (lo + hi) / 2, hi))
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">'
        f'<rect width="{w}" height="{h}" fill="white"/><polyline points="{line}" fill="none" stroke="#2a6" stroke-width="2"/>{marks}{ticks}'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#888"/>'
        f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">run (1-{len(rows)}); red: stopped midway</text>'
        f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">server RSS MB</text></svg>\n'
    )  # fmt: skip


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--plot", type=Path, help="write the RSS curve here as SVG")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = soak(Path(tmp), args.runs)
    first, last = rows[min(4, len(rows) - 1)]["rss_mb"], rows[-1]["rss_mb"]
    print(f"\nserver RSS after run {rows[min(4, len(rows) - 1)]['run']}: {first} MB, after run {rows[-1]['run']}: {last} MB "
          f"({last / first:.3f}x); threads {sorted({r['threads'] for r in rows})}; ffmpeg left {max(r['ffmpeg'] for r in rows)}; "
          f"partials left {max(r['partials'] for r in rows)}")  # fmt: skip
    if args.plot:
        svg_plot(rows, args.plot)


if __name__ == "__main__":
    main()
