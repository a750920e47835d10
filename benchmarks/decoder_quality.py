"""How close each Wan-family decoder comes to the full Wan VAE: PSNR and SSIM on the same latents, and the time.

    python benchmarks/decoder_quality.py --vae-dir ComfyUI/models/vae [--video clip.mp4] [--size 480x832] [--frames 33]
        [--device cuda]

Needs the real files (random weights make the numbers meaningless, so there is no default): the full VAEs
(wan_2.1_vae / wan2.2_vae, any form load_vae reads) and any of taew2_1, taew2_2, lighttaew2_1, lighttaew2_2,
lightvaew2_1 in the folder. A clip (the given video, or a synthetic one of moving gradients and shapes) is
encoded by each full VAE; every decoder for those latents decodes them, and is compared frame by frame with
the full VAE's decode (and with the clip itself) in [0, 1] RGB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wan_vae import CheckpointError, load_vae  # noqa: E402
from wan_vae.tiny_vae import TinyVAE  # noqa: E402

FILE_TYPES = (".safetensors", ".sft", ".pth", ".pt", ".ckpt")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM over frames and channels, 11x11 Gaussian window (sigma 1.5), for [F, H, W, 3] in [0, 1]."""
    x, y = (t.permute(0, 3, 1, 2).double() for t in (a, b))
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11)

    def blur(t):
        return F.conv2d(t, window, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean().item()


def synthetic_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """[F, H, W, 3] in [0, 1]: smooth gradients and a moving soft disc, with fine texture."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    out = []
    for t in range(frames):
        r = 0.5 + 0.4 * torch.sin(6.28 * (x + 0.02 * t))
        g = 0.2 + 0.6 * y + 0.05 * torch.sin(80 * x) * torch.sin(60 * y)
        b = 0.5 + 0.3 * torch.cos(6.28 * (x * y + 0.03 * t))
        disc = torch.sigmoid((0.15 - ((x - 0.2 - 0.015 * t) ** 2 + (y - 0.5) ** 2).sqrt()) * 60)[..., None]
        out.append(torch.stack([r, g, b], -1) * (1 - disc) + torch.tensor([0.9, 0.8, 0.1]) * disc)
    return torch.stack(out).clamp(0, 1)


def read_clip(path: Path, frames: int, height: int, width: int) -> torch.Tensor:
    import imageio
    import numpy as np

    with imageio.get_reader(path, format="FFMPEG") as reader:
        picked = [frame for _, frame in zip(range(frames), reader)]
    if len(picked) < frames:
        raise SystemExit(f"{path} has {len(picked)} frames; --frames asks for {frames}.")
    video = torch.from_numpy(np.stack(picked)).float() / 255
    video = F.interpolate(video.permute(0, 3, 1, 2), size=(height, width), mode="area").permute(0, 2, 3, 1)
    return video[..., :3].clamp(0, 1)


def load_all(folder: Path, device: str) -> list[tuple[str, object]]:
    found = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in FILE_TYPES):
        try:
            found.append((path.name, load_vae(path, device=device)))
        except CheckpointError as e:
            print(f"skipped {path.name}: {str(e)[:160]}")
    return found


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae-dir", type=Path, required=True, help="a folder with the real VAE files (ComfyUI/models/vae)")
    parser.add_argument("--video", type=Path, help="a clip to encode (default: a synthetic one)")
    parser.add_argument("--size", default="480x832", help="HxW, multiples of 16")
    parser.add_argument("--frames", type=int, default=33, help="1 + 4k frames")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    height, width = map(int, args.size.lower().split("x"))
    clip = read_clip(args.video, args.frames, height, width) if args.video else synthetic_clip(args.frames, height, width)
    decoders = load_all(args.vae_dir, args.device)
    full = {}  # per latent size, the widest full VAE (a LightVAE is a pruned one)
    for name, vae in decoders:
        best = full.get(vae.latent_channels)
        if not isinstance(vae, TinyVAE) and (best is None or vae.config.decoder_dim > best[1].config.decoder_dim):
            full[vae.latent_channels] = (name, vae)
    if not full:
        raise SystemExit(f"No full Wan VAE in {args.vae_dir}: the comparison needs wan_2.1_vae and/or wan2.2_vae.")
    rows = []
    print(f"\n{args.frames} frames at {width}x{height}, {args.device}; compared in [0, 1] RGB with the full VAE's decode")
    print("| latents | decoder | what | time s | PSNR vs full VAE dB | SSIM vs full VAE | PSNR vs the clip dB |")
    print("|---|---|---|---|---|---|---|")
    for channels, (full_name, full_vae) in sorted(full.items()):
        video = clip.permute(3, 0, 1, 2)[None].mul(2).sub(1).to(args.device)
        z = full_vae.encode(video)
        reference = full_vae.decode(z, layout="images").cpu()
        for name, vae in decoders:
            if vae.latent_channels != channels:
                continue
            start = time.perf_counter()
            frames = vae.decode(z, layout="images").cpu()
            seconds = time.perf_counter() - start
            row = {"latents": f"Wan {full_vae.version}", "decoder": name, "what": vae.title.removeprefix("the "),
                   "seconds": seconds, "psnr": psnr(frames, reference), "ssim": ssim(frames, reference),
                   "psnr_clip": psnr(frames, clip)}  # fmt: skip
            rows.append(row)
            print(f"| {row['latents']} | {name} | {row['what']} | {seconds:.2f} | {row['psnr']:.2f} | {row['ssim']:.4f} | "
                  f"{row['psnr_clip']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
