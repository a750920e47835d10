"""Video export: every format reads back with the bundled ffmpeg; metadata, audio, colour, atomicity, bad input."""

import gc
import json
import os
import signal
import subprocess
import sys
import weakref
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from media import audio_duration, matroska_metadata, mp4_metadata, probe, psnr, read_frames
from wan_vae import VideoWriteError
from wan_vae.video import formats
from wan_vae.video.formats import FORMATS, available_formats, encoder_error
from wan_vae.video.writer import check_output, frame_rate, write_video


def clip(n=9, h=64, w=96, seed=0) -> torch.Tensor:
    """A natural-looking synthetic clip: smooth gradients and moving soft-edged shapes, float [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    frames = []
    for t in range(n):
        r = 0.5 + 0.4 * torch.sin(2 * torch.pi * (x + 0.05 * t))
        g = 0.2 + 0.6 * y
        b = 0.5 + 0.3 * torch.cos(2 * torch.pi * (x * y + 0.03 * t))
        cx, cy = 0.2 + 0.06 * t, 0.5 + 0.2 * np.sin(t / 3)
        disc = torch.sigmoid((0.15 - ((x - cx) ** 2 + (y - cy) ** 2).sqrt()) * 60)
        frame = torch.stack([r, g, b], -1) * (1 - disc[..., None]) + torch.tensor([0.9, 0.8, 0.1]) * disc[..., None]
        frames.append(frame)
    return torch.stack(frames).clamp(0, 1)


def only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------ formats


FORMAT_FACTS = {  # codec, pixel format as ffmpeg reports it
    "h264-mp4": ("h264", "yuv420p"),
    "h265-mp4": ("hevc", "yuv420p"),
    "vp9-webm": ("vp9", "yuv420p"),
    "prores-mov": ("prores", "yuv422p10le"),
    "ffv1-mkv": ("ffv1", "bgr0"),
    "gif": ("gif", "bgra"),
    "webp": ("webp_anim", "argb"),
    "av1-mp4": ("av1", "yuv420p"),
    "av1-webm": ("av1", "yuv420p"),
}


@pytest.mark.parametrize("name", list(FORMAT_FACTS))
def test_each_format_reads_back_with_its_codec_size_and_frame_count(tmp_path, name):
    fmt = FORMATS[name]
    path = write_video(clip(9), tmp_path / f"out{fmt.extension}", fps=16, format=name)
    assert path == tmp_path / f"out{fmt.extension}" and only(tmp_path) == [path.name]
    info = probe(path)
    codec, pix_fmt = FORMAT_FACTS[name]
    assert (info["codec"], info["width"], info["height"]) == (codec, 96, 64), info["raw"]
    assert info["pix_fmt"] == pix_fmt, info["raw"]  # animated WebP: ffmpeg reports its decoder's format
    assert info["frames"] == 9
    if fmt.yuv:  # matrix, primaries and transfer all BT.709 ("bt709" alone), tv range; none "unknown"
        assert info["color"].startswith("tv, bt709") and "unknown" not in info["color"], info["color"]
    if name == "h265-mp4":
        assert info["tag"] == "hvc1"  # Apple players refuse hev1


def test_png_sequence_is_a_folder_of_exact_frames(tmp_path):
    frames = (clip(5) * 255).round().to(torch.uint8)
    out = write_video(frames, tmp_path / "frames", fps=8, format="png")
    assert out.is_dir() and only(out) == [f"frame_{i:05d}.png" for i in range(1, 6)]
    assert np.array_equal(read_frames(out / "frame_%05d.png"), frames.numpy())
    deep = write_video(clip(2), tmp_path / "frames16", fps=8, format="png", bit_depth=10)
    assert probe(deep / "frame_00001.png")["pix_fmt"] == "rgb48be"


@pytest.mark.parametrize("name,quality", [("ffv1-mkv", 80), ("webp", 100)])
def test_lossless_formats_are_exact(tmp_path, name, quality):
    frames = (clip(6) * 255).round().to(torch.uint8)
    path = write_video(frames, tmp_path / f"out{FORMATS[name].extension}", fps=12, format=name, quality=quality)
    assert np.array_equal(read_frames(path), frames.numpy())


def test_ffv1_at_10_bits_keeps_float_precision(tmp_path):
    frames = clip(3)
    path = write_video(frames, tmp_path / "out.mkv", fps=12, format="ffv1-mkv", bit_depth=10)
    assert probe(path)["pix_fmt"] == "gbrp10le"
    back = read_frames(path, rgb48=True).astype(np.float64) / 65535
    assert np.abs(back - frames.double().numpy()).max() <= 1 / 1023  # 10 bits, not 8


def test_h264_default_quality_is_visually_lossless(tmp_path):
    frames = clip(17, 128, 192)
    path = write_video(frames, tmp_path / "out.mp4", fps=16)
    expected = (frames * 255 + 0.5).floor().to(torch.uint8).numpy()
    assert psnr(read_frames(path), expected) >= 35


def test_h264_10_bit(tmp_path):
    assert probe(write_video(clip(3), tmp_path / "out.mp4", fps=16, bit_depth=10))["pix_fmt"] == "yuv420p10le"


@pytest.mark.parametrize("name", ["av1-mp4", "av1-webm", "h265-mp4"])
def test_10_bit_av1_and_h265_from_floats(tmp_path, name):
    path = write_video(clip(3), tmp_path / f"out{FORMATS[name].extension}", fps=16, format=name, bit_depth=10)
    assert probe(path)["pix_fmt"] == "yuv420p10le"
    levels = read_frames(path, rgb48=True)[..., 1] >> 6  # 10-bit green
    assert (levels % 4 != 0).mean() > 0.3  # values between the 8-bit ones: the floats' precision, not 8-bit frames


def test_10_bit_for_an_8_bit_format_is_refused_naming_those_that_have_it(tmp_path):
    with pytest.raises(VideoWriteError, match=r"gif has no 10-bit form; choose bit_depth 8, or one of h264-mp4, .*av1-mp4"):
        write_video(clip(2), tmp_path / "out.gif", fps=8, format="gif", bit_depth=10)
    assert only(tmp_path) == []


def fake_ffmpeg(folder, code: int, message: str = "") -> str:
    folder.mkdir()
    script = folder / "ffmpeg"
    script.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit {code}\n")
    script.chmod(0o755)
    return str(script)


def test_nvenc_is_offered_only_where_a_trial_encode_opens_it(tmp_path, monkeypatch):
    """The detection, not the GPU: ffmpeg stands in as a script that can or cannot open the encoder."""
    encoder_error.cache_clear()
    opens = fake_ffmpeg(tmp_path / "a", 0)  # written once: rewriting a script while it runs fails ("text file busy")
    monkeypatch.setattr(formats, "ffmpeg_exe", lambda: opens)
    try:
        assert encoder_error("h264_nvenc") is None
        assert {"h264-nvenc-mp4", "h265-nvenc-mp4"} <= set(available_formats())
        encoder_error.cache_clear()
        fails = fake_ffmpeg(tmp_path / "b", 1, "[h264_nvenc @ 0x1] Cannot load libcuda.so.1")
        monkeypatch.setattr(formats, "ffmpeg_exe", lambda: fails)
        offered = available_formats()
        assert "h264-nvenc-mp4" not in offered and "h265-nvenc-mp4" not in offered and "av1-mp4" in offered
        with pytest.raises(VideoWriteError, match=r"h264-nvenc-mp4 needs NVIDIA's hardware encoder \(h264_nvenc\), which ffmpeg "
                                                  r"cannot open here: Cannot load libcuda.so.1. Choose h264-mp4"):  # fmt: skip
            check_output(tmp_path / "out.mp4", 16, "h264-nvenc-mp4")
    finally:
        encoder_error.cache_clear()


def test_nvenc_arguments(tmp_path):
    assert FORMATS["h265-nvenc-mp4"].video_args(80, 10)[:2] == ["-c:v", "hevc_nvenc"]
    assert "p010le" in FORMATS["h265-nvenc-mp4"].video_args(80, 10) and FORMATS["h264-nvenc-mp4"].bit_depths == (8,)


def test_colours_survive_the_bt709_round_trip(tmp_path):
    """Pure colours decode back to themselves; with an untagged BT.601 round trip red and green shift by ~20 levels."""
    swatches = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0.5, 0]], dtype=torch.float32)
    frame = swatches.repeat_interleave(32, 0)[None, :, None, :].expand(1, 192, 64, 3).contiguous()
    path = write_video(frame.expand(3, -1, -1, -1), tmp_path / "colours.mp4", fps=10, quality=100)
    back = read_frames(path)[0].astype(np.float64)
    centres = back[16::32, 32]  # the middle of each swatch
    assert np.abs(centres - swatches.numpy() * 255).max() <= 4


def test_odd_sizes_are_padded_by_repeating_edges_where_the_codec_needs_it(tmp_path, caplog):
    frames = clip(3, 33, 47)
    with caplog.at_level("INFO", logger="wan_vae"):
        h264 = write_video(frames, tmp_path / "odd.mp4", fps=16, quality=100)
    assert "padded to 48x34 by repeating the edge pixels" in caplog.text
    info, back = probe(h264), read_frames(h264).astype(int)
    assert (info["width"], info["height"]) == (48, 34)
    assert np.abs(back[:, :, -1] - back[:, :, -2]).mean() < 2 and np.abs(back[:, -1] - back[:, -2]).mean() < 2
    vp9 = probe(write_video(frames, tmp_path / "odd.webm", fps=16, format="vp9-webm"))
    assert (vp9["width"], vp9["height"]) == (47, 33)  # never rescaled or padded where not needed


@pytest.mark.parametrize("fps,exact", [(16, Fraction(16)), (24, Fraction(24)), (23.976, Fraction(24000, 1001)),
                                       (29.97, Fraction(30000, 1001)), (0.5, Fraction(1, 2)), (12.5, Fraction(25, 2))])  # fmt: skip
def test_fps_is_stored_as_an_exact_rational(tmp_path, fps, exact):
    assert frame_rate(fps) == exact
    info = probe(write_video(clip(4, 16, 16), tmp_path / "out.mkv", fps=fps, format="ffv1-mkv"))
    assert info["frames"] == 4
    steps = {b - a for a, b in zip(info["pts"], info["pts"][1:])}
    assert all(abs(step - 1 / exact) <= Fraction(1, 1000) for step in steps), steps  # matroska ticks are 1 ms


# ------------------------------------------------------------------------------------------ metadata


def big_workflow() -> dict:
    """A workflow over 256 KB with non-ASCII text and characters that need escaping in FFMETADATA."""
    nodes = [{"id": i, "type": "KSampler", "title": f"ノード {i} — ünïcödé ✓ 🎬", "widgets_values": [i, "a=b;c#d\\e\nnew line", 7.5]}
             for i in range(2600)]  # fmt: skip
    return {"last_node_id": 2600, "nodes": nodes, "links": [], "version": 0.4, "extra": {"note": 'quotes " and \\ slashes'}}


@pytest.mark.parametrize("name", ["h264-mp4", "h265-mp4", "prores-mov", "vp9-webm", "ffv1-mkv"])
def test_prompt_and_workflow_round_trip_as_the_front_end_reads_them(tmp_path, name):
    workflow = big_workflow()
    prompt = {"3": {"class_type": "WanDecodeLatents", "inputs": {"tiling": "auto", "text": "ä 日本"}}}
    assert len(json.dumps(workflow, ensure_ascii=False).encode()) > 256 * 1024
    path = write_video(clip(3), tmp_path / f"out{FORMATS[name].extension}", fps=16, format=name,
                       metadata={"prompt": prompt, "workflow": workflow})  # fmt: skip
    read = mp4_metadata(path) if FORMATS[name].tags == "mov" else matroska_metadata(path)
    assert read == {"prompt": prompt, "workflow": workflow}  # decoded once: objects, not JSON strings


def test_string_metadata_is_stored_as_given(tmp_path):
    path = write_video(clip(2), tmp_path / "out.mp4", fps=16, metadata={"workflow": json.dumps({"a": 1})})
    assert mp4_metadata(path) == {"workflow": {"a": 1}}


def test_formats_without_tags_still_write_the_video(tmp_path, caplog):
    with caplog.at_level("INFO", logger="wan_vae"):
        path = write_video(clip(2), tmp_path / "out.gif", fps=8, format="gif", metadata={"workflow": {}})
    assert path.exists() and "cannot hold workflow metadata" in caplog.text


# ------------------------------------------------------------------------------------------ audio


def sine(seconds: float, rate: int = 44100, channels: int = 2) -> dict:
    t = torch.arange(int(seconds * rate)) / rate
    return {"waveform": torch.sin(2 * torch.pi * 440 * t).expand(1, channels, -1) * 0.5, "sample_rate": rate}


@pytest.mark.parametrize("name,codec,rate", [("h264-mp4", "aac", 44100), ("prores-mov", "aac", 44100),
                                              ("vp9-webm", "opus", 48000), ("ffv1-mkv", "opus", 48000)])  # fmt: skip
@pytest.mark.parametrize("seconds", [0.4, 3.0])  # shorter than the 1 s video (padded), longer (cut)
def test_audio_is_muxed_and_fitted_to_the_video(tmp_path, name, codec, rate, seconds):
    path = write_video(clip(16, 32, 32), tmp_path / f"out{FORMATS[name].extension}", fps=16, format=name, audio=sine(seconds))
    info = probe(path)
    assert (info["audio_codec"], info["sample_rate"], info["channels"]) == (codec, rate, "stereo")
    assert abs(audio_duration(path) - 1.0) <= 0.05  # within a couple of audio frames of the video's 1 s


def test_bad_audio_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(VideoWriteError, match="ComfyUI AUDIO"):
        write_video(clip(2), tmp_path / "out.mp4", fps=16, audio={"samples": 1})
    assert only(tmp_path) == []


# ------------------------------------------------------------------------------------------ streaming


def test_a_generator_of_chunks_makes_the_same_file_as_the_whole_tensor(tmp_path):
    frames = (clip(11) * 255).round().to(torch.uint8)
    whole = write_video(frames, tmp_path / "whole.mkv", fps=16, format="ffv1-mkv")
    streamed = write_video((frames[i : i + 3] for i in range(0, 11, 3)), tmp_path / "streamed.mkv", fps=16, format="ffv1-mkv")
    assert np.array_equal(read_frames(whole), read_frames(streamed))
    h264_a = write_video(clip(11), tmp_path / "a.mp4", fps=16)
    h264_b = write_video((clip(11)[i : i + 4] for i in range(0, 11, 4)), tmp_path / "b.mp4", fps=16)
    assert np.array_equal(read_frames(h264_a), read_frames(h264_b))


def test_streaming_holds_no_chunk_already_written(tmp_path):
    refs = []

    def chunks():
        for i in range(6):
            chunk = clip(2, 32, 32, seed=i)
            refs.append(weakref.ref(chunk))
            yield chunk
            gc.collect()
            assert all(r() is None for r in refs[:-1])

    write_video(chunks(), tmp_path / "out.mp4", fps=16)


def test_grey_frames_are_written_as_rgb_with_a_note(tmp_path, caplog):
    with caplog.at_level("INFO", logger="wan_vae"):
        grey = write_video(torch.rand(2, 16, 16, 1), tmp_path / "grey.mkv", fps=8, format="ffv1-mkv")
    back = read_frames(grey)
    assert (back[..., 0] == back[..., 1]).all() and "grey frames are written as RGB" in caplog.text


def rgba_frames(n=5, h=48, w=64):
    """Smooth RGBA frames: a colour gradient, alpha from transparent (left) to opaque (right)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    frames = torch.stack([x, y, 1 - x, x], -1).expand(n, h, w, 4).clone()
    frames[..., 1] = (frames[..., 1] + torch.arange(n).view(n, 1, 1) / (2 * n)) % 1
    return frames


