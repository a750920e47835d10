"""Decoding on several devices of one process: tiles (and the videos of a batch) spread over them.

Exact tiles are independent once the middle block has run (plan/tiling.py), so each device takes whole
tiles: one copy of the weights per device (`WanVAE.replica`), one worker thread per device, work
handed to whichever device is free, pieces copied into the one output. Every device runs the same
operations on the same tiles as a single device would, so the frames are the same.

Several workers may share one device ("cpu" twice, for tests): they share its weights, not its
buffers. A GPU named twice is refused, as is one that does not exist.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import torch

from ..errors import SettingsError
from ..network.stream import Workspace

log = logging.getLogger("wan_vae")

Job = Callable[[object, Workspace], None]  # job(vae replica, its workspace)


def check_devices(devices: Sequence) -> list[torch.device]:
    """`devices` as torch devices; a GPU that does not exist or is named twice is a SettingsError."""
    if isinstance(devices, (str, torch.device)) or not devices:
        raise SettingsError(f"devices must be a non-empty list such as ['cuda:0', 'cuda:1'], got {devices!r}.")
    out, seen = [], set()
    for d in devices:
        try:
            device = torch.device(d)
        except (RuntimeError, TypeError):
            raise SettingsError(f"devices: {d!r} is not a device name (use 'cpu', 'cuda', 'cuda:1', ...).") from None
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            device = torch.device("cuda", torch.cuda.current_device() if device.index is None and count else device.index or 0)
            if device.index >= count:
                raise SettingsError(f"devices: {d!r} does not exist: torch sees {count} CUDA GPU(s).")
            if device in seen:
                raise SettingsError(f"devices: {device} is named twice; list each GPU once.")
            seen.add(device)
        elif device.type != "cpu":
            raise SettingsError(f"devices: {d!r}: only 'cpu' and CUDA GPUs are supported.")
        out.append(device)
    return out


def run_jobs(vae, devices: list[torch.device], jobs: list[Job]) -> None:
    """Run every job on whichever device is free; the first error (or cancellation) stops the rest and is raised."""
    free: queue.Queue = queue.Queue()
    for device in devices:
        free.put((vae.replica(device), Workspace()))
    stop = threading.Event()

    def run(job: Job) -> None:
        if stop.is_set():
            return
        replica, workspace = free.get()
        try:
            with torch.inference_mode():
                job(replica, workspace)
        except BaseException:
            stop.set()
            raise
        finally:
            workspace.clear()
            free.put((replica, workspace))

    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="wan_vae") as pool:
        futures = [pool.submit(run, job) for job in jobs]
        wait(futures, return_when=FIRST_EXCEPTION)
        stop.set()  # jobs not yet started return at once; the pool's exit waits for the running ones
        for future in futures:  # in submission order: the error of the earliest failed job
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()


def run_per_device(vae, devices: list[torch.device], work: list[list[Callable]]) -> None:
    """work[j]: callables fn(replica) to run one after the other on devices[j], all devices at once.

    For streaming, where a tile's causal history stays on the device that decodes it.
    """

    def run(device: torch.device, fns: list[Callable]) -> None:
        replica = vae.replica(device)
        with torch.inference_mode():  # thread-local: each worker enters it
            for fn in fns:
                fn(replica)

    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="wan_vae") as pool:
        futures = [pool.submit(run, d, fns) for d, fns in zip(devices, work) if fns]
        for future in futures:
            future.result()
