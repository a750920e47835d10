"""Decoding (and encoding) over several processes, on one machine or many, with torch.distributed: rank 0 writes the video.

    python -m torch.distributed.run --nproc-per-node 2 -m wan_vae decode clip.latent --vae wan_2.1_vae.safetensors -o clip.mp4

Exact tiles are independent after the middle block (plan/tiling.py), so no activations are exchanged:
every rank runs the whole-frame entry and middle block itself (latent resolution: a few % of the
work) and the upsampling path of its own tiles, tile k on rank k % world_size, time outermost. After
each chunk the ranks tell each other whether it went well (one small all-gather, so that a failure on
any rank stops every rank at once, with its message), then send their tiles' frames to rank 0 with
point-to-point sends whose shapes every rank knows from the plan: no pickling. Rank 0 assembles the
chunk and hands it to the writer, which writes chunk k while the ranks decode chunk k+1; its memory
holds a chunk or two, whatever the video's length.

Rank 0 decides (the VAE version, the latent's shape, the options, the tile grid: `tiling="auto"` makes
at least one tile per rank) and every rank checks that its own files and options agree. A rank that
fails, or a mismatch, ends every rank with a `DistributedError` naming the rank and what it said; a
rank that dies is noticed by the launcher (torchrun stops the others) or, at the latest, when the
process group's timeout runs out. The backend is NCCL for CUDA devices and gloo for CPUs.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import queue
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from . import decode, encode
from ..errors import WanVAEError
from ..network.stream import Workspace
from .options import Options

log = logging.getLogger("wan_vae")

MESSAGE_BYTES = 2048  # a rank's status message, utf-8, as a fixed-size tensor
DEFAULT_TIMEOUT_S = 600


class DistributedError(WanVAEError):
    """Another rank failed, or the ranks disagree; every rank raises it with the same message."""


def launched() -> bool:
    """True when started by torch.distributed.run (or another launcher) with more than one process."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Group:
    """This process's place in the group, and where it decodes and communicates."""

    rank: int
    world: int
    device: torch.device  # where this rank decodes
    comm: torch.device  # where tensors must be for the backend (the GPU for NCCL, else the CPU)

    def agree(self, ok: bool, message: str = "") -> None:
        """Every rank says whether its last step went well; if any did not, every rank raises with all messages."""
        import torch.distributed as dist

        mine = torch.zeros(MESSAGE_BYTES + 1, dtype=torch.uint8)
        data = message.encode("utf-8")[:MESSAGE_BYTES]
        mine[0] = 0 if ok else 1
        mine[1 : 1 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else mine[1:1]
        everyone = [torch.empty_like(mine, device=self.comm) for _ in range(self.world)]
        dist.all_gather(everyone, mine.to(self.comm))
        failed = [(r, bytes(t[1:].cpu().tolist()).rstrip(b"\0").decode("utf-8", "replace")) for r, t in enumerate(everyone) if t[0]]
        if failed:
            raise DistributedError("; ".join(f"rank {r}: {m}" for r, m in failed))

    def same_as_rank0(self, what: str, values: list[int]) -> None:
        """Check that every rank has the same `values` (shapes, options) as rank 0."""
        import torch.distributed as dist

        mine = torch.tensor(values, dtype=torch.int64)
        everyone = [torch.empty_like(mine, device=self.comm) for _ in range(self.world)]
        dist.all_gather(everyone, mine.to(self.comm))
        differ = [r for r, t in enumerate(everyone) if not torch.equal(t.cpu(), everyone[0].cpu())]
        if differ:
            raise DistributedError(
                f"{what} differ between ranks: rank 0 has {everyone[0].tolist()}, "
                + ", ".join(f"rank {r} has {everyone[r].tolist()}" for r in differ)
                + ". Give every rank the same files and options."
            )

    def broadcast(self, values: list[int]) -> list[int]:
        """Rank 0's `values` (same length everywhere), on every rank."""
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.int64, device=self.comm)
        dist.broadcast(t, src=0)
        return t.cpu().tolist()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto", backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Group:
    """Join the process group the launcher describes (RANK, WORLD_SIZE, MASTER_ADDR, ... in the environment).

    device: "auto" (this rank's GPU, LOCAL_RANK, if there are GPUs; else the CPU), "cpu" or "cuda".
    backend: "nccl" or "gloo"; by default NCCL for GPUs, gloo for CPUs.
    """
    import torch.distributed as dist

    if not dist.is_available():
        raise WanVAEError("This PyTorch build has no torch.distributed; run without a launcher (one process).")
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise WanVAEError(f"Not started by a torch.distributed launcher ({', '.join(missing)} not set): use "
                          "python -m torch.distributed.run --nproc-per-node N -m wan_vae decode ...")  # fmt: skip
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    use_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_gpu:
        if not torch.cuda.is_available():
            raise WanVAEError("--device cuda was asked for, but torch sees no CUDA GPU on this machine.")
        where = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(where)
    else:
        where = torch.device("cpu")
    backend = backend or ("nccl" if use_gpu else "gloo")
    if backend not in ("nccl", "gloo"):
        raise WanVAEError(f"backend must be nccl or gloo, got {backend!r}.")
    if backend == "nccl" and not use_gpu:
        raise WanVAEError("The NCCL backend needs GPUs; use gloo on CPUs.")
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=where if backend == "nccl" else None)  # fmt: skip
    # torchrun stops the other ranks with SIGTERM when one fails: leave through Python's cleanup
    # (the writer then removes its partial file) rather than die where we stand.
    signal.signal(signal.SIGTERM, _terminated)
    group = Group(rank, world, where, where if backend == "nccl" else torch.device("cpu"))
    log.info("rank %d of %d (pid %d) decodes on %s, %s backend", rank, world, os.getpid(), where, backend)
    return group


