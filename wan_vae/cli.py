"""The command line: `python -m wan_vae decode | info | encode`, without ComfyUI.

Exit codes: 0 success; 2 bad usage or bad input (the library's message on stderr, no traceback unless
--debug); 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch

from .alpha_pair import pair_alpha
from .device.precision import default_dtype
from .errors import CheckpointError, LatentError, WanVAEError
from .files.latents import describe_latent, read_latent_file, write_latent_file
from .run import distributed
from .run.options import DEFAULT_FRAMES_PER_CHUNK, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE, TILING_MODES, Options
from .vae import WanVAE, load_vae
from .video.formats import DEFAULT_QUALITY, FORMATS, PRORES_PROFILES
from .video.reader import probe_video, read_audio_file, read_video_frames
from .video.writer import check_output, write_video

EXTENSION_FORMATS = {".mp4": "h264-mp4", ".webm": "vp9-webm", ".mov": "prores-mov", ".mkv": "ffv1-mkv",
                     ".gif": "gif", ".webp": "webp", "": "png"}  # fmt: skip
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice in ("gpu", "cuda") and not torch.cuda.is_available():
        raise WanVAEError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto.")
    return torch.device("cuda" if choice in ("gpu", "cuda") else choice)


def _dtype(choice: str, device: torch.device) -> torch.dtype:
    return default_dtype(device) if choice == "auto" else DTYPES[choice]


def _precision(choice: str, device: torch.device) -> dict:
    """load_vae's dtype and mixed for --precision (bf16-mixed: half precision in the heavy convs only, on a GPU too)."""
    mixed = choice.endswith("-mixed")
    return {"dtype": _dtype(choice.removesuffix("-mixed"), device), "mixed": True if mixed else None}


def _options(args) -> Options:
    """The decode/encode settings from the flags of the same names."""
    return Options.from_widgets(args.latent_space, args.tiling, args.tile_size, getattr(args, "tile_overlap", DEFAULT_TILE_OVERLAP),
                                args.frames_per_chunk, args.devices.split(",") if args.devices else None)  # fmt: skip


