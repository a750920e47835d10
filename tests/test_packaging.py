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


def test_the_readme_documents_every_node_input_and_format():
    import importlib.util

    readme = (ROOT / "README.md").read_text()
    spec = importlib.util.spec_from_file_location("pack_for_docs", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["pack_for_docs"] = pack
    spec.loader.exec_module(pack)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[name].split(" (")[0] in readme
        types = cls.INPUT_TYPES()
        for input_name in {**types.get("required", {}), **types.get("optional", {})}:
            assert f"`{input_name}`" in readme, f"README does not document {name}.{input_name}"
    from wan_vae.writer import FORMATS

    for fmt in FORMATS:
        assert f"`{fmt}`" in readme
