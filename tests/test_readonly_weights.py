"""Weights that are read-only memory: newer ComfyUI with dynamic VRAM hands VAE state dicts whose tensors are
`torch.frombuffer` views of a read-only mmap of the file, and keeps them (`load_state_dict(..., assign=True)`).
Core Load VAE's weights reach us that way (nodes/comfy_host.core_vae_weights). Writing into such a tensor is a
segmentation fault, so each load and decode runs in a child process: any in-place write fails the test loudly.

    python tests/test_readonly_weights.py WEIGHTS.safetensors OUT.pt   # the child: load, decode, encode, save
"""

import json
import mmap
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def readonly_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file as views of one read-only mmap of it, as ComfyUI's dynamic loading makes them."""
    f = open(path, "rb")
    view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (size,) = struct.unpack("<Q", view[:8])
    header = json.loads(view[8 : 8 + size])
    header.pop("__metadata__", None)
    out = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        count = (end - start) // dtype.itemsize
        out[name] = torch.frombuffer(view, dtype=dtype, count=count, offset=8 + size + start).view(entry["shape"])
    return out


def child(weights: str, out: str) -> None:
    import warnings

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from reference import latents

    from wan_vae import load_vae

    warnings.filterwarnings("ignore", "The given buffer is not writable")
    sd = readonly_state_dict(weights)
    vae = load_vae(sd, device="cpu", dtype=torch.float32, name="core Load VAE's VAE")  # as nodes/load_vae.as_wan_vae does
    z = latents("2.1", (1, 2, 12, 20))
    video = vae.decode(z)
    tiled = vae.decode(z, tiling="on", tile_size=64)
    frames = torch.rand(5, 48, 80, 3, generator=torch.Generator().manual_seed(1))
    torch.save({"video": video, "tiled": tiled, "latents": vae.encode(frames.permute(3, 0, 1, 2).unsqueeze(0))}, out)


def run_child(weights, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, str(weights), str(out)], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weights_in_read_only_memory_load_decode_and_encode_without_a_write(tmp_path, dtype):
    from reference import latents, write_vae_file

    from wan_vae import load_vae

    weights = tmp_path / "wan_2.1_vae.safetensors"
    write_vae_file(weights, "2.1", dtype=dtype)
    proc = run_child(weights, tmp_path / "out.pt")
    assert proc.returncode == 0, f"the child ended with {proc.returncode} (-11: it wrote into read-only weights):\n{proc.stderr[-3000:]}"
    got = torch.load(tmp_path / "out.pt")
    vae = load_vae(weights, dtype=torch.float32)  # the same file, read as usual
    z = latents("2.1", (1, 2, 12, 20))
    frames = torch.rand(5, 48, 80, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got["video"], vae.decode(z)) and torch.equal(got["tiled"], vae.decode(z, tiling="on", tile_size=64))
    assert torch.equal(got["latents"], vae.encode(frames.permute(3, 0, 1, 2).unsqueeze(0)))


def test_a_write_into_read_only_weights_is_caught(tmp_path):
    """The harness itself: an in-place write into such a tensor ends the child, which the test above would report."""
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4)}, str(tmp_path / "w.safetensors"))
    script = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); from test_readonly_weights import readonly_state_dict; " \
             f"readonly_state_dict({str(tmp_path / 'w.safetensors')!r})['w'].add_(1)"  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode != 0


if __name__ == "__main__":
    child(*sys.argv[1:3])
