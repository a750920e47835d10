"""Fixtures for the node tests: the pack imported the way ComfyUI imports it, and ComfyUI's folders."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

# Triton kernels run through Triton's interpreter on a machine without an NVIDIA GPU (tests/test_kernels.py). Read
# when Triton is first imported, which importing torch.library's custom ops does: so before anything else.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import clean_tree  # noqa: E402
from comfy_graph import LoadLatentLikeComfyUI  # noqa: E402
from reference import write_vae_file  # noqa: E402

PACK = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pack(tmp_path_factory):
    """Import the pack as ComfyUI's load_custom_node does, with a decoy top-level `nodes` module on sys.path."""
    decoy = tmp_path_factory.mktemp("decoy")
    (decoy / "nodes.py").write_text("NODE_CLASS_MAPPINGS = {'Decoy': object}\nIMPORTED = True\n")
    sys.path.insert(0, str(decoy))
    try:
        name = str(PACK).replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(name, PACK / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(decoy))
    module.host = sys.modules[f"{name}.nodes.comfy_host"]
    module.lib = sys.modules[f"{name}.wan_vae"]
    module.nodes = sys.modules[f"{name}.nodes"]
    return module


@pytest.fixture
def folders(pack, tmp_path):
    """Fallback ComfyUI folders with a (reduced, random-weight) Wan 2.1 VAE in models/vae."""
    dirs = {k: tmp_path / k for k in ("vae", "input", "output", "temp")}
    for d in dirs.values():
        d.mkdir()
    for version, name in (("2.1", "wan_2.1_vae.safetensors"), ("2.2", "wan2.2_vae.safetensors")):
        write_vae_file(dirs["vae"] / name, version)
    save_file({"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)}, str(dirs["vae"] / "sdxl_vae.safetensors"))
    saved = dict(pack.host.FALLBACK_DIRS)
    pack.host.FALLBACK_DIRS.update({k: str(v) for k, v in dirs.items()})
    LoadLatentLikeComfyUI.input_dir = str(dirs["input"])
    yield dirs
    pack.host.FALLBACK_DIRS.update(saved)


# ----------------------------------------------------------------------------------------- a clean checkout stays clean


def pytest_sessionstart(session):
    session.config.tree_before = clean_tree.snapshot(PACK)


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "tree_before", None)
    after = clean_tree.snapshot(PACK) if before is not None else None
    changed = clean_tree.changes(before, after) if after is not None else []
    if changed:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "\nFAILED: the test run changed the repository tree (tests and benchmarks must write under tmp_path):\n  "
            + "\n  ".join(changed), red=True)  # fmt: skip
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