@pytest.mark.parametrize("fmt, bit_depth, tolerance", [
    ("png", 8, 0), ("png", 10, 1), ("ffv1-mkv", 8, 0), ("ffv1-mkv", 10, 1), ("webp", 8, 3), ("vp9-webm", 8, 3),
    ("prores-mov", 10, 1),
])  # fmt: skip
def test_rgba_frames_keep_their_alpha_in_the_formats_that_carry_it(tmp_path, fmt, bit_depth, tolerance):
    from media import read_rgba

    frames = rgba_frames()
    path = write_video(frames, tmp_path / f"alpha{FORMATS[fmt].extension}", fps=8, format=fmt, quality=100 if fmt == "webp" else 80,
                       bit_depth=bit_depth)  # fmt: skip
    back = read_rgba(path)
    alpha = (frames[..., 3] * 255).round().numpy()
    assert back.shape == (5, 48, 64, 4)
    assert np.abs(back[..., 3].astype(int) - alpha).max() <= tolerance
    assert np.abs(back[..., :3].astype(int) - (frames[..., :3] * 255).round().numpy())[back[..., 3] > 128].mean() < 8


@pytest.mark.parametrize("fmt, bit_depth, names", [
    ("h264-mp4", 8, "cannot keep"), ("gif", 8, "cannot keep"), ("av1-webm", 8, "cannot keep"),
    ("vp9-webm", 10, "at 8 bits only"),
])  # fmt: skip
def test_rgba_frames_into_a_format_without_alpha_are_refused_and_nothing_is_written(tmp_path, fmt, bit_depth, names):
    with pytest.raises(VideoWriteError, match=names) as caught:
        write_video(iter([rgba_frames()]), tmp_path / "x.out", fps=8, format=fmt, bit_depth=bit_depth)
    assert "png" in str(caught.value) and list(tmp_path.iterdir()) == []
    with pytest.raises(VideoWriteError, match=names):  # what the nodes check before decoding
        check_output(tmp_path / "y.out", 8, fmt, bit_depth=bit_depth, alpha=True)


