"""The error of each precision against fp32, real-size networks, on the CPU in minutes.

    python benchmarks/precision_error.py            # Wan 2.1 and 2.2, a few latent frames at 160x96 (2.2: 160x96 too)

Convolutions and attention in bf16/fp16 are computed as tensor cores compute them: half-precision inputs and weights,
fp32 accumulation, the output rounded once to half precision. On a CPU without native bf16 (AVX2: oneDNN's fallback is
tens of times slower) that is emulated by running the op in fp32 on the half-precision values and rounding its output;
everything else (norms, sums, casts) runs as it is. Prints relative L2 against our fp32 decode for: ours bf16 everywhere
(the GPU default, GPU-shaped path), ours bf16 mixed (heavy convs only), and diffusers' bf16 decode of the same weights.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reference import latents, reference_decode, reference_model, rel_l2  # noqa: E402
from wan_vae import load_vae  # noqa: E402
from wan_vae.device.gpu import shaped_for_gpu  # noqa: E402

HALF = (torch.bfloat16, torch.float16)


def tensor_core(op):
    """`op` with half-precision operands run in fp32 and its output rounded once (as a tensor core computes it)."""

    def run(x, *args, **kwargs):
        if not (isinstance(x, torch.Tensor) and x.dtype in HALF):
            return op(x, *args, **kwargs)
        up = [a.float() if isinstance(a, torch.Tensor) and a.dtype in HALF else a for a in args]
        return op(x.float(), *up, **{k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}).to(x.dtype)

    return run


@contextlib.contextmanager
def emulated():
    with contextlib.ExitStack() as stack:
        for name in ("conv2d", "conv3d", "scaled_dot_product_attention"):
            stack.enter_context(mock.patch.object(F, name, tensor_core(getattr(F, name))))
        yield


def main() -> None:
    print("| version | latent | ours bf16 everywhere (GPU default) | ours bf16 mixed | diffusers bf16 |")
    print("|---|---|---|---|---|")
    for version, shape in (("2.1", (1, 3, 12, 20)), ("2.2", (1, 2, 6, 10))):
        ref = reference_model(version, real=True)
        sd = ref.state_dict()
        z = latents(version, shape, seed=11)
        exact = load_vae(sd).decode(z)
        with emulated(), shaped_for_gpu():
            everywhere = load_vae(sd, dtype=torch.bfloat16, mixed=False).decode(z)
            mixed = load_vae(sd, dtype=torch.bfloat16, mixed=True).decode(z)
        with emulated(), torch.no_grad():
            theirs = reference_decode(ref.to(torch.bfloat16), z.to(torch.bfloat16)).float()
        ref.to(torch.float32)
        print(f"| {version} | {list(shape)} | {rel_l2(everywhere, exact):.2e} | {rel_l2(mixed, exact):.2e} | "
              f"{rel_l2(theirs, exact):.2e} |", flush=True)


if __name__ == "__main__":
    main()
