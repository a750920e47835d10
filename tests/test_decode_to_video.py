"""Wan Decode to Video: the decode streamed into the file, the latent kept beside it, bad settings refused first."""

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from comfy_graph import LoadLatentLikeComfyUI
from media import probe, read_frames
from reference import latents
from test_pack import decode, export, load


def to_video(pack, vae, z, **kw):
    args = dict(latent_space="raw", tiling="off", tile_size=512, tile_overlap=64, frames_per_chunk=1, fps=16.0,
                format="ffv1-mkv", quality=80, filename_prefix="WanVideo/wan", save_metadata=True) | kw  # fmt: skip
    return pack.NODE_CLASS_MAPPINGS["WanDecodeToVideo"]().decode_to_video(vae, {"samples": z}, **args)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_video_has_the_frames_of_decode_latents_and_export_and_the_latent_is_kept(pack, folders, monkeypatch):
    vae, z = load(pack, device="cpu"), latents("2.1", (2, 3, 6, 10))
    expected = export(pack, decode(pack, vae, z), format="ffv1-mkv", filename_prefix="ref/wan")["result"][0]
    monkeypatch.setattr(type(vae.vae), "decode", lambda *a, **k: pytest.fail("the whole video was decoded at once"))
    out = to_video(pack, vae, z, tiling="on", tile_size=128, prompt={"1": {}}, extra_pnginfo={"workflow": {"nodes": []}})
    path = Path(out["result"][0])
    assert path == folders["output"] / "WanVideo" / "wan_00001_.mkv"
    assert files(path.parent) == ["wan_00001_.latent", "wan_00001_.mkv"]
    assert np.array_equal(read_frames(path), read_frames(expected))  # 2 videos x 9 frames, exact tiles
    info = out["ui"]["wan_video"][0]
    assert (info["frames"], info["width"], info["height"], info["latent"]) == (18, 80, 48, "wan_00001_.latent")
    # the latent, as core Load Latent reads it (after copying it to the input folder)
    os.replace(path.with_suffix(".latent"), folders["input"] / "kept.latent")
    assert torch.equal(LoadLatentLikeComfyUI().load("kept.latent")[0]["samples"], z)
    again = to_video(pack, vae, z, save_latent=False)["result"][0]
    assert Path(again).name == "wan_00002_.mkv" and files(path.parent) == ["wan_00001_.mkv", "wan_00002_.mkv"]


def test_10_bit_comes_from_the_decoder_s_floats(pack, folders):
    vae, z = load(pack, device="cpu"), latents("2.1", (1, 2, 6, 10))
    path = to_video(pack, vae, z, bit_depth=10, save_latent=False)["result"][0]
    assert probe(path)["pix_fmt"] == "gbrp10le"
    levels = read_frames(path, rgb48=True) >> 6
    floats = decode(pack, vae, z).numpy()
    assert np.abs(levels / 1023 - floats).max() <= 1 / 1023  # one 10-bit level; 8-bit frames would be 2 off
    assert (levels % 4 != 0).mean() > 0.5


@pytest.mark.parametrize("change,text", [
    ({"filename_prefix": "../outside/wan"}, "outside the output folder"),
    ({"format": "mpeg2"}, "Unknown format 'mpeg2'; choose one of: h264-mp4"),
    ({"format": "gif", "bit_depth": 10}, "gif has no 10-bit form; choose bit_depth 8, or one of h264-mp4"),
    ({"fps": 0.0}, "fps must be a number above 0"),
    ({"audio": {"waveform": torch.zeros(1, 2, 0), "sample_rate": 44100}}, "audio waveform must be"),
])  # fmt: skip
def test_bad_settings_are_refused_before_anything_is_decoded_or_written(pack, folders, monkeypatch, change, text):
    vae = load(pack, device="cpu")
    monkeypatch.setattr(type(vae.vae), "decode_frames", lambda *a, **k: pytest.fail("decoding started"))
    with pytest.raises((ValueError, pack.lib.WanVAEError), match=text):
        to_video(pack, vae, latents("2.1"), **change)
    assert files(folders["output"] / "WanVideo") == []