def _terminated(signum, frame):
    raise SystemExit(f"stopped by {signal.Signals(signum).name} (another rank failed?)")


def decode_frames(vae, latents: torch.Tensor, group: Group, normalized: bool | None = None, *, options: Options | None = None,
                  progress=None, **settings) -> Iterator[torch.Tensor]:  # fmt: skip
    """`WanVAE.decode_frames` over the group: yields [N, H, W, C] float32 chunks on rank 0, nothing elsewhere.

    Every rank must iterate it to the end. Settings as in `decode_frames` (tiling "auto" unless given);
    rank 0's plan is everyone's.
    """
    options = (options or Options(tiling="auto")).merged(normalized, settings)
    plan, error = None, ""
    try:
        plan = decode.make_plan(vae, latents, options, streaming=True, output_device="cpu", min_tiles=group.world)
    except WanVAEError as e:
        error = str(e)
    group.agree(not error, error)
    b, _, t, h, w = plan.latents.shape
    version = [int(x) for x in vae.version.split(".")]
    group.same_as_rank0("The VAE, latent shape and options ([version, channels out, upscale, batch, frames, h, w, normalized, "
                        "tile_size])", [*version, vae.out_channels, vae.output_scale // vae.spatial_scale, b, t, h, w,
                                        int(options.normalized), options.tile_size])  # fmt: skip
    rows, cols = len({tl.y0 for tl in plan.tiles}), len({tl.x0 for tl in plan.tiles})
    rows, cols, fpc = group.broadcast([rows, cols, plan.frames_per_chunk])  # auto may differ by free memory
    options = dataclasses.replace(options, frames_per_chunk=fpc)
    plan = decode.make_plan(vae, latents, options, streaming=True, output_device="cpu", grid=(rows, cols))
    log.info("rank %d: %d latent frames, %dx%d px in %dx%d tiles, frames_per_chunk %d", group.rank, t, plan.width,
             plan.height, rows, cols, fpc)  # fmt: skip
    mine = [k for k in range(len(plan.tiles)) if k % group.world == group.rank]
    if not mine:
        log.info("rank %d has no tile to decode (%d tiles for %d ranks): it waits for the others",
                 group.rank, len(plan.tiles), group.world)  # fmt: skip
    tracker = decode.Tracker(b * t * len(mine), progress, None)
    scale, channels = vae.output_scale, vae.out_channels
    workspace = Workspace()
    for i in range(b):
        middle_state = vae.new_state(workspace)
        states = {k: vae.new_state(workspace) for k in mine}
        for t0, t1, mid in decode.middles(vae, plan, i, middle_state, tracker):
            f0, f1 = decode.frame_range(t0, t1)
            pieces, error = {}, ""
            try:
                for k in mine:
                    tile = plan.tiles[k]
                    pieces[k] = torch.empty(f1 - f0, (tile.y1 - tile.y0) * scale, (tile.x1 - tile.x0) * scale, channels)
                    canvas = decode.Canvas(pieces[k], "images", scale, first_frame=f0, origin=(tile.y0, tile.x0))
                    decode.land(vae, plan, k, mid, t0, t1, states[k], canvas, tracker)
            except Exception as e:  # noqa: BLE001 - told to every rank, then raised everywhere
                error = f"{type(e).__name__}: {e}"
            group.agree(not error, error)
            yield from _gather(group, plan, pieces, f1 - f0, scale, channels)


