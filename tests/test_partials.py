"""Partial files: ours and stale are told apart by name, stale ones go, live writers' and users' files stay;
a writer killed with SIGKILL mid-write leaves a partial that the next write into its folder removes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from wan_vae.files import partials
from wan_vae.files.latents import write_latent_file
from wan_vae.video.writer import write_video

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_own_partials_are_recognised_and_live(tmp_path):
    p = partials.partial_path(tmp_path / "wan_00001_.mp4", ".mp4")
    assert p.parent == tmp_path and p.name.startswith(".wan_00001_.mp4.") and p.name.endswith(".wanvae-partial.mp4")
    assert partials.PATTERN.match(p.name) and not partials.is_stale(p)
    assert partials.partial_path(tmp_path / "a.mp4") != partials.partial_path(tmp_path / "a.mp4")  # unique


def test_stale_partials_go_and_everything_else_stays(tmp_path):
    start = partials.process_start_time(os.getpid())
    stale_file = tmp_path / f".wan_00002_.mp4.{dead_pid()}-0-1a2b3c4d.wanvae-partial.mp4"
    reused_pid = tmp_path / f".wan_00003_.mp4.{os.getpid()}-{start + 1}-1a2b3c4d.wanvae-partial.mp4"  # our pid, not our start
    stale_dir = tmp_path / "sub" / f".frames.{dead_pid()}-0-00ff00ff.wanvae-partial"
    live = partials.partial_path(tmp_path / "wan_00004_.mp4", ".mp4")
    keep = [tmp_path / "wan_00001_.mp4", tmp_path / ".wan_00001_.mp4.1234.partial.mp4", tmp_path / ".hidden", live]
    stale_dir.mkdir(parents=True)
    (stale_dir / "frame_00001.png").write_bytes(b"x")
    for p in [stale_file, reused_pid, *keep]:
        p.write_bytes(b"data")
    assert set(partials.remove_stale(tmp_path)) == {stale_file, reused_pid}
    assert stale_dir.exists()  # not recursive
    assert partials.remove_stale(tmp_path, recursive=True) == [stale_dir]
    assert all(p.read_bytes() == b"data" for p in keep)


KILLED_WRITER = """
import sys, time, torch
sys.path.insert(0, {root!r})
from wan_vae.video.writer import write_video
def frames():
    for i in range(1000):
        if i == 3:
            print("writing", flush=True)
        yield torch.rand(2, 64, 64, 3)
        time.sleep(0.05)
write_video(frames(), {out!r}, 16, format="h264-mp4")
"""


def test_a_writer_killed_mid_write_leaves_a_partial_the_next_write_removes(tmp_path):
    earlier = write_video(torch.rand(3, 64, 64, 3), tmp_path / "earlier.mp4", 16, format="h264-mp4")
    latent = write_latent_file(tmp_path / "kept.latent", torch.zeros(1, 16, 2, 8, 8))
    before = {p: p.read_bytes() for p in (earlier, latent)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(root=str(ROOT), out=str(tmp_path / "killed.mp4"))],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p for p in tmp_path.iterdir() if partials.MARK in p.name]
    assert left and all(partials.is_stale(p) for p in left)  # what users collect after crashes
    assert not (tmp_path / "killed.mp4").exists()
    write_video(torch.rand(3, 64, 64, 3), tmp_path / "next.mp4", 16, format="h264-mp4")
    assert not [p for p in tmp_path.iterdir() if partials.MARK in p.name]
    assert {p: p.read_bytes() for p in (earlier, latent)} == before  # earlier videos and the kept latent untouched
