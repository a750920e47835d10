"""Several devices in one process, and several processes over torch.distributed (gloo on this CPU), each exact."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from media import read_frames
from reference import latents, reference_model, write_vae_file
from wan_vae import SettingsError, load_vae
from wan_vae.files.latents import write_latent_file
from wan_vae.plan.tiling import MIN_TILE_CELLS

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("dist_cli.py")


# ------------------------------------------------------------------------------ several devices, one process


@pytest.fixture(scope="module")
def vae():
    return load_vae(reference_model("2.1").state_dict())


@pytest.mark.parametrize("tiling", ["off", "on"])
def test_two_cpu_workers_give_the_single_device_frames(vae, tiling):
    z = latents("2.1", (2, 2, 13, 17), seed=5)  # a batch: videos and tiles are both spread
    kw = dict(tiling=tiling, tile_size=MIN_TILE_CELLS * 8)
    assert torch.equal(vae.decode(z, devices=["cpu", "cpu"], **kw), vae.decode(z, **kw))
    streamed = torch.cat(list(vae.decode_frames(z, devices=["cpu", "cpu", "cpu"], **kw)))
    assert torch.equal(streamed, torch.cat(list(vae.decode_frames(z, **kw))))


def test_auto_tiling_makes_a_tile_for_every_device(vae, caplog):
    with caplog.at_level("INFO", logger="wan_vae"):
        vae.decode(latents("2.1", (1, 1, 16, 16)), tiling="auto", memory_budget=2**40, devices=["cpu", "cpu"])
    assert "1x2 tiles" in caplog.text or "2x1 tiles" in caplog.text


def test_progress_and_cancel_work_across_devices(vae):
    seen = []
    vae.decode(latents("2.1", (1, 2, 16, 16)), tiling="on", tile_size=64, devices=["cpu", "cpu"],
               progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert sorted(seen) == seen and seen[-1] == (2 * 4, 2 * 4)
    with pytest.raises(Exception, match="Cancelled"):
        vae.decode(latents("2.1", (1, 3, 16, 16)), tiling="on", tile_size=64, devices=["cpu", "cpu"], cancel=lambda: True)


@pytest.mark.parametrize("devices,text", [
    (["cuda:7"], "does not exist"),
    (["cpu", "tpu"], "not a device name|only 'cpu'"),
    ("cpu", "must be a non-empty list"),
    ([], "must be a non-empty list"),
])  # fmt: skip
def test_bad_devices_are_refused(vae, devices, text):
    with pytest.raises(SettingsError, match=text):
        vae.decode(latents("2.1"), devices=devices)


def test_a_gpu_named_twice_is_refused(monkeypatch):
    from wan_vae.run import multidevice

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SettingsError, match="named twice"):
        multidevice.check_devices(["cuda:1", "cuda:1"])
    assert multidevice.check_devices(["cuda:0", "cuda:1", "cpu", "cpu"])[1] == torch.device("cuda", 1)


# ------------------------------------------------------------------------------ several processes


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    write_vae_file(d / "vae.safetensors", "2.1", dtype=torch.float32)
    write_latent_file(d / "clip.latent", latents("2.1", (1, 4, 13, 17), seed=3))
    write_latent_file(d / "long.latent", latents("2.1", (1, 300, 13, 17), seed=4))
    write_latent_file(d / "short_1.latent", latents("2.1", (1, 3, 13, 17), seed=3))
    (d / "broken_1.latent").write_bytes(b"\x00" * 10)
    return d


def launch(*args, ranks=2, env=None, wait=True, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", str(HELPER), *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **(env or {})), start_new_session=True)  # fmt: skip
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def decode_args(files, latent, out, *extra):
    return ["decode", files / latent, "--vae", files / "vae.safetensors", "-o", out, "--format", "ffv1-mkv", "--timeout", "60", *extra]


def test_two_processes_give_the_one_process_frames(files, tmp_path):
    code, log = launch("frames", files / "vae.safetensors", files / "clip.latent", tmp_path / "two.pt")
    assert code == 0, log[-3000:]
    vae = load_vae(files / "vae.safetensors")
    from wan_vae.files.latents import read_latent_file

    one = torch.cat(list(vae.decode_frames(read_latent_file(files / "clip.latent"), tiling="on", tile_size=64)))
    two = torch.load(tmp_path / "two.pt")
    assert two.shape == one.shape == (13, 104, 136, 3) and (two - one).abs().max() <= 1e-6


def test_rank_0_writes_the_video_one_process_writes(files, tmp_path):
    code, log = launch(*decode_args(files, "clip.latent", tmp_path / "two.mkv", "--tiling", "on", "--tile-size", "64"))
    assert code == 0 and "rank 1 of 2" in log and "on 2 processes" in log, log[-3000:]
    one = tmp_path / "one.mkv"
    res = subprocess.run([sys.executable, "-m", "wan_vae", *map(str, decode_args(files, "clip.latent", one))], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    a, b = read_frames(tmp_path / "two.mkv").astype(int), read_frames(one).astype(int)
    assert a.shape == b.shape and (abs(a - b) > 1).sum() == 0 and (a != b).mean() <= 1e-3


def test_more_ranks_than_tiles_leaves_the_others_idle(files, tmp_path):
    code, log = launch(*decode_args(files, "clip.latent", tmp_path / "idle.mkv", "--tiling", "off"), ranks=3)
    assert code == 0, log[-3000:]
    assert "rank 1 has no tile to decode (1 tiles for 3 ranks)" in log and "rank 2 has no tile" in log
    assert read_frames(tmp_path / "idle.mkv").shape[0] == 13


@pytest.mark.parametrize("latent,text", [
    ("broken_{rank}.latent", "rank 1: "),  # rank 0 has no such file: it fails too, and so says every rank
    ("short_{rank}.latent", "differ between ranks: rank 0 has"),
])  # fmt: skip
def test_a_bad_or_mismatched_file_on_one_rank_stops_every_rank_with_its_message(files, tmp_path, latent, text):
    out = tmp_path / "bad.mkv"
    (files / "short_0.latent").write_bytes((files / "clip.latent").read_bytes())
    start = time.monotonic()
    code, log = launch(*decode_args(files, latent, out))
    assert code != 0 and text in log and time.monotonic() - start < 120, log[-3000:]
    assert log.count("error:") >= 2  # both ranks say it
    assert list(tmp_path.iterdir()) == []


def test_a_failure_in_the_middle_of_a_decode_stops_every_rank_and_leaves_no_video(files, tmp_path):
    start = time.monotonic()
    code, log = launch(*decode_args(files, "clip.latent", tmp_path / "mid.mkv", "--tiling", "on", "--tile-size", "64"),
                       env={"WAN_VAE_TEST_FAIL": "1:2"})  # fmt: skip
    assert code != 0 and "rank 1: RuntimeError: injected failure at latent frame 2" in log, log[-3000:]
    assert time.monotonic() - start < 120 and list(tmp_path.iterdir()) == []


def test_a_killed_rank_ends_the_run_in_bounded_time_and_leaves_no_video(files, tmp_path):
    proc = launch(*decode_args(files, "long.latent", tmp_path / "killed.mkv", "--tiling", "on", "--tile-size", "64"), wait=False)
    lines, pid = [], None
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait until rank 1 says who it is and rank 0 has written a few chunks
        lines.append(line)
        if line.startswith("rank 1 of 2 (pid "):
            pid = int(line.split("(pid ")[1].split(")")[0])
        if pid and line.startswith("decoding: ") and int(line.split()[1].split("/")[0]) >= 5:
            break
        assert time.monotonic() < deadline, "".join(lines)
    assert any(p.name.endswith(".wanvae-partial.mkv") for p in tmp_path.iterdir())  # the video is being written
    os.kill(pid, signal.SIGKILL)
    try:
        rest, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode != 0, "".join(lines) + rest
    assert list(tmp_path.iterdir()) == []


def test_a_launcher_is_needed_for_the_distributed_path(monkeypatch):
    from wan_vae import WanVAEError
    from wan_vae.run import distributed

    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched()
    with pytest.raises(WanVAEError, match="torch.distributed.run --nproc-per-node"):
        distributed.setup()


# ------------------------------------------------------------------------------ encode over several processes


def encode_args(video, out, *extra):
    return ["encode", video, "--vae", video.parent / "vae.safetensors", "-o", out, "--timeout", "60", *extra]


@pytest.fixture(scope="module")
def video_file(files):
    """9 frames of 104x136 noise, lossless (ffv1), so every process reads the same pixels."""
    from wan_vae import write_video

    frames = torch.rand(9, 104, 136, 3, generator=torch.Generator().manual_seed(7))
    return write_video(iter([frames]), files / "clip.mkv", 16, format="ffv1-mkv")


@pytest.mark.parametrize("ranks", [2, 3])
def test_two_or_three_processes_encode_the_one_process_latents(files, video_file, tmp_path, ranks):
    from wan_vae.files.latents import read_latent_file

    code, log = launch(*encode_args(video_file, tmp_path / "many.latent", "--tiling", "on", "--tile-size", "64"), ranks=ranks)
    assert code == 0 and "encoding 13x17 cells in" in log, log[-3000:]
    res = subprocess.run([sys.executable, "-m", "wan_vae", *map(str, encode_args(video_file, tmp_path / "one.latent"))], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    many, one = read_latent_file(tmp_path / "many.latent"), read_latent_file(tmp_path / "one.latent")
    assert many.shape == one.shape == (1, 16, 3, 13, 17) and (many - one).abs().max() <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.latent", "one.latent"]  # rank 0 alone wrote


def test_a_failed_encode_on_one_rank_stops_every_rank(files, video_file, tmp_path):
    if not (files / "vae_0.safetensors").exists():
        (files / "vae_0.safetensors").symlink_to(files / "vae.safetensors")
    start = time.monotonic()
    code, log = launch(*encode_args(video_file, tmp_path / "bad.latent", "--tiling", "on", "--tile-size", "64",
                                    "--vae", files / "vae_{rank}.safetensors"))  # rank 1's VAE file is missing
    assert code != 0 and "rank 1: " in log and time.monotonic() - start < 120, log[-3000:]
    assert list(tmp_path.iterdir()) == []