def encode_frames(vae, frames, group: Group, normalized: bool | None = None, *, options: Options | None = None, trim: bool = False,
                  total_frames: int | None = None, progress=None, **settings) -> torch.Tensor | None:  # fmt: skip
    """`WanVAE.encode_frames` over the group: latents [1, C, T, h, w] on rank 0, None elsewhere.

    Every rank reads the same frames (its own copy of the file) and runs the encoder's down path on its own
    tiles (tile k on rank k % world_size); each chunk's tile cells go to rank 0 with point-to-point sends
    whose shapes every rank knows, and rank 0 runs the middle block (attention over the whole frame) and
    the head. The latents are those of one process. Settings as in `encode_frames` (tiling "auto" unless given).
    """
    options = (options or Options(tiling="auto")).merged(normalized, settings)
    version = [int(x) for x in vae.version.split(".")]
    group.same_as_rank0("The VAE and options ([version, normalized, frames_per_chunk, tile_size])",
                        [*version, int(options.normalized), options.frames_per_chunk, options.tile_size])  # fmt: skip
    tracker = decode.Tracker(0, progress if group.rank == 0 else None, None)
    return encode.encode_stream(vae, frames, options, tracker, trim=trim, total_frames=total_frames, share=_TileShare(group, vae))


class _TileShare:
    """encode.Share over the group: tiles k % world on each rank, rank 0 gathers and runs the head."""

    def __init__(self, group: Group, vae) -> None:
        self.group, self.vae, self.world = group, vae, group.world

    def together(self, step):
        result, error = None, ""
        try:
            result = step()
        except Exception as e:  # noqa: BLE001 - told to every rank, then raised everywhere
            error = f"{type(e).__name__}: {e}" if not isinstance(e, WanVAEError) else str(e)
        self.group.agree(not error, error)
        return result

    def settle(self, plan, remake):
        rows, cols = len({tl.y0 for tl in plan.tiles}), len({tl.x0 for tl in plan.tiles})
        self.group.same_as_rank0("The video's size ([latent rows, latent columns])", list(plan.cells))
        rows, cols = self.group.broadcast([rows, cols])  # auto may differ by free memory: rank 0's grid
        log.info("rank %d: encoding %dx%d cells in %dx%d tiles", self.group.rank, *plan.cells, rows, cols)
        return remake((rows, cols))

    def tiles(self, count: int) -> list[int]:
        mine = [k for k in range(count) if k % self.world == self.group.rank]
        if not mine:
            log.info("rank %d has no tile to encode (%d tiles for %d ranks): it waits for the others", self.group.rank, count, self.world)
        return mine

    def gather(self, plan, cells: dict) -> dict | None:
        import torch.distributed as dist

        if self.group.rank != 0:
            for k in sorted(cells):
                dist.send(cells[k].contiguous().to(self.group.comm), dst=0)
            return None
        frames, dtype = cells[0].shape[2], cells[0].dtype
        for k, tile in enumerate(plan.tiles):
            if k not in cells:
                buffer = torch.empty(1, cells[0].shape[1], frames, tile.y1 - tile.y0, tile.x1 - tile.x0, dtype=dtype, device=self.group.comm)
                dist.recv(buffer, src=k % self.world)
                cells[k] = buffer.to(self.vae.device)
        return cells


def _gather(group: Group, plan, pieces: dict, frames: int, scale: int, channels: int) -> Iterator[torch.Tensor]:
    import torch.distributed as dist

    if group.rank != 0:
        for k in sorted(pieces):
            dist.send(pieces[k].to(group.comm), dst=0)
        return
    out = torch.empty(frames, plan.height, plan.width, channels)
    for k, tile in enumerate(plan.tiles):
        region = out[:, tile.y0 * scale : tile.y1 * scale, tile.x0 * scale : tile.x1 * scale]
        if k in pieces:
            region.copy_(pieces[k])
        else:
            buffer = torch.empty(region.shape, device=group.comm)
            dist.recv(buffer, src=k % group.world)
            region.copy_(buffer)
    yield out


def ahead(chunks: Iterator[torch.Tensor], depth: int = 1) -> Iterator[torch.Tensor]:
    """Run `chunks` in a thread, at most `depth` chunks ahead of the consumer (rank 0's writer).

    The decode (and the ranks' communication) goes on while the consumer writes; an error in the
    decode is raised in the consumer's thread.
    """
    done = object()
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            with torch.inference_mode():
                for chunk in chunks:
                    if stop.is_set():
                        return
                    box.put(chunk)
            box.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            box.put(e)

    threading.Thread(target=produce, name="wan_vae decode", daemon=True).start()
    try:
        while True:
            item = box.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
