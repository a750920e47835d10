"""The project's own files agree with each other: README commands and .ci/run, pyproject and requirements, docs and nodes."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def readme_block_after(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_setup_and_test_commands():
    commands = readme_block_after("## Development")
    assert commands == ["python -m pip install torch==2.13.0 && python -m pip install -r requirements-dev.txt", "python -m pytest"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci, f".ci/run does not run the README's `{command}`"


def test_pyproject_dependencies_are_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(project["dependencies"]) == sorted(r for r in requirements if r)
    assert not any(r.startswith("torch==") for r in project["dependencies"])  # never replace a user's CUDA torch


def test_registry_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["name"] and "comfyui" not in project["name"].lower() and re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["description"] and project["license"] == {"file": "LICENSE"} and project["urls"]["Repository"].startswith("https://")
    assert {"PublisherId", "DisplayName", "Icon", "requires-comfyui"} <= set(comfy) and "web" not in comfy
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200] and "Version 2.0" in (ROOT / "LICENSE").read_text()[:300]


def test_the_docs_document_every_node_input_and_format():
    import importlib.util

    readme = (ROOT / "README.md").read_text()
    nodes = (ROOT / "docs" / "nodes.md").read_text()
    spec = importlib.util.spec_from_file_location("pack_for_docs", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["pack_for_docs"] = pack
    spec.loader.exec_module(pack)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        display = pack.NODE_DISPLAY_NAME_MAPPINGS[name].split(" (")[0]
        assert display in readme and f"## {display}" in nodes, f"{display}: not in the README's list or without a section in docs/nodes.md"
        types = cls.INPUT_TYPES()
        for input_name in {**types.get("required", {}), **types.get("optional", {})}:
            assert f"`{input_name}`" in nodes, f"docs/nodes.md does not document {name}.{input_name}"
    from wan_vae.video.formats import FORMATS

    for fmt in FORMATS:
        assert f"`{fmt}`" in nodes


def run_script(*args, timeout=300):
    import subprocess

    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_the_tiling_page_s_estimate_table_is_what_memory_table_prints():
    printed = run_script("benchmarks/memory_table.py").stdout.strip().splitlines()
    readme = (ROOT / "docs" / "tiling.md").read_text().splitlines()
    start = readme.index(printed[0])
    assert readme[start : start + len(printed)] == printed


@pytest.mark.parametrize("script", ["benchmarks/decode_benchmark.py", "benchmarks/parity_report.py"])
def test_benchmark_scripts_start(script):
    res = run_script(script, "--help")
    assert res.returncode == 0 and "usage" in res.stdout


def test_the_library_example_runs(tmp_path, monkeypatch):
    """The Python snippet of docs/command-line.md, as written (on the CPU when there is no GPU)."""
    import torch

    from reference import latents, write_vae_file

    write_vae_file(tmp_path / "wan_2.1_vae.safetensors", "2.1", dtype=torch.float32)
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "command-line.md").read_text(), re.S).group(1)
    if not torch.cuda.is_available():
        code = code.replace('device="cuda"', 'device="cpu"')
    monkeypatch.chdir(tmp_path)
    scope = {"latents": latents("2.1", (1, 2, 6, 10))}
    exec(code, scope)
    assert scope["video"].shape == (1, 3, 5, 48, 80)
    assert (tmp_path / "out.mp4").stat().st_size > 0