def test_frames_that_change_their_channels_midway_are_refused(tmp_path):
    chunks = iter([torch.rand(2, 16, 16, 4), torch.rand(2, 16, 16, 3)])
    with pytest.raises(VideoWriteError, match="same channels; frame 2 has 3, the first had 4"):
        write_video(chunks, tmp_path / "x.mkv", fps=8, format="ffv1-mkv")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("frames,text", [
    (torch.zeros(0, 16, 16, 3), "empty"),
    (iter([]), "empty"),
    (torch.zeros(16, 16), r"\[N, H, W, channels\]"),
    (torch.zeros(1, 2, 16, 16, 3), r"\[N, H, W, channels\]"),
    (torch.zeros(2, 3, 16, 16), "permute"),
    (torch.zeros(2, 16, 16, 2), "3 \\(RGB\\) channels"),
    (torch.full((2, 16, 16, 3), float("nan")), "NaN"),
    (torch.zeros(2, 16, 16, 3, dtype=torch.int32), "float in \\[0, 1\\] or uint8"),
    ("frames.png", "iterator"),
])  # fmt: skip
def test_bad_frames_are_refused_and_leave_nothing(tmp_path, frames, text):
    if isinstance(frames, str):
        frames = 42
    with pytest.raises(VideoWriteError, match=text):
        write_video(frames, tmp_path / "out.mp4", fps=16)
    assert only(tmp_path) == []


