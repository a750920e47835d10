"""The project's own files agree with each other: README commands and .ci/run, pyproject and requirements, docs and nodes."""

import re
import subprocess
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
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,98}", project["name"])  # the Registry's node id
    assert project["description"] and project["license"] == {"file": "LICENSE"} and project["urls"]["Repository"].startswith("https://")
    assert {"PublisherId", "DisplayName", "Icon", "includes", "requires-comfyui"} <= set(comfy) and "web" not in comfy
    assert comfy["PublisherId"] and comfy["DisplayName"] and re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    assert all((ROOT / path).exists() for path in comfy["includes"])
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200] and "Version 2.0" in (ROOT / "LICENSE").read_text()[:300]


def test_the_registry_s_security_check_passes():
    """What `comfy node validate` runs before publishing: ruff's S102 (exec), S307 (eval) and E702 (statements joined
    by ';') over the whole pack, tests and benchmarks included."""
    res = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT), "--no-cache", "--quiet", "--select", "S102,S307,E702"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]


def runtime_modules() -> list[Path]:
    return [ROOT / "__init__.py", *sorted((ROOT / "nodes").glob("*.py")), *sorted((ROOT / "wan_vae").rglob("*.py"))]


def test_nothing_is_installed_or_downloaded_at_run_time():
    """The Registry's rules: no pip at run time, no code (or weights) fetched from the network by the pack itself."""
    import ast

    network = ("urllib.request", "urllib3", "requests", "http.client", "httpx", "aiohttp", "huggingface_hub", "pip")
    found = []
    for path in runtime_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []  # fmt: skip
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: import {n}" for n in names if n.startswith(network)]
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"(^|\s|-m\s)pip(\s|$)", node.value) \
                    and "install" in node.value:  # fmt: skip
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert not found, found


def test_the_published_archive_holds_the_pack_and_not_the_development_material():
    """`comfy node pack` zips the git-tracked files less .comfyignore's patterns (here directories only)."""
    patterns = [line.strip() for line in (ROOT / ".comfyignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert patterns and all(p.endswith("/") and "*" not in p for p in patterns), "keep .comfyignore to directory patterns"
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    packed = [f for f in tracked if not any(f.startswith(p) for p in patterns)]
    assert {"__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md", "docs/nodes.png"} <= set(packed)
    for folder in ("nodes/", "wan_vae/", "wan_vae/run/", "web/", "example_workflows/"):
        assert any(f.startswith(folder) for f in packed), folder
    assert not [f for f in packed if f.startswith(("tests/", "benchmarks/", ".ci/"))]
    assert {f for f in packed if f.endswith(".py")} >= {str(p.relative_to(ROOT)) for p in runtime_modules()}
    for doc in [f for f in packed if f.endswith(".md")]:  # no page of the archive links to what was left out of it
        for target in re.findall(r"\]\(([^)#\s]+)", (ROOT / doc).read_text()):
            if "://" not in target:
                linked = (ROOT / doc).parent.joinpath(target).resolve().relative_to(ROOT).as_posix()
                assert not any(linked.startswith(p) for p in patterns), f"{doc} links to {target}, which is not published"


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


def test_the_library_example_runs(tmp_path):
    """The Python snippet of docs/command-line.md, as written (on the CPU when there is no GPU), run as a script of its
    own (no exec: the Comfy Registry refuses packs that use it), with `latents` made for it."""
    import torch

    from reference import write_vae_file

    write_vae_file(tmp_path / "wan_2.1_vae.safetensors", "2.1", dtype=torch.float32)
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "command-line.md").read_text(), re.S).group(1)
    if not torch.cuda.is_available():
        code = code.replace('device="cuda"', 'device="cpu"')
    script = tmp_path / "example.py"
    script.write_text(f"import sys\nsys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
                      "from reference import latents as make_latents\nlatents = make_latents('2.1', (1, 2, 6, 10))\n"
                      f"{code}\nprint(tuple(video.shape))\n")  # fmt: skip
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "(1, 3, 5, 48, 80)"
    assert (tmp_path / "out.mp4").stat().st_size > 0