def test_wrong_latents_get_the_decoder_s_message_and_nothing_is_written(pack, folders):
    with pytest.raises(pack.lib.LatentError, match="Wan 2.2 TI2V-5B latents need the Wan 2.2 VAE"):
        to_video(pack, load(pack, device="cpu"), latents("2.2"))
    assert files(folders["output"] / "WanVideo") == []


class Interrupt(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


def test_stop_ends_without_an_error_leaves_no_video_and_says_where_the_latent_is(pack, folders, monkeypatch):
    notices = []
    vae = load(pack, device="cpu")
    monkeypatch.setattr(pack.host, "stop_requested", lambda: True)
    monkeypatch.setattr(pack.host, "raise_stopped", lambda stopped: (_ for _ in ()).throw(Interrupt()))
    monkeypatch.setattr(pack.host, "is_stop", lambda error: isinstance(error, Interrupt))
    monkeypatch.setattr(pack.host, "notify", lambda text, severity="info": notices.append(text))
    with pytest.raises(Interrupt):
        to_video(pack, vae, latents("2.1", (1, 3, 6, 10)))
    kept = folders["output"] / "WanVideo" / "wan_00001_.latent"
    assert files(kept.parent) == [kept.name]  # no video, no partial file
    assert notices == [f"Stopped. No video was saved; the latent is kept in {kept}: copy it to ComfyUI/input and decode "
                       "it again with Load Latent -> Wan Decode to Video."]  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds ffmpeg through /proc")
def test_ffmpeg_killed_midway_is_a_clear_error_no_video_and_the_latent_kept(pack, folders, monkeypatch):
    from test_writer import _ffmpeg_children

    vae = load(pack, device="cpu")
    real = type(vae.vae).decode_frames

    def killing(self, *args, **kwargs):
        for i, chunk in enumerate(real(self, *args, **kwargs)):
            if i == 2:
                for pid in _ffmpeg_children():
                    os.kill(pid, signal.SIGKILL)
            yield chunk

    monkeypatch.setattr(type(vae.vae), "decode_frames", killing)
    with pytest.raises(pack.lib.VideoWriteError, match=r"ffmpeg was killed by SIGKILL .* the latent is kept in .*wan_00001_.latent"):
        to_video(pack, vae, latents("2.1", (1, 6, 6, 10)), format="h264-mp4")
    assert files(folders["output"] / "WanVideo") == ["wan_00001_.latent"]


def test_the_latent_holds_the_workflow_like_core_save_latent(pack, folders):
    from safetensors import safe_open

    to_video(pack, load(pack, device="cpu"), latents("2.1"), prompt={"1": {"class_type": "X"}},
             extra_pnginfo={"workflow": {"nodes": [1]}})  # fmt: skip
    with safe_open(folders["output"] / "WanVideo" / "wan_00001_.latent", "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["prompt"]) == {"1": {"class_type": "X"}} and json.loads(meta["workflow"]) == {"nodes": [1]}


def test_the_long_video_example_runs_end_to_end(pack, folders):
    from comfy_graph import check_ui_workflow, run_api
    from test_pack import PACK, classes

    workflow = json.loads((PACK / "tests" / "workflows" / "wan21_long_video.api.json").read_text())
    ui_workflow = json.loads((PACK / "example_workflows" / "wan21_long_video.json").read_text())
    check_ui_workflow(ui_workflow, classes(pack))
    from wan_vae.files.latents import write_latent_file

    write_latent_file(folders["input"] / workflow["1"]["inputs"]["latent"], latents("2.1", (1, 3, 6, 10)))
    ui, (path, video) = run_api(workflow, classes(pack), extra_pnginfo={"workflow": ui_workflow})["3"]
    assert Path(path).name == "wan_long_00001_.mp4" and probe(path)["frames"] == 9 and video.get_stream_source() == path
    assert ui["wan_video"][0]["latent"] == "wan_long_00001_.latent" and (Path(path).parent / "wan_long_00001_.latent").is_file()
