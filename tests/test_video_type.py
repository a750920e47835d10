"""ComfyUI's VIDEO both ways: Wan Decode as VIDEO decodes lazily (into Save Video's file chunk by chunk, or whole for
Get Video Components), Wan Decode to Video hands on its file, and Export Video / Wan Encode take a VIDEO, reading its
file a few frames at a time. Outside ComfyUI the pack's stand-ins of core's VideoFromFile / VideoFromComponents are
used (tests/test_real_comfyui.py runs core's own)."""

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from media import audio_duration, probe, read_frames, read_rgba
from reference import latents, write_vae_file
from test_pack import decode, export, load


def as_video(pack, vae, z, fps=16.0, audio=None, **kw):
    args = dict(latent_space="raw", tiling="off", tile_size=512, tile_overlap=64, frames_per_chunk=1) | kw
    return pack.NODE_CLASS_MAPPINGS["WanDecodeAsVideo"]().as_video(vae, {"samples": z}, fps=fps, audio=audio, **args)[0]


def encode(pack, vae, images, **kw):
    args = dict(latent_space="raw", tiling="off", tile_size=512, frames_per_chunk=1, trim=False) | kw
    return pack.NODE_CLASS_MAPPINGS["WanEncode"]().encode(vae, images, **args)[0]["samples"]


def no_whole_decode(pack, monkeypatch):
    wan_vae = pack.lib.WanVAE
    monkeypatch.setattr(wan_vae, "decode", lambda *a, **k: pytest.fail("the whole video was decoded at once"))


def tone(seconds: float, rate: int = 48000) -> dict:
    t = torch.arange(int(seconds * rate)) / rate
    return {"waveform": (0.3 * torch.sin(2 * torch.pi * 440 * t)).expand(1, 2, -1).clone(), "sample_rate": rate}


# ----------------------------------------------------------------------------------------- the lazy VIDEO


def test_size_length_and_rate_come_from_the_latent_without_decoding(pack, folders, monkeypatch):
    vae = load(pack, device="cpu")
    monkeypatch.setattr(pack.lib.WanVAE, "decode_frames", lambda *a, **k: pytest.fail("decoded"))
    video = as_video(pack, vae, latents("2.1", (1, 6, 6, 10)), fps=24.0)
    assert isinstance(video, pack.host.VideoInput)
    assert video.get_dimensions() == (80, 48) and video.get_frame_count() == 21
    assert video.get_frame_rate() == 24 and video.get_duration() == pytest.approx(21 / 24)
    trimmed = video.as_trimmed(0.5, 0.25)  # frames 12, 13, 14 (times 0.5, 0.54, 0.58)
    assert (trimmed.window, trimmed.get_frame_count()) == ((12, 6), 6)
    assert video.as_trimmed(2.0, 1.0) is None and video.as_trimmed(0.5, 5.0, strict_duration=True) is None
    assert video.as_trimmed(-0.25).window == (15, 6)  # a negative start counts from the end