def test_nan_in_a_later_chunk_stops_the_write_and_leaves_nothing(tmp_path):
    bad = clip(2)
    bad[1, 5, 5, 0] = float("nan")
    with pytest.raises(VideoWriteError, match="Frames 2-3 contain NaN"):
        write_video(iter([clip(2), bad, clip(2)]), tmp_path / "out.mp4", fps=16)
    assert only(tmp_path) == []


def test_frames_changing_size_are_refused(tmp_path):
    with pytest.raises(VideoWriteError, match="one size"):
        write_video(iter([clip(2, 16, 16), clip(2, 16, 32)]), tmp_path / "out.mp4", fps=16)
    assert only(tmp_path) == []


@pytest.mark.parametrize("fps", [0, -5, 1000.5, float("nan"), "16", True])
def test_bad_fps(tmp_path, fps):
    with pytest.raises(VideoWriteError, match="fps must be"):
        write_video(clip(2), tmp_path / "out.mp4", fps=fps)
    assert only(tmp_path) == []


@pytest.mark.parametrize("kw,text", [({"format": "avi"}, "Unknown format 'avi'; choose one of: h264-mp4"),
                                     ({"quality": 101}, "quality must be"), ({"bit_depth": 12}, "bit_depth must be 8 or 10")])  # fmt: skip
