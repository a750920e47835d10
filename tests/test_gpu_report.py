"""benchmarks/gpu_report.py, the one-command device check, runs (CPU quick mode here) and says what it could not run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def report(tmp_path, *args):
    res = subprocess.run([sys.executable, "benchmarks/gpu_report.py", "--out", str(tmp_path), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text()), res.stdout


def test_the_cpu_quick_report_measures_every_section_and_prints_tables(tmp_path):
    data, printed = report(tmp_path, "--device", "cpu", "--quick")
    sections = data["sections"]
    assert list(sections) == ["parity", "decode", "encode", "knobs", "devices"]
    parity = {row["case"]: row for row in sections["parity"]}
    for case, row in parity.items():
        assert row["rel_l2"] < (1e-5 if "fp32 vs" in case else 3e-2), row
    for name in ("decode", "encode", "knobs"):
        assert all(row.get("seconds", 0) > 0 and "note" not in row for row in sections[name]), sections[name]
    assert {row["case"].split(" 96x64")[0] for row in sections["decode"]} >= {"ours Wan 2.1 fp32", "diffusers Wan 2.1 fp32"}
    assert all(row["note"].startswith("skipped: 0 GPU(s)") for row in sections["devices"])
    assert "### decode" in printed and "| case | seconds |" in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the rows when there is no GPU")
def test_without_a_gpu_every_cuda_row_says_so_and_the_report_still_ends(tmp_path):
    data, _ = report(tmp_path, "--device", "cuda", "--quick", "--only", "parity", "encode")
    rows = [row for rows in data["sections"].values() for row in rows]
    assert rows and all(row["note"] == "skipped: no CUDA GPU here (torch.cuda.is_available() is False)" for row in rows)
