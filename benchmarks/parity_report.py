"""Relative L2 error of decode and encode against diffusers AutoencoderKLWan, per case (the tests assert <= 1e-5).

    python benchmarks/parity_report.py [--device cuda] [--dtype bf16]

Seeded random weights with every parameter perturbed; real-size and reduced configs. On CUDA, TF32 is
switched off so that fp32 means fp32 on both sides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]
from reference import latents, reference_decode, reference_encode, reference_model, rel_l2, video  # noqa: E402

from wan_vae import load_vae  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    print(f"| config | latent (B, T, h, w) | decode rel L2 | encode rel L2 |  ({args.device}, {args.dtype}; diffusers in fp32 on the CPU)")
    print("|---|---|---|---|")
    for version, real, cases in [
        ("2.1", True, [(1, 1, 6, 10), (1, 2, 6, 10), (1, 5, 6, 10), (2, 2, 6, 10)]),
        ("2.2", True, [(1, 1, 6, 10), (1, 2, 6, 10)]),
        ("2.1", False, [(b, t, h, w) for b in (1, 2) for t in (1, 2, 5) for h, w in ((6, 10), (5, 7))]),
        ("2.2", False, [(b, t, h, w) for b in (1, 2) for t in (1, 2, 5) for h, w in ((6, 10), (5, 7))]),
    ]:
        ref = reference_model(version, real)
        vae = load_vae(ref.state_dict(), device=args.device, dtype=dtype)
        for b, t, h, w in cases:
            z = latents(version, (b, t, h, w), seed=t * 10 + b)
            x = video(version, (b, 1 + 4 * (t - 1), h, w), seed=t * 10 + b)
            dec = rel_l2(vae.decode(z), reference_decode(ref, z))
            enc = rel_l2(vae.encode(x), reference_encode(ref, x))
            print(f"| Wan {version} {'real' if real else 'reduced'} | {b}, {t}, {h}, {w} | {dec:.2e} | {enc:.2e} |", flush=True)
        del ref, vae
        reference_model.cache_clear()


if __name__ == "__main__":
    main()