class _Progress:
    """A tqdm bar on a terminal; plain lines (every ~10 %) when stderr is a file or pipe."""

    def __init__(self, what: str) -> None:
        self.what, self.bar, self.last = what, None, -1
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=self.what, unit="step", file=sys.stderr)
            self.bar.update(done - self.bar.n)
        elif done * 10 // total > self.last or done == total:
            self.last = done * 10 // total
            print(f"{self.what}: {done}/{total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------- commands


def _output_format(args) -> str:
    out = Path(args.output)
    fmt = args.format or EXTENSION_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise WanVAEError(f"Cannot tell the format from '{out.name}'; pass --format ({', '.join(FORMATS)}).")
    return fmt


def cmd_decode(args) -> int:
    if distributed.launched():
        return _decode_distributed(args)
    out, fmt = Path(args.output), _output_format(args)
    latents = read_latent_file(args.latent, args.key)
    device = _device(args.device)
    vae = load_vae(args.vae, device=device, **_precision(args.precision, device))
    if args.alpha_vae:  # Wan-Alpha: the colour VAE with its alpha decoder, one RGBA decode
        vae = pair_alpha(vae, load_vae(args.alpha_vae, device=device, **_precision(args.precision, device)))
    check_output(out, args.fps, fmt, args.quality, args.overwrite, args.bit_depth, alpha=vae.out_channels == 4, **_playback(args))
    audio = read_audio_file(args.audio) if args.audio else None
    progress = _Progress("decoding")
    start = time.perf_counter()
    frames = vae.decode_frames(latents, options=_options(args), dtype=torch.uint8 if args.bit_depth == 8 else torch.float32,
                               progress=progress)  # fmt: skip
    try:
        path = write_video(frames, out, args.fps, format=fmt, quality=args.quality, audio=audio,
                           overwrite=args.overwrite, bit_depth=args.bit_depth, pingpong=args.pingpong, **_playback(args))  # fmt: skip
    finally:
        progress.close()
    print(f"wrote {path} ({fmt}) in {time.perf_counter() - start:.1f} s")
    return 0


def _playback(args) -> dict:
    return {"loop_count": args.loop_count, "prores_profile": args.prores_profile}


def _decode_distributed(args) -> int:
    """`decode` under torch.distributed.run: every rank decodes its tiles, rank 0 writes (distributed.py)."""
    group = distributed.setup(args.device, args.backend, args.timeout)
    try:
        error = ""
        try:  # every rank reads its own files; rank 0 also checks the output before anything is decoded
            out, fmt = Path(args.output), _output_format(args)
            latents = read_latent_file(args.latent, args.key)
            vae = load_vae(args.vae, device=group.device, **_precision(args.precision, group.device))
            if not isinstance(vae, WanVAE):
                raise WanVAEError(f"{vae.title} decodes in one process (it needs no tiles); run it without torch.distributed.run.")
            if group.rank == 0:
                check_output(out, args.fps, fmt, args.quality, args.overwrite, args.bit_depth, alpha=vae.out_channels == 4, **_playback(args))
            audio = read_audio_file(args.audio) if args.audio and group.rank == 0 else None
        except WanVAEError as e:
            error = str(e)
        group.agree(not error, error)
        progress = _Progress("decoding") if group.rank == 0 else None
        start = time.perf_counter()
        frames = distributed.decode_frames(vae, latents, group, options=_options(args), progress=progress)
        if group.rank != 0:
            for _ in frames:
                pass
            return 0
        try:
            path = write_video(distributed.ahead(frames), out, args.fps, format=fmt, quality=args.quality, audio=audio,
                               overwrite=args.overwrite, bit_depth=args.bit_depth, pingpong=args.pingpong, **_playback(args))  # fmt: skip
        finally:
            progress.close()
        print(f"wrote {path} ({fmt}) in {time.perf_counter() - start:.1f} s on {group.world} processes")
        return 0
    finally:
        group.close()


def cmd_info(args) -> int:
    path = Path(args.file)
    if not path.exists():
        raise WanVAEError(f"No file at '{path}'.")
    if path.suffix.lower() != ".latent":
        from .files.checkpoint import prepare_state_dict, read_state_dict, strip_prefix
        from .flash_vae import load_flash_vae
        from .network.flash_vaed import is_flash_vaed
        from .network.taehv import is_tiny, load_tiny

        try:
            raw, name = read_state_dict(path)
            stripped = strip_prefix(raw)[0]
            if is_tiny(stripped):
                print(f"{path.name}: {load_tiny(stripped, name)[1].describe()}")
                return 0
            if is_flash_vaed(stripped):
                print(f"{path.name}: {load_flash_vae(stripped, name).title.split(' (', 1)[1].rstrip(')')}, Wan 2.1 latents (16 channels)")
                return 0
            _, info = prepare_state_dict(raw, name)
            print(f"{path.name}: {info.describe()}")
            return 0
        except CheckpointError as not_a_vae:
            if "not a Wan VAE" not in str(not_a_vae):
                raise
    try:
        latent = read_latent_file(path, args.key)
    except LatentError as e:
        raise WanVAEError(f"'{path.name}' is neither a Wan VAE nor a latent file: {e}") from None
    print(f"{path.name}: {describe_latent(latent)}")
    return 0


def cmd_encode(args) -> int:
    if distributed.launched():
        return _encode_distributed(args)
    out, total, vae = _encode_inputs(args, _device(args.device))
    progress = _Progress("encoding")
    try:
        latents = vae.encode_frames(read_video_frames(args.video, vae.in_channels), options=_options(args), trim=args.trim, total_frames=total,
                                    progress=progress).float().cpu()  # fmt: skip
    finally:
        progress.close()
    _write_encoded(args, out, vae, latents)
    return 0


def _encode_inputs(args, device) -> tuple[Path, int, WanVAE]:
    """The output path (not taken), the video's frame count and the full VAE, or what is wrong with them."""
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise WanVAEError(f"{out} already exists; choose another name or pass --overwrite.")
    total = probe_video(args.video).frames
    if total == 0:
        raise WanVAEError(f"'{args.video}' has no video frames.")
    vae = load_vae(args.vae, device=device, dtype=_dtype(args.precision, device) if args.precision != "auto" else torch.float32)
    if not isinstance(vae, WanVAE):
        raise WanVAEError(f"{vae.title} has no encoder; encode with the full Wan {vae.version} VAE.")
    vae.check_encoder()
    if not args.trim and (total - 1) % 4:
        keep = 1 + 4 * ((total - 1) // 4)
        raise WanVAEError(f"The Wan VAE encodes 1 + 4k frames; '{args.video}' has {total}, which would lose {total - keep}. "
                          f"Pass --trim to drop them, or extend the video to {keep + 4} frames.")  # fmt: skip
    return out, total, vae


def _write_encoded(args, out: Path, vae: WanVAE, latents: torch.Tensor) -> None:
    write_latent_file(out, latents.float().cpu(), metadata={"source": os.path.basename(args.video), "wan_vae": vae.config.name()})
    print(f"wrote {out}: {describe_latent(latents)}")


def _encode_distributed(args) -> int:
    """`encode` under torch.distributed.run: every rank reads the video and encodes its tiles' down path, rank 0
    runs the rest and writes the latent (distributed.encode_frames)."""
    group = distributed.setup(args.device, args.backend, args.timeout)
    try:
        error = ""
        try:
            out, total, vae = _encode_inputs(args, group.device)
        except WanVAEError as e:
            error = str(e)
        group.agree(not error, error)
        progress = _Progress("encoding") if group.rank == 0 else None
        try:
            latents = distributed.encode_frames(vae, read_video_frames(args.video, vae.in_channels), group, options=_options(args), trim=args.trim,
                                                total_frames=total, progress=progress)  # fmt: skip
        finally:
            if progress:
                progress.close()
        if group.rank == 0:
            _write_encoded(args, out, vae, latents)
        return 0
    finally:
        group.close()


# ----------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wan_vae", description="Wan 2.1 / 2.2 VAE: latents to video, without ComfyUI.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    # --debug also after the command; SUPPRESS keeps the value given before it when absent here.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    dec = commands.add_parser("decode", parents=[common], help="decode a latent file straight into a video (streamed: memory stays flat)")
    dec.add_argument("latent", help="ComfyUI .latent, .safetensors (one tensor, or --key), or a torch.save .pt tensor")
    dec.add_argument("--vae", required=True, help="Wan VAE file or diffusers vae folder")
    dec.add_argument("-o", "--output", required=True, help="video file; the extension picks the format unless --format")
    dec.add_argument("--key", help="name of the latent tensor in a file holding several")
    dec.add_argument("--latent-space", choices=["raw", "normalized"], default="raw",
                     help="raw: ComfyUI samplers (default); normalized: diffusers pipelines, kijai's wrapper")
    dec.add_argument("--tiling", choices=TILING_MODES, default="auto", help="spatial tiles: auto (if needed), on, off")
    dec.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, help="largest tile edge in pixels (default %(default)s)")
    dec.add_argument("--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP, help="pixels shared by neighbouring tiles (default %(default)s)")
    dec.add_argument("--frames-per-chunk", type=int, default=DEFAULT_FRAMES_PER_CHUNK, help="latent frames per decoder pass (default %(default)s)")
    dec.add_argument("--precision", choices=["auto", *DTYPES, "bf16-mixed", "fp16-mixed"], default="auto",
                     help="auto: bf16 on a GPU (every conv; -mixed: the heavy ones only, within 1%% of fp32), fp32 on the CPU")
    dec.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    dec.add_argument("--fps", type=float, default=16.0, help="frames per second (default 16; Wan 2.2 TI2V-5B: 24)")
    dec.add_argument("--format", choices=list(FORMATS), help="video format (default: from the output's extension)")
    dec.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="0-100, higher is better (default %(default)s)")
    dec.add_argument("--bit-depth", type=int, choices=[8, 10], default=8, help="10 for 10-bit H.264/H.265/VP9/FFV1, 16-bit PNG")
    dec.add_argument("--audio", help="audio (or video) file to mux in, cut or padded to the video's length")
    dec.add_argument("--alpha-vae", help="Wan-Alpha: the alpha decoder (wan_alpha_..._alpha_channel) of --vae's colour one: RGBA out")
    dec.add_argument("--pingpong", action="store_true", help="forward, then backward without the two ends (2N - 2 frames)")
    dec.add_argument("--loop-count", type=int, default=0, help="GIF and WebP: times players repeat it, 0 forever (default)")
    dec.add_argument("--prores-profile", choices=list(PRORES_PROFILES), default="auto", help="prores-mov's profile")
    dec.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    dec.add_argument("--devices", help="several devices in this process, comma-separated (cuda:0,cuda:1): tiles spread over them")
    dec.add_argument("--backend", choices=["nccl", "gloo"], help="under torch.distributed.run: default nccl on GPUs, gloo on CPUs")
    dec.add_argument("--timeout", type=float, default=distributed.DEFAULT_TIMEOUT_S,
                     help="under torch.distributed.run: seconds a rank waits for the others before giving up (default %(default)s)")
    dec.set_defaults(run=cmd_decode)

    info = commands.add_parser("info", parents=[common], help="what a file is: a Wan VAE (version, naming, dtype, size) or a latent")
    info.add_argument("file")
    info.add_argument("--key", help="name of the latent tensor in a file holding several")
    info.set_defaults(run=cmd_info)

    enc = commands.add_parser("encode", parents=[common], help="encode a video file into a ComfyUI .latent")
    enc.add_argument("video")
    enc.add_argument("--vae", required=True)
    enc.add_argument("-o", "--output", required=True, help="the .latent file to write")
    enc.add_argument("--trim", action="store_true", help="drop trailing frames to 1 + 4k and crop to the VAE's size multiple")
    enc.add_argument("--latent-space", choices=["raw", "normalized"], default="raw",
                     help="raw: for ComfyUI samplers (default); normalized: for diffusers pipelines, kijai's wrapper")
    enc.add_argument("--tiling", choices=TILING_MODES, default="auto", help="exact spatial tiles: auto (if needed), on, off")
    enc.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, help="largest tile edge in pixels (default %(default)s)")
    enc.add_argument("--frames-per-chunk", type=int, default=DEFAULT_FRAMES_PER_CHUNK, help="latent frames per encoder pass")
    enc.add_argument("--devices", help="several devices in this process, comma-separated (cuda:0,cuda:1): tiles spread over them")
    enc.add_argument("--precision", choices=["auto", *DTYPES], default="auto", help="auto: fp32 (bf16 shifts encoder outputs)")
    enc.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    enc.add_argument("--overwrite", action="store_true")
    enc.add_argument("--backend", choices=["nccl", "gloo"], help="under torch.distributed.run: default nccl on GPUs, gloo on CPUs")
    enc.add_argument("--timeout", type=float, default=distributed.DEFAULT_TIMEOUT_S,
                     help="under torch.distributed.run: seconds a rank waits for the others before giving up (default %(default)s)")
    enc.set_defaults(run=cmd_encode)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except WanVAEError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output was left behind", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the last resort: a plain line, the traceback with --debug
        if args.debug:
            raise
        print(f"unexpected error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1
