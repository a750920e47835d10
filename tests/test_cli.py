"""The command line, run as users run it (`python -m wan_vae ...`): each command, and each bad input's exit code."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from media import FFMPEG, probe, read_frames
from reference import latents, write_vae_file
from wan_vae import cli
from wan_vae.files.latents import read_latent_file, write_latent_file
from wan_vae.video.writer import write_video

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "wan_vae", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    for version, name in (("2.1", "wan_2.1_vae.safetensors"), ("2.2", "wan2.2_vae.safetensors")):
        write_vae_file(d / name, version)
    z = latents("2.1", (1, 3, 6, 10))
    write_latent_file(d / "clip.latent", z)
    return {"dir": d, "vae": d / "wan_2.1_vae.safetensors", "vae22": d / "wan2.2_vae.safetensors", "latent": d / "clip.latent", "z": z}


# ------------------------------------------------------------------------------------------ commands


def test_decode_a_comfyui_latent_to_mp4(files, tmp_path):
    out = tmp_path / "clip.mp4"
    res = run("decode", files["latent"], "--vae", files["vae"], "-o", out)
    assert res.returncode == 0, res.stderr
    assert f"wrote {out} (h264-mp4)" in res.stdout
    assert "decoding: 3/3" in res.stderr  # plain progress lines when not on a terminal
    info = probe(out)
    assert info["frames"] == 9 and (info["width"], info["height"]) == (80, 48)


def test_decode_ping_pong_into_a_gif_that_plays_twice(files, tmp_path):
    out = tmp_path / "loop.gif"
    res = run("decode", files["latent"], "--vae", files["vae"], "-o", out, "--pingpong", "--loop-count", "2")
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert probe(out)["frames"] == 16 and data[data.index(b"NETSCAPE2.0") + 11 : data.index(b"NETSCAPE2.0") + 14] == b"\x03\x01\x02"


def test_decode_a_wan_alpha_pair_to_an_rgba_video(files, tmp_path):
    from media import read_rgba
    from test_wan_alpha import ALPHA, COLOUR, write_pair

    write_pair(tmp_path)
    out = tmp_path / "alpha.mkv"
    res = run("decode", files["latent"], "--vae", tmp_path / COLOUR, "--alpha-vae", tmp_path / ALPHA, "-o", out, "--latent-space", "raw")
    assert res.returncode == 0, res.stderr
    rgba = read_rgba(out)
    assert rgba.shape == (9, 48, 80, 4) and rgba[..., 3].std() > 1  # an alpha of its own, not opaque


def test_decode_named_safetensors_and_torch_tensors_the_same(files, tmp_path):
    z = files["z"]
    save_file({"latents": z, "other": torch.zeros(3)}, str(tmp_path / "pipe.safetensors"))
    torch.save(z, tmp_path / "script.pt")
    outputs = []
    for source, extra in ((tmp_path / "pipe.safetensors", ["--key", "latents"]), (tmp_path / "script.pt", [])):
        out = tmp_path / f"{source.stem}.mkv"
        res = run("decode", source, *extra, "--vae", files["vae"], "-o", out)
        assert res.returncode == 0, res.stderr
        outputs.append(read_frames(out))
    assert np.array_equal(outputs[0], outputs[1])


def test_normalized_latents_decode_to_the_same_video(files, tmp_path):
    from wan_vae import load_vae

    vae = load_vae(files["vae"])
    normalized = (files["z"] - vae.latents_mean.view(1, -1, 1, 1, 1)) / vae.latents_std.view(1, -1, 1, 1, 1)
    torch.save(normalized, tmp_path / "normalized.pt")
    raw = run("decode", files["latent"], "--vae", files["vae"], "-o", tmp_path / "raw.mkv")
    norm = run("decode", tmp_path / "normalized.pt", "--latent-space", "normalized", "--vae", files["vae"], "-o", tmp_path / "norm.mkv")
    assert raw.returncode == norm.returncode == 0
    assert np.abs(read_frames(tmp_path / "raw.mkv").astype(int) - read_frames(tmp_path / "norm.mkv")).max() <= 1


def test_decode_with_tiles_audio_and_an_explicit_format(files, tmp_path):
    wav = tmp_path / "tone.wav"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2", str(wav)], check=True)
    out = tmp_path / "clip.video"
    res = run("decode", files["latent"], "--vae", files["vae"], "-o", out, "--format", "vp9-webm", "--tiling", "on",
              "--tile-size", "64", "--tile-overlap", "16", "--audio", wav, "--fps", "24")  # fmt: skip
    assert res.returncode == 0, res.stderr
    info = probe(out)
    assert info["codec"] == "vp9" and info["audio_codec"] == "opus" and info["frames"] == 9


def test_info_describes_vaes_and_latents(files):
    res = run("info", files["vae"])
    assert res.returncode == 0
    # the test files have reduced widths, so they read as pruned ones
    assert ("Wan 2.1 VAE pruned to 17% of its decoder channels (16 latent channels, 8x spatial), original Wan / "
            "ComfyUI names, stored as bfloat16, 194 tensors") in res.stdout  # fmt: skip
    assert "Wan 2.2 VAE pruned to 12% of its decoder channels (48 latent channels, 16x spatial)" in run("info", files["vae22"]).stdout
    res = run("info", files["latent"])
    assert res.returncode == 0
    assert "latent [1, 16, 3, 6, 10]: 1 video(s) of 3 latent frames -> 9 frames at 80x48 px" in res.stdout
    assert "needs the Wan 2.1 VAE" in res.stdout


def test_encode_a_video_into_a_latent_comfyui_loads(files, tmp_path):
    video = write_video(torch.rand(9, 48, 80, 3), tmp_path / "in.mkv", fps=16, format="ffv1-mkv")
    out = tmp_path / "encoded.latent"
    res = run("encode", video, "--vae", files["vae"], "-o", out)
    assert res.returncode == 0, res.stderr
    tensors = load_file(str(out))
    assert "latent_format_version_0" in tensors  # core Load Latent does not rescale it
    assert read_latent_file(out).shape == (1, 16, 3, 6, 10)
    uneven = write_video(torch.rand(11, 50, 80, 3), tmp_path / "uneven.mkv", fps=16, format="ffv1-mkv")
    assert run("encode", uneven, "--vae", files["vae"], "-o", tmp_path / "u.latent", "--trim").returncode == 0
    assert read_latent_file(tmp_path / "u.latent").shape == (1, 16, 3, 6, 10)


# ------------------------------------------------------------------------------------------ bad input: exit 2


@pytest.mark.parametrize("case,text", [
    ("missing latent", "No latent file"),
    ("wrong vae", "Wan 2.2 TI2V-5B latents need the Wan 2.2 VAE"),
    ("not a vae", "not a Wan VAE"),
    ("output exists", "already exists"),
    ("unknown extension", "Cannot tell the format"),
    ("bad tiles", "tile_overlap (600 px) is larger than tile_size"),
    ("encode frames", "1 + 4k frames"),
])  # fmt: skip
def test_bad_input_exits_2_with_the_message_and_no_traceback(files, tmp_path, case, text):
    d = files["dir"]
    vae, latent = files["vae"], files["latent"]
    if case == "missing latent":
        args = ["decode", tmp_path / "nope.latent", "--vae", vae, "-o", tmp_path / "o.mp4"]
    elif case == "wrong vae":
        write_latent_file(tmp_path / "l48.latent", latents("2.2"))
        args = ["decode", tmp_path / "l48.latent", "--vae", vae, "-o", tmp_path / "o.mp4"]
    elif case == "not a vae":
        save_file({"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)}, str(tmp_path / "sd.safetensors"))
        args = ["decode", latent, "--vae", tmp_path / "sd.safetensors", "-o", tmp_path / "o.mp4"]
    elif case == "output exists":
        (tmp_path / "o.mp4").write_bytes(b"keep me")
        args = ["decode", latent, "--vae", vae, "-o", tmp_path / "o.mp4"]
    elif case == "unknown extension":
        args = ["decode", latent, "--vae", vae, "-o", tmp_path / "o.avi"]
    elif case == "bad tiles":
        args = ["decode", latent, "--vae", vae, "-o", tmp_path / "o.mp4", "--tiling", "on", "--tile-overlap", "600"]
    else:
        video = write_video(torch.rand(6, 48, 80, 3), tmp_path / "six.mkv", fps=16, format="ffv1-mkv")
        args = ["encode", video, "--vae", vae, "-o", tmp_path / "o.latent"]
    res = run(*args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert text in res.stderr and "Traceback" not in res.stderr
    if case == "output exists":
        assert (tmp_path / "o.mp4").read_bytes() == b"keep me"
    assert d.exists()


def test_bad_usage_exits_2():
    res = run("decode", "x.latent", "-o", "x.mp4")  # no --vae
    assert res.returncode == 2 and "--vae" in res.stderr


def test_unexpected_errors_exit_1_and_debug_shows_the_traceback(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_info", lambda args: 1 / 0)
    parser_run = ["info", str(files["vae"])]
    monkeypatch.setattr(cli, "build_parser", _parser_with(cli.cmd_info))
    assert cli.main(parser_run) == 1
    assert "unexpected error: ZeroDivisionError" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):
        cli.main([*parser_run, "--debug"])


def _parser_with(run_info):
    build = cli.build_parser

    def patched():
        parser = build()
        parser._subparsers._group_actions[0].choices["info"].set_defaults(run=run_info)
        return parser

    return patched


def test_a_terminal_gets_a_progress_bar(capsys):
    progress = cli._Progress("decoding")
    progress.tty = True  # as if stderr were a terminal
    for done in (1, 2, 3):
        progress(done, 3)
    progress.close()
    err = capsys.readouterr().err
    assert "decoding: 100%" in err and "3/3" in err
