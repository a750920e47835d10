"""Opt-in soak: 40 runs back to back in a real ComfyUI (benchmarks/soak.py), every fifth stopped midway.

    COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=...] COMFYUI_SOAK=1 python -m pytest -s tests/test_soak.py
"""

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not (os.environ.get("COMFYUI_PATH") and os.environ.get("COMFYUI_SOAK")),
                                reason="set COMFYUI_PATH and COMFYUI_SOAK=1 (about 5 minutes)")  # fmt: skip
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's memory and children from /proc")
def test_forty_runs_leave_nothing_behind_and_memory_flat(tmp_path):
    from soak import soak

    rows = soak(tmp_path, runs=40)
    stopped = [r for r in rows if r["kind"] == "stopped"]
    finished = [r for r in rows if r["kind"] != "stopped"]
    assert len(stopped) == 8 and all(r["interrupted"] and r["videos"] == 0 for r in stopped), stopped
    assert all(r["ended"] == "success" and r["videos"] == 1 and r["complete"] for r in finished), finished
    assert all(r["ffmpeg"] == 0 and r["partials"] == 0 for r in rows)
    assert max(r["threads"] for r in rows[10:]) <= max(r["threads"] for r in rows[:10])  # no thread piles up
    settled, last = rows[9]["rss_mb"], rows[-1]["rss_mb"]  # every kind has run once by run 10
    assert last <= settled * 1.05, f"server RSS grew from {settled} MB (run 10) to {last} MB (run 40)"
