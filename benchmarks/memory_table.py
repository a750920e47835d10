"""Estimated peak decode memory of a long video by resolution and tile size (wan_vae/plan/memory.py's model).

    python benchmarks/memory_table.py

The coefficients are peak live tensor bytes measured on the CPU (see wan_vae/plan/memory.py); GPU figures add the
CUDA allocator's and cuDNN's overheads, which the safety factor is meant to cover but which were not
measured here. Weights of the whole VAE are included, as loaded from a file in the row's precision
(ComfyUI's repackaged files are bf16).
"""

from __future__ import annotations

import sys
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wan_vae.files.config import CONFIGS  # noqa: E402
from wan_vae.plan.memory import estimate_peak_bytes  # noqa: E402
from wan_vae.network.model import WanVAEModel, set_precision  # noqa: E402
from wan_vae.vae import WanVAE  # noqa: E402


def stub(version: str, dtype: torch.dtype):
    with torch.device("meta"):
        model = WanVAEModel(CONFIGS[version]).to(dtype)  # weights as stored in a file of that dtype
    set_precision(model, dtype)
    return WanVAE(model)


def main() -> None:
    cases = [("2.1", 480, 832), ("2.1", 720, 1280), ("2.2", 704, 1280)]
    tiles = [None, 768, 512, 384, 256]
    print("| VAE | size | precision | " + " | ".join("untiled" if t is None else f"{t} px tiles" for t in tiles) + " |")
    print("|---|---|---|" + "---|" * len(tiles))
    for version, h, w in cases:
        for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
            vae = stub(version, dtype)
            cells = [f"{estimate_peak_bytes(vae, h, w, 1, t) / 2**30:.1f} GiB" for t in tiles]
            print(f"| Wan {version} | {w}x{h} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
