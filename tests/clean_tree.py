"""What a test run changed in the repository tree: new untracked files, and tracked files changed or removed.

conftest.py snapshots the tree when the session starts and fails the run if it differs at the end, so a test
or a benchmark that writes into the checkout (a stray `vae.safetensors` once arrived that way) is caught in CI.
Ignored paths (.venv, __pycache__, .pytest_cache) are not the tree's content and do not count. Edits made
before the run count only if the run changes those files again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def snapshot(root: Path) -> dict[str, str] | None:
    """{path: git's status and the file's hash} for everything untracked or changed under `root`; None outside git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=all"], cwd=root,
                             capture_output=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    status = {item[3:]: item[:2] for item in out.decode("utf-8", "replace").split("\0") if len(item) > 3}
    files = [p for p in status if (root / p).is_file() and not (root / p).is_symlink()]
    hashes = {}
    if files:
        found = subprocess.run(["git", "hash-object", "--stdin-paths"], cwd=root, input="\n".join(files),
                               capture_output=True, text=True).stdout.split()  # fmt: skip
        hashes = dict(zip(files, found))
    return {p: f"{s} {hashes.get(p, '-')}" for p, s in status.items()}


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What the run changed, one line per path ("?? name" for a new untracked file, " M name" for an edit...)."""
    lines = [f"{state[:2]} {path}" for path, state in sorted(after.items()) if before.get(path) != state]
    return lines + [f"back to its committed state: {path}" for path in sorted(set(before) - set(after))]
