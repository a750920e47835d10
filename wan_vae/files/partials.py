"""Partial files: where a video or a latent is written until it is complete, named so that anyone can tell that it
is ours and whether its writer still runs, and removed once stale.

    .{target's name}.{pid}-{start}.wanvae-partial{extension}

pid is the writing process and start its start time (on Linux /proc/PID/stat's field 22, clock ticks since boot;
elsewhere 0, and the pid alone decides). A partial is stale when no process with that pid runs, or the one that
does started at another time (the pid was reused): its writer was killed (SIGKILL, a crash, power loss) before it
could remove it. A live writer's partial is never stale, whichever process looks.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

log = logging.getLogger("wan_vae")

MARK = "wanvae-partial"
PATTERN = re.compile(rf"^\..+\.(\d+)-(\d+)-[0-9a-f]+\.{MARK}")


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), None if it does not exist; 0 where this cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    return int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22; the name in () may hold spaces


def _alive(pid: int, start: int) -> bool:
    if os.path.isdir("/proc/self"):
        now = process_start_time(pid)
        return now is not None and (start == 0 or now == 0 or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists (another user's), or cannot tell: keep it
        return True
    return True


_OWN_TAG = f"{os.getpid()}-{process_start_time(os.getpid()) or 0}"


def partial_path(target: Path, extension: str = "") -> Path:
    """A fresh hidden partial name beside `target`, tagged with this process."""
    return target.with_name(f".{target.name}.{_OWN_TAG}-{uuid.uuid4().hex[:8]}.{MARK}{extension}")


def is_stale(path: Path) -> bool:
    """Whether `path` is one of our partials whose writer no longer runs."""
    m = PATTERN.match(path.name)
    return bool(m) and not _alive(int(m.group(1)), int(m.group(2)))


def remove_stale(folder, recursive: bool = False) -> list[Path]:
    """Remove the stale partials in `folder` (and below, with `recursive`); returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith(".") and MARK in entry.name and is_stale(path):
            try:
                shutil.rmtree(path) if entry.is_dir(follow_symlinks=False) else path.unlink()
                removed.append(path)
                log.info("removed %s, left by a writer that was stopped before it finished", path)
            except OSError as e:
                log.warning("could not remove the stale partial file %s: %s", path, e)
        elif recursive and entry.is_dir(follow_symlinks=False):
            removed += remove_stale(path, recursive=True)
    return removed
