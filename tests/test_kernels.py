"""The fused RMS norm: its Triton kernel against the torch path through Triton's interpreter (TRITON_INTERPRET=1, on
the CPU), the custom op's registration (one op under FakeTensorMode, torch.library's own checks), and the fallback."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from wan_vae.kernels import norm

pytest.importorskip("triton", reason="Triton is not installed (pip install triton): the kernel tests need its interpreter")


@pytest.fixture(scope="module")
def interpreted():
    """kernels/triton_norm.py, run by Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before Triton is
    imported, where no NVIDIA GPU is: the interpreter decorates the whole triton.language when first imported)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("a GPU machine: the kernels are checked on the GPU by benchmarks/gpu_report.py, not interpreted")
    from wan_vae.kernels import triton_norm

    return triton_norm


def tensors(shape, dtype, out_dtype, layout: str, seed: int, bias: bool):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3
    x[..., 0] = 0  # zero vectors: the eps clamp, not 0/0
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)
    x = x.to(dtype)
    c = shape[1]
    gamma = (1 + 0.2 * torch.randn(c, generator=g)).reshape(c, *([1] * (len(shape) - 2))).to(dtype)
    b = 0.5 * torch.randn(c, generator=g).to(dtype) if bias else None
    if layout == "slot":  # the causal conv's input buffer: two history frames in front, the norm writes the rest
        buf = torch.empty(shape[0], c, shape[2] + 2, *shape[3:], dtype=out_dtype).contiguous(memory_format=torch.channels_last_3d)
        return x, gamma, b, buf[:, :, 2:]
    return x, gamma, b, torch.empty_like(x, dtype=out_dtype)


# Relative: one ulp of the output. Triton's interpreter truncates fp32 -> bf16 where a GPU rounds to nearest (its
# numpy cast, triton/runtime/interpreter.py `_convert_float`): up to one bf16 ulp (2^-7 relative) apart from torch's.
ULP = {torch.float32: 2e-6, torch.bfloat16: 2**-7, torch.float16: 2**-10}


@pytest.mark.parametrize("dtype,out_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                             (torch.float16, torch.float16), (torch.float32, torch.bfloat16),
                                             (torch.bfloat16, torch.float32)])  # fmt: skip
@pytest.mark.parametrize("shape,layout", [((1, 96, 3, 7, 9), "channels_last"), ((2, 37, 2, 5, 3), "contiguous"),
                                          ((1, 5, 1, 3, 11), "channels_last"), ((1, 19, 3, 4, 5), "slot"),
                                          ((3, 384, 5, 7), "channels_last"), ((2, 7, 6, 5), "contiguous")])  # fmt: skip
@pytest.mark.parametrize("silu,bias", [(True, False), (False, False), (True, True)])
def test_the_triton_kernel_gives_the_torch_path_s_numbers(interpreted, dtype, out_dtype, shape, layout, silu, bias):
    x, gamma, b, out = tensors(shape, dtype, out_dtype, layout, seed=sum(shape), bias=bias)
    expected = torch.empty_like(out)
    norm.rms_norm_torch(x, gamma, b, expected, shape[1] ** 0.5, silu)
    interpreted.rms_norm(x, gamma, b, out, shape[1] ** 0.5, silu, norm.EPS)
    # only the fp32 sum order of the norm differs: at most one rounding of the output apart
    torch.testing.assert_close(out.float(), expected.float(), rtol=ULP[out_dtype], atol=ULP[out_dtype] * 1e-2)
    assert out.float().abs().max() > 0.1


def test_the_kernel_reads_and_writes_strided_views_in_place(interpreted):
    """A slot of a larger buffer is written where it lies, the history frames around it untouched."""
    x, gamma, _, _ = tensors((1, 8, 2, 3, 5), torch.float32, torch.float32, "channels_last", seed=1, bias=False)
    buf = torch.full((1, 8, 4, 3, 5), 7.0).contiguous(memory_format=torch.channels_last_3d)
    interpreted.rms_norm(x, gamma, None, buf[:, :, 2:], 8**0.5, True, norm.EPS)
    assert torch.equal(buf[:, :, :2], torch.full((1, 8, 2, 3, 5), 7.0))
    expected = torch.empty_like(x)
    norm.rms_norm_torch(x, gamma, None, expected, 8**0.5, True)
    torch.testing.assert_close(buf[:, :, 2:], expected)


class Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_fake_tensors_see_one_op_and_torch_library_s_checks_pass():
    x, gamma, b, out = tensors((1, 16, 2, 3, 5), torch.bfloat16, torch.bfloat16, "channels_last", seed=2, bias=True)
    torch.library.opcheck(torch.ops.wan_vae.rms_norm.default, (x, gamma, b, out, 4.0, True))
    with FakeTensorMode() as mode:
        fx, fg, fb, fo = (mode.from_tensor(t) for t in (x, gamma, b, out))
        with Ops() as ops:
            torch.ops.wan_vae.rms_norm(fx, fg, fb, fo, 4.0, True)
    assert ops.seen == ["wan_vae.rms_norm.default"]


def test_a_failing_kernel_falls_back_to_torch_once_with_one_line(monkeypatch, caplog):
    class Broken:
        MAX_CHANNELS = 4096

        @staticmethod
        def rms_norm(*args):
            raise RuntimeError("PTX assembly failed")

    # The op's body, called directly: the tests import the library twice (as wan_vae and inside the pack), and the
    # registered op runs whichever copy registered last
    monkeypatch.setattr(norm, "_triton", Broken)
    monkeypatch.setattr(norm, "kernel_for", lambda x, out: norm._triton or None)
    x, gamma, _, out = tensors((1, 16, 2, 3, 5), torch.float32, torch.float32, "channels_last", seed=3, bias=False)
    expected = torch.empty_like(out)
    norm.rms_norm_torch(x, gamma, None, expected, 4.0, True)
    with caplog.at_level(logging.WARNING, logger="wan_vae"):
        norm.run_rms_norm(x, gamma, None, out, 4.0, True)
        norm.run_rms_norm(x, gamma, None, out, 4.0, True)
    assert torch.equal(out, expected)
    assert [r.message.split(" (")[0] for r in caplog.records] == ["The fused RMS norm kernel failed"]
    assert norm._triton is False


def test_cpu_tensors_never_take_the_triton_kernel():
    x, _, _, out = tensors((1, 16, 2, 3, 5), torch.float32, torch.float32, "channels_last", seed=4, bias=False)
    assert norm.kernel_for(x, out) is None