def test_save_to_streams_the_decode_into_the_file_as_core_asks(pack, folders, monkeypatch):
    vae, z = load(pack, device="cpu"), latents("2.1", (1, 3, 6, 10))
    images = decode(pack, vae, z)
    expected = (images.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    through_export = read_frames(export(pack, images, format="h264-mp4", filename_prefix="ref/wan")["result"][0])
    video = as_video(pack, vae, z, audio=tone(2.0))
    no_whole_decode(pack, monkeypatch)
    lossless = folders["output"] / "core.mkv"
    video.save_to(str(lossless), format="mkv", codec="auto", metadata={"prompt": {"1": {}}})
    assert np.array_equal(read_frames(lossless), expected)  # exact: FFV1 is lossless
    mp4 = folders["output"] / "core.mp4"
    video.save_to(str(mp4), format="auto", codec="auto", metadata={"workflow": {"nodes": []}})
    info = probe(mp4)
    assert (info["codec"], info["frames"], info["audio_codec"]) == ("h264", 9, "aac")
    assert audio_duration(mp4) == pytest.approx(9 / 16, abs=0.03)
    assert np.array_equal(read_frames(mp4), through_export)  # what Export Video writes for these frames
    buffer = io.BytesIO()
    video.save_to(buffer, format="webm", codec="av1")
    assert buffer.getvalue()[:4] == b"\x1a\x45\xdf\xa3"  # an EBML (WebM) header


def test_components_are_the_frames_of_wan_decode_latents_and_trims_cut_them(pack, folders):
    vae, z = load(pack, device="cpu"), latents("2.1", (1, 4, 6, 10))
    video = as_video(pack, vae, z, audio=tone(1.0))
    parts = video.get_components()
    assert torch.equal(parts.images, decode(pack, vae, z)) and parts.frame_rate == 16
    assert parts.audio["waveform"].shape[-1] == 48000
    trimmed = video.as_trimmed(0.25, 0.5).get_components()  # frames 4-11
    assert torch.equal(trimmed.images, decode(pack, vae, z)[4:12])
    assert trimmed.audio["waveform"].shape[-1] == 24000


def test_a_file_for_nodes_that_read_one_is_decoded_once_into_the_temp_folder(pack, folders):
    vae, z = load(pack, device="cpu"), latents("2.1", (1, 2, 6, 10))
    video = as_video(pack, vae, z)
    source = Path(video.get_stream_source())
    assert source.parent.parent == folders["temp"] and probe(source)["frames"] == 5
    assert video.get_stream_source() == str(source) and video.get_container_format().split(",")[1] == "mp4"


def test_an_rgba_vae_gives_alpha_apart_where_core_has_the_field_and_refuses_mp4(pack, folders, monkeypatch):
    write_vae_file(folders["vae"] / "rgba.safetensors", "2.1", in_channels=4, out_channels=4)
    vae, z = load(pack, "rgba.safetensors", device="cpu"), latents("2.1", (1, 2, 6, 10))
    video = as_video(pack, vae, z)
    whole = decode(pack, vae, z)
    parts = video.get_components()
    assert torch.equal(parts.images, whole[..., :3]) and torch.equal(parts.alpha, whole[..., 3])
    monkeypatch.setattr(pack.host, "components_have_alpha", lambda: False)  # ComfyUI 0.3.64's VideoComponents
    assert torch.equal(video.get_components().images, whole[..., :3])
    rgba = pack.host.VideoFromComponents(pack.host.VideoComponents(images=whole[..., :3], frame_rate=16, alpha=whole[..., 3]))
    with pytest.raises(pack.lib.VideoWriteError, match=r"alpha channel \(RGBA\), which h264-mp4 cannot keep"):
        export(pack, rgba)
    kept = read_rgba(export(pack, rgba, format="ffv1-mkv")["result"][0])
    assert np.array_equal(kept, (whole.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8))  # the alpha joined back, exactly
    monkeypatch.setattr(pack.lib.WanVAE, "decode_frames", lambda *a, **k: pytest.fail("decoding started"))
    with pytest.raises(pack.lib.VideoWriteError, match="RGBA.*keeps no alpha: choose mkv"):
        video.save_to(str(folders["output"] / "a.mp4"))
    assert not (folders["output"] / "a.mp4").exists() and not (folders["output"] / "a.latent").exists()


@pytest.mark.parametrize("container,codec,text", [
    ("mkv", "h264", "cannot be saved as mkv/h264; the container/codec pairs it writes are mp4/auto"),
    ("avi", "auto", "cannot be saved as avi/auto"),
])  # fmt: skip
def test_a_container_or_codec_we_cannot_write_is_named_before_decoding(pack, folders, monkeypatch, container, codec, text):
    video = as_video(pack, load(pack, device="cpu"), latents("2.1"))
    monkeypatch.setattr(pack.lib.WanVAE, "decode_frames", lambda *a, **k: pytest.fail("decoding started"))
    with pytest.raises(pack.lib.VideoWriteError, match=text):
        video.save_to(str(folders["output"] / "x.mp4"), format=container, codec=codec)
    with pytest.raises(pack.lib.VideoWriteError, match="sRGB"):
        video.save_to(str(folders["output"] / "x.mp4"), color_space="HDR")
    assert list(folders["output"].iterdir()) == []


def test_a_failed_save_keeps_the_latent_beside_the_file_it_was_writing(pack, folders, monkeypatch):
    vae, z = load(pack, device="cpu"), latents("2.1", (1, 2, 6, 10))
    video = as_video(pack, vae, z)

    def broken(*args, **kwargs):
        yield torch.zeros(1, 48, 80, 3, dtype=torch.uint8)
        raise RuntimeError("the GPU fell off")

    monkeypatch.setattr(pack.lib.WanVAE, "decode_frames", broken)
    with pytest.raises(RuntimeError, match="fell off") as failed:
        video.save_to(str(folders["output"] / "lost.mp4"))
    assert "the latent is kept in" in "".join(failed.value.__notes__)
    assert sorted(p.name for p in folders["output"].iterdir()) == ["lost.latent"]


def test_stop_during_save_ends_without_a_video_and_keeps_the_latent(pack, folders, monkeypatch):
    vae, z = load(pack, device="cpu"), latents("2.1", (1, 3, 6, 10))
    video = as_video(pack, vae, z)
    monkeypatch.setattr(pack.host, "stop_requested", lambda: True)  # the user pressed Stop
    with pytest.raises(pack.lib.DecodeCancelled, match="the latent is kept in .*stopped.latent"):
        video.save_to(str(folders["output"] / "stopped.mp4"))
    assert sorted(p.name for p in folders["output"].iterdir()) == ["stopped.latent"]


# ----------------------------------------------------------------------------------------- Wan Decode to Video's VIDEO


def test_wan_decode_to_video_hands_on_its_file_and_a_png_folder_says_it_is_not_a_video(pack, folders):
    from test_decode_to_video import to_video

    vae, z = load(pack, device="cpu"), latents("2.1", (1, 2, 6, 10))
    path, video = to_video(pack, vae, z, format="h264-mp4", save_latent=False)["result"]
    assert isinstance(video, pack.host.VideoFromFile) and video.get_stream_source() == path
    _, frames = to_video(pack, vae, z, format="png", save_latent=False)["result"]
    with pytest.raises(pack.lib.VideoReadError, match="saved PNG frames .* which is not a video"):
        frames.get_components()


# ----------------------------------------------------------------------------------------- VIDEO in


@pytest.fixture
def clip(folders):
    """A 21-frame 80x48 FFV1 file with a 2 s tone, at 16 fps."""
    frames = torch.rand(21, 48, 80, 3, generator=torch.Generator().manual_seed(5))
    from wan_vae import write_video

    path = write_video(frames, folders["input"] / "clip.mkv", 16, format="ffv1-mkv", audio=tone(2.0))
    return path, torch.from_numpy(read_frames(path))


def test_export_video_reencodes_a_file_video_a_chunk_at_a_time_with_its_rate_trim_and_audio(pack, folders, clip, monkeypatch):
    path, frames = clip
    video = pack.host.VideoFromFile(str(path), start_time=0.25, duration=0.5)  # frames 4-11, as core trims
    out = export(pack, video, fps=99.0, format="ffv1-mkv")
    saved = Path(out["result"][0])
    assert np.array_equal(read_frames(saved), frames[4:12].numpy())
    info = out["ui"]["wan_video"][0]
    assert (info["frames"], info["fps"]) == (8, 16.0) and probe(saved)["audio_codec"] == "opus"
    assert audio_duration(saved) == pytest.approx(0.5, abs=0.03)
    read = []
    real = pack.nodes.video_input.read_video_frames
    monkeypatch.setattr(pack.nodes.video_input, "read_video_frames", lambda *a, **k: (read.append(c.shape[0]) or c for c in real(*a, **k)))
    export(pack, pack.host.VideoFromFile(str(path)), fps=16.0, format="ffv1-mkv")
    assert read == [16, 5]  # chunks, never the whole file


def test_export_video_takes_a_tensor_video_and_streams_the_lazy_one(pack, folders, monkeypatch):
    components = pack.host.VideoComponents(images=torch.rand(6, 32, 48, 3), frame_rate=Fraction(12))
    out = export(pack, pack.host.VideoFromComponents(components), format="ffv1-mkv")
    assert np.array_equal(read_frames(out["result"][0]), (components.images.numpy() * 255 + 0.5).astype(np.uint8))
    assert out["ui"]["wan_video"][0]["fps"] == 12.0
    vae, z = load(pack, device="cpu"), latents("2.1", (1, 2, 6, 10))
    expected = (decode(pack, vae, z).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    no_whole_decode(pack, monkeypatch)
    out = export(pack, as_video(pack, vae, z), format="ffv1-mkv")
    assert np.array_equal(read_frames(out["result"][0]), expected)


def test_wan_encode_of_a_file_video_equals_the_image_path_and_is_streamed(pack, folders, clip, monkeypatch):
    path, frames = clip
    vae = load(pack, device="cpu")
    expected = encode(pack, vae, frames[:21].float() / 255)
    monkeypatch.setattr(pack.lib.WanVAE, "encode", lambda *a, **k: pytest.fail("the whole video was encoded at once"))
    assert torch.equal(encode(pack, vae, pack.host.VideoFromFile(str(path))), expected)
    trimmed = encode(pack, vae, pack.host.VideoFromFile(str(path), start_time=0.0, duration=0.625), trim=True)  # 10 -> 9 frames
    assert trimmed.shape[2] == 3


def test_wan_encode_refuses_a_video_it_cannot_encode_before_reading_a_frame(pack, folders, clip, monkeypatch):
    path, _ = clip
    vae = load(pack, device="cpu")
    monkeypatch.setattr(pack.nodes.video_input, "read_video_frames", lambda *a, **k: pytest.fail("frames were read"))
    with pytest.raises(pack.lib.LatentError, match="10 frames; the Wan VAE encodes 1 \\+ 4k frames .* Turn trim on"):
        encode(pack, vae, pack.host.VideoFromFile(str(path), start_time=0.0, duration=0.625))


def test_bad_videos_are_refused_clearly_and_nothing_is_written(pack, folders):
    (folders["input"] / "notes.mp4").write_text("not a video")

    class Opaque(pack.host.VideoInput):  # a VIDEO of another pack, with neither a file nor frames
        def get_components(self):
            raise NotImplementedError("streams only")

        def save_to(self, path, format="auto", codec="auto", metadata=None):
            raise NotImplementedError

    for video, text in ((pack.host.VideoFromFile(str(folders["input"] / "gone.mp4")), "No video file at .*gone.mp4"),
                        (pack.host.VideoFromFile(str(folders["input"] / "notes.mp4")), "cannot read .*notes.mp4"),
                        (Opaque(), "Opaque\\) gives neither a file nor frames")):  # fmt: skip
        with pytest.raises(pack.lib.VideoReadError, match=text):
            export(pack, video)
    assert list((folders["output"]).rglob("*")) == []


# ----------------------------------------------------------------------------------------- what Video Combine users miss


def test_pingpong_plays_back_without_the_ends_also_from_a_streamed_decode(pack, folders, monkeypatch):
    frames = torch.rand(5, 32, 48, 3)
    out = export(pack, frames, format="ffv1-mkv", pingpong=True)
    as_bytes = (frames.numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(read_frames(out["result"][0]), np.concatenate([as_bytes, as_bytes[3:0:-1]]))
    assert out["ui"]["wan_video"][0]["frames"] == 8
    from test_decode_to_video import to_video

    vae, z = load(pack, device="cpu"), latents("2.1", (1, 3, 6, 10))
    expected = (decode(pack, vae, z).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    no_whole_decode(pack, monkeypatch)
    path = to_video(pack, vae, z, pingpong=True, save_latent=False)["result"][0]
    assert np.array_equal(read_frames(path), np.concatenate([expected, expected[7:0:-1]]))


def test_loop_count_save_output_and_prores_profiles(pack, folders):
    frames = torch.rand(3, 32, 48, 3)
    gif = Path(export(pack, frames, format="gif", loop_count=3)["result"][0])
    data = gif.read_bytes()
    assert data[data.index(b"NETSCAPE2.0") + 11 : data.index(b"NETSCAPE2.0") + 14] == b"\x03\x01\x03"  # repeat 3 times
    preview = export(pack, frames, format="webp", save_output=False)
    assert Path(preview["result"][0]).parent == folders["temp"] / "WanVideo"
    assert preview["ui"]["wan_video"][0]["type"] == "temp" and not list((folders["output"] / "WanVideo").glob("*.webp"))
    for profile, tag in (("proxy", "apco"), ("4444xq", "ap4x")):
        assert probe(export(pack, frames, format="prores-mov", prores_profile=profile)["result"][0])["tag"] == tag
    with pytest.raises(pack.lib.VideoWriteError, match="ProRes lt .* cannot keep; choose prores_profile auto, 4444 or 4444xq"):
        export(pack, torch.rand(3, 32, 48, 4), format="prores-mov", prores_profile="lt")


def test_the_new_inputs_come_after_the_existing_ones(pack):
    export_optional = list(pack.NODE_CLASS_MAPPINGS["ExportVideo"].INPUT_TYPES()["optional"])
    decode_optional = list(pack.NODE_CLASS_MAPPINGS["WanDecodeToVideo"].INPUT_TYPES()["optional"])
    playback = ["pingpong", "loop_count", "save_output", "prores_profile"]
    assert export_optional == ["audio", "bit_depth", *playback]
    assert decode_optional == ["audio", "bit_depth", "save_latent", *playback]
    assert pack.NODE_CLASS_MAPPINGS["WanDecodeToVideo"].RETURN_TYPES == ("STRING", "VIDEO")
