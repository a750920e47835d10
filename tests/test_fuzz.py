"""Fuzzing every reader of outside bytes: latent files, VAE files and folders, audio and video inputs.

Each mutated file must either load or be refused with the pack's own error (a WanVAEError with a message):
never another exception type, never a hang (hypothesis' deadline), never memory far beyond the file's size
(the process's peak RSS is checked over the whole run). Bounded for CI; `benchmarks/fuzz_readers.py` runs
the same strategies longer.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from wan_vae import WanVAEError, load_vae
from wan_vae.files.checkpoint import read_state_dict
from wan_vae.files.latents import read_latent_file

EXAMPLES = int(os.environ.get("WAN_VAE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow], derandomize=True)  # fmt: skip


def valid_safetensors() -> bytes:
    g = torch.Generator().manual_seed(0)
    return save({"latent_tensor": torch.randn(1, 16, 2, 6, 10, generator=g), "latent_format_version_0": torch.tensor([])})


def valid_torch_file(obj=None) -> bytes:
    buf = io.BytesIO()
    torch.save(obj if obj is not None else {"samples": torch.randn(1, 16, 2, 6, 10)}, buf)
    return buf.getvalue()


def header_of(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def with_header(header: dict | str, body: bytes, length: int | None = None) -> bytes:
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


# ----------------------------------------------------------------------------------------- strategies


@st.composite
def truncated(draw, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def flipped(draw, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, min(len(out) - 1, 400)))  # mostly the header, where the structure is
        out[i] = draw(st.integers(0, 255))
    return bytes(out)


@st.composite
def lying_header(draw, data: bytes) -> bytes:
    """A safetensors header whose shapes, dtypes or offsets lie, or whose length claims terabytes."""
    header, body = header_of(data)
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    entry = header[name]
    lie = draw(st.sampled_from(["shape", "dtype", "offsets", "length", "duplicate", "missing", "huge shape", "metadata"]))
    if lie == "shape":
        entry["shape"] = draw(st.lists(st.integers(-2, 64), max_size=6))
    elif lie == "dtype":
        entry["dtype"] = draw(st.sampled_from(["F64", "I8", "BOOL", "F8_E4M3", "X", "", "BF16"]))
    elif lie == "offsets":
        entry["data_offsets"] = [draw(st.integers(-10, 2**40)), draw(st.integers(-10, 2**40))]
    elif lie == "length":
        return with_header(header, body, length=draw(st.sampled_from([2**40, 2**63, len(json.dumps(header)) + 9, 0])))
    elif lie == "duplicate":
        text = json.dumps(header)
        return with_header(text[:-1] + f", {json.dumps(name)}: {json.dumps(entry)}" + "}", body)
    elif lie == "missing":
        del header[name]
    elif lie == "huge shape":
        entry["shape"] = [2**20, 2**20, 2**10]
    else:
        header["__metadata__"] = {"x": draw(st.text(max_size=20))} if draw(st.booleans()) else [1, 2]
    return with_header(header, body)


@st.composite
def torch_mutation(draw) -> bytes:
    kind = draw(st.sampled_from(["truncated", "flipped", "not tensors", "code", "bad zip entry"]))
    data = valid_torch_file()
    if kind == "truncated":
        return draw(truncated(data))
    if kind == "flipped":
        return draw(flipped(data))
    if kind == "not tensors":
        return valid_torch_file(draw(st.sampled_from([[1, 2, 3], {"a": "b"}, 3.5, {"samples": [1.0]}])))
    if kind == "code":  # a pickle that would run a command if unpickled without weights_only
        class Exploit:
            def __reduce__(self):
                return (os.system, ("echo pwned > /tmp/wan_vae_fuzz_pwned",))

        buf = io.BytesIO()
        torch.save({"samples": Exploit()}, buf, _use_new_zipfile_serialization=draw(st.booleans()))
        return buf.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("data.pkl") or "/data/" in info.filename:
                body = draw(st.sampled_from([b"", b"not a pickle", pickle.dumps([1, 2]), body[: len(body) // 2]]))
            dst.writestr(info, body)
    return out.getvalue()


def mutations() -> st.SearchStrategy[bytes]:
    data = valid_safetensors()
    return st.one_of(truncated(data), flipped(data), lying_header(data), torch_mutation(), st.binary(max_size=300))


# ----------------------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def rss_guard():
    """Fails the module if the readers' peak RSS grew by more than 512 MB over everything they read (files < 1 MB)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 512, f"reading fuzzed files grew the peak RSS by {grown_mb:.0f} MB"


def refused_or_read(read, path: Path):
    try:
        read(path)
    except WanVAEError as e:
        assert str(e).strip(), "an error without a message"
    assert not Path("/tmp/wan_vae_fuzz_pwned").exists(), "a pickle ran code"


@FUZZ
@given(data=mutations(), suffix=st.sampled_from([".latent", ".safetensors", ".pt"]))
def test_latent_files_load_or_are_refused_clearly(tmp_path_factory, rss_guard, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"clip{suffix}"
    path.write_bytes(data)
    refused_or_read(read_latent_file, path)


@FUZZ
@given(data=mutations(), suffix=st.sampled_from([".safetensors", ".pth", ".ckpt"]))
def test_vae_files_load_or_are_refused_clearly(tmp_path_factory, rss_guard, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"vae{suffix}"
    path.write_bytes(data)
    refused_or_read(load_vae, path)


@FUZZ
@given(config=st.one_of(st.binary(max_size=200), st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=8),
                                                                   max_size=6).map(lambda d: json.dumps(d).encode())),
       weights=mutations())  # fmt: skip
def test_diffusers_folders_load_or_are_refused_clearly(tmp_path_factory, rss_guard, config, weights):
    folder = tmp_path_factory.mktemp("fuzz") / "vae"
    folder.mkdir()
    (folder / "config.json").write_bytes(config)
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    refused_or_read(read_state_dict, folder)


@settings(max_examples=max(EXAMPLES // 6, 5), deadline=20000, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1), noise=st.binary(min_size=0, max_size=64))
def test_audio_and_video_inputs_are_read_or_refused_clearly(tmp_path_factory, media_bytes, cut, noise):
    """Truncated or garbled media: ffmpeg's reason comes back as the pack's error, with the file name."""
    from wan_vae.video.reader import probe_video, read_audio_file

    folder = tmp_path_factory.mktemp("media")
    for name, data in media_bytes.items():
        path = folder / name
        path.write_bytes(data[: int(len(data) * cut)] + noise)
        for read in (read_audio_file, probe_video):
            try:
                read(path)
            except WanVAEError as e:
                assert name in str(e)


@pytest.fixture(scope="module")
def media_bytes(tmp_path_factory):
    from wan_vae.video.writer import write_video

    folder = tmp_path_factory.mktemp("media_src")
    audio = {"waveform": torch.sin(torch.linspace(0, 200, 16000)).repeat(1, 2, 1), "sample_rate": 16000}
    video = write_video(torch.rand(5, 32, 32, 3), folder / "clip.mp4", 16, format="h264-mp4", audio=audio)
    return {"clip.mp4": video.read_bytes()}