def test_bad_options(tmp_path, kw, text):
    with pytest.raises(VideoWriteError, match=text):
        write_video(clip(2), tmp_path / "out.mp4", fps=16, **kw)


def test_missing_folder_and_a_file_in_the_way(tmp_path):
    with pytest.raises(VideoWriteError, match="does not exist"):
        write_video(clip(2), tmp_path / "nope" / "out.mp4", fps=16)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(VideoWriteError, match="it is a file"):
        write_video(clip(2), tmp_path / "afile" / "out.mp4", fps=16)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs a read-only /proc")
def test_an_unwritable_folder(tmp_path):
    with pytest.raises(VideoWriteError, match="Cannot write in /proc"):
        write_video(clip(2), "/proc/wan_vae_test.mp4", fps=16)


def test_an_existing_file_is_never_overwritten_unless_asked(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(VideoWriteError, match="already exists"):
        write_video(clip(2), target, fps=16)
    assert target.read_bytes() == b"precious" and only(tmp_path) == ["out.mp4"]
    write_video(clip(2), target, fps=16, overwrite=True)
    assert probe(target)["frames"] == 2


def test_a_file_appearing_while_writing_is_not_replaced(tmp_path):
    target = tmp_path / "out.mp4"

    def chunks():
        yield clip(2)
        target.write_bytes(b"someone else's")
        yield clip(2)

    with pytest.raises(VideoWriteError, match="appeared while writing"):
        write_video(chunks(), target, fps=16)
    assert target.read_bytes() == b"someone else's" and only(tmp_path) == ["out.mp4"]


def _ffmpeg_children() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and "ffmpeg" in (proc / "cmdline").read_text():
                    pids.append(int(proc.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the child process through /proc")
def test_ffmpeg_killed_midway_gives_an_error_and_no_file(tmp_path):
    def chunks():
        for i in range(20):
            if i == 3:
                for pid in _ffmpeg_children():
                    os.kill(pid, signal.SIGKILL)
            yield clip(4, 64, 64, seed=i)

    with pytest.raises(VideoWriteError, match="ffmpeg was killed by SIGKILL while writing h264-mp4"):
        write_video(chunks(), tmp_path / "out.mp4", fps=16)
    assert only(tmp_path) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses RLIMIT_FSIZE")
def test_a_full_disk_gives_an_error_with_ffmpeg_s_message_and_no_file(tmp_path):
    """A file-size limit on the process makes ffmpeg's writes fail as on a full disk."""
    script = f"""
import resource, signal, sys, torch
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from wan_vae.video.writer import write_video
from wan_vae import VideoWriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited: writes fail with EFBIG instead of killing ffmpeg
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
try:
    write_video(torch.rand(60, 128, 128, 3), {str(tmp_path / "out.mkv")!r}, fps=16, format="ffv1-mkv")
except VideoWriteError as e:
    print("ERROR", e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    # ENOSPC makes ffmpeg fail; this limit kills it with SIGXFSZ (Popen restores the default handler).
    assert out.stdout.startswith(("ERROR ffmpeg failed", "ERROR ffmpeg was killed by SIGXFSZ")), out.stdout + out.stderr
    assert "nothing was saved" in out.stdout
    assert only(tmp_path) == []
