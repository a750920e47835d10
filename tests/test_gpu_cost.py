"""benchmarks/gpu_cost.py, the GPU cost model: its counting on single ops, and the quick run CI keeps to the targets."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_cost  # noqa: E402


def count(run, make=tuple) -> gpu_cost.Trace:
    """The ops of run(*make()), make() building its fake inputs uncounted."""
    counter = gpu_cost.Counter()
    with FakeTensorMode(), torch.inference_mode():
        inputs = make()
        with counter:
            run(*inputs)
    return counter.trace


def test_a_conv_counts_its_flops_its_bias_pass_and_a_weight_in_the_other_layout():
    def make():
        x = torch.empty(1, 8, 5, 6, 7, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
        w = torch.empty(16, 8, 3, 3, 3, dtype=torch.bfloat16)  # NCDHW weight, NDHWC input: cuDNN copies the weight
        return x, w, torch.empty(16, dtype=torch.bfloat16)

    ops = {op.name: op for op in count(F.conv3d, make).ops}
    assert set(ops) == {"convolution", "conv bias add", "weight layout copy"}
    out = 16 * 3 * 4 * 5
    assert ops["convolution"].flops == 2 * out * 8 * 27
    assert ops["convolution"].bytes == 2 * (8 * 5 * 6 * 7 + 16 * 8 * 27 + out)
    assert ops["conv bias add"].bytes == 2 * 2 * out + 2 * 16 and ops["weight layout copy"].bytes == 2 * 2 * 16 * 8 * 27


def test_views_and_allocations_are_free_and_a_composite_op_counts_what_it_runs():
    def run():
        x = torch.empty(4, 6)
        x.view(6, 4).transpose(0, 1)[:2]
        x.reshape(24).to(torch.bfloat16)  # a view, then one cast kernel

    assert [(op.name, op.bytes) for op in count(run).ops] == [("_to_copy", 24 * 4 + 24 * 2)]


def test_time_is_the_slower_of_compute_and_memory_with_a_floor_per_launch():
    gpu = gpu_cost.GPUS["H200"]
    compute = gpu_cost.Op("convolution", "conv", flops=1e12, bytes=1, precision="bf16")
    assert gpu_cost.op_seconds(compute, gpu) == pytest.approx(1e12 / (0.5 * 989e12))
    assert gpu_cost.op_seconds(gpu_cost.Op("convolution", "conv", 1e12, 1, 1, "fp32"), gpu, tf32=False) == pytest.approx(1e12 / (0.5 * 67e12))
    memory = gpu_cost.Op("add", "elementwise", bytes=1e9)
    assert gpu_cost.op_seconds(memory, gpu) == pytest.approx(1e9 / (0.7 * 4.8e12))
    assert gpu_cost.op_seconds(gpu_cost.Op("add", "elementwise", bytes=8), gpu) == 3e-6


def test_the_quick_run_prints_every_gpu_and_keeps_the_gpu_path_within_the_targets(tmp_path):
    res = subprocess.run([sys.executable, "benchmarks/gpu_cost.py", "--quick", "--top", "3", "--json", str(tmp_path / "c.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / "c.json").read_text())["cases"]
    assert [c.split(",")[0] for c in data] == ["decode", "encode"]
    for name in gpu_cost.GPUS:
        assert f"| {name} |" in res.stdout
    for case in data.values():
        ours, theirs = case["gpus"]["H200"]["ours"], case["gpus"]["H200"]["diffusers"]
        # the targets for the default (bf16 everywhere, 4 latent frames per pass), at CI's small size
        assert ours["seconds"] <= 0.6 * theirs["seconds"] and ours["launches"] <= 0.8 * theirs["launches"]
        assert ours["GB"] <= 0.7 * theirs["GB"]
        # the same convolutions, ours with the upsample's 2.25x fewer multiply-adds: a little less work, never more
        assert 0.8 * theirs["TFLOP"] <= ours["TFLOP"] <= theirs["TFLOP"]
        kinds = case["by_kind"]["ours"]
        assert sum(k["launches"] for k in kinds.values()) == ours["launches"]
