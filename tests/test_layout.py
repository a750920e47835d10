"""The library's layout stays legible: wan_vae/ is grouped by what each part is, groups import each other in one
direction only, there is no import cycle, no module imports another's private names, and nothing imports ComfyUI.
Parsed with ast, so every import counts, also those inside functions."""

import ast
import re
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "wan_vae"

# Each group and the groups it may import (besides itself), top to bottom: the face (the package's own modules)
# drives runs, runs follow plans, plans price networks, networks call kernels and read files; videos serve runs and
# the face; the device's memory, precision and GPU path, and the errors, serve everything. docs/development.md draws the same map.
GROUPS = {
    "face": {"run", "plan", "network", "kernels", "files", "video", "device", "errors"},
    "run": {"plan", "network", "kernels", "files", "video", "device", "errors"},
    "plan": {"network", "kernels", "files", "device", "errors"},
    "network": {"kernels", "files", "device", "errors"},
    "kernels": {"device", "errors"},
    "video": {"files", "errors"},
    "files": {"errors"},
    "device": {"errors"},
    "errors": set(),
}
FACE = {"__init__", "__main__", "vae", "tiny_vae", "flash_vae", "alpha_pair", "cli"}  # the modules at the top of the package besides errors.py


def modules() -> dict[str, Path]:
    """Every module of the library by its dotted name inside wan_vae ("run.decode", "vae", "network")."""
    found = {}
    for path in LIBRARY.rglob("*.py"):
        parts = path.relative_to(LIBRARY).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"] = path
    return found


def group_of(module: str) -> str:
    top = module.split(".")[0]
    return "face" if top in FACE else top


def imports(module: str, path: Path) -> list[tuple[str, str, int]]:
    """(module of wan_vae imported, name imported from it or "", line) for every relative import in `path`,
    module names dotted inside wan_vae as modules() gives them."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else [p for p in module.split(".") if p != "__init__"]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        if node.level - 1 > len(package):
            raise AssertionError(f"{path.relative_to(LIBRARY)}:{node.lineno}: wan_vae imports from outside itself "
                                 f"({'.' * node.level}{node.module or ''})")  # fmt: skip
        base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
        if node.module:  # from .x import a, b: a and b are names of x, or modules of the package x
            found += [(".".join(base), alias.name, node.lineno) for alias in node.names]
        else:  # from . import x, y
            found += [(".".join(base + [alias.name]), "", node.lineno) for alias in node.names]
    return found


def graph() -> dict[str, set[str]]:
    """Which module imports which, among the library's own modules (`from .g import m` counts as importing g.m)."""
    known = modules()
    edges = {}
    for module, path in known.items():
        targets = set()
        for target, name, _ in imports(module, path):
            targets.add(f"{target}.{name}" if f"{target}.{name}" in known else target)
        edges[module] = {t for t in targets if t in known and t != module}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_library_has_no_import_cycle():
    edges = graph()
    for package in [m for m in edges if (LIBRARY / m.replace(".", "/") / "__init__.py").exists() or m == "__init__"]:
        edges.pop(package)  # a package's entry imports its modules; they never import it
    assert find_cycle(edges) is None, f"import cycle in wan_vae: {' -> '.join(find_cycle(edges))}"


def test_every_module_is_in_a_group():
    assert {group_of(m) for m in modules()} <= set(GROUPS), "a folder of wan_vae/ that GROUPS does not place"
    assert set(GROUPS) - {"face", "errors"} <= {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").exists()}


@pytest.mark.parametrize("group", [g for g in GROUPS if g not in ("face", "errors")])
def test_each_group_says_what_lives_there(group):
    doc = ast.get_docstring(ast.parse((LIBRARY / group / "__init__.py").read_text()))
    assert doc and len(doc) > 40, f"wan_vae/{group}/__init__.py: a docstring saying what lives there"


def test_groups_import_each_other_in_one_direction():
    upward = []
    for module, path in modules().items():
        for target, name, line in imports(module, path):
            mine, theirs = group_of(module), group_of(target)
            if theirs != mine and theirs not in GROUPS[mine]:
                upward.append(f"{path.relative_to(LIBRARY)}:{line}: {mine} imports {theirs} (from {target} import {name})")
    assert not upward, "imports against the groups' direction (see GROUPS):\n" + "\n".join(upward)


def test_the_group_order_is_one_direction():
    assert find_cycle({g: set(below) for g, below in GROUPS.items()}) is None
    for group, below in GROUPS.items():  # what a group may import, the groups below it may import too: a layering
        assert all(GROUPS[b] <= below for b in below), group


def test_no_module_imports_another_modules_private_names():
    private = [f"{p.relative_to(LIBRARY)}:{line}: from {m} import {name}" for module, p in modules().items()
               for m, name, line in imports(module, p) if name.startswith("_") or m.split(".")[-1].startswith("_")]  # fmt: skip
    assert not private, "private names imported across modules:\n" + "\n".join(private)


def test_the_library_does_not_import_comfyui():
    comfy = ("comfy", "comfy_extras", "folder_paths", "server", "execution", "nodes", "comfy_api")
    found = []
    for p in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []  # fmt: skip
            found += [f"{p.relative_to(LIBRARY)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in comfy]
    assert not found, found


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
])  # fmt: skip
def test_the_cycle_finder_finds_cycles(edges, cycle):
    assert find_cycle(edges) == cycle


def test_an_upward_import_is_found(tmp_path, monkeypatch):
    """The direction test reads what it should: a network module importing a driver is caught."""
    (tmp_path / "network").mkdir()
    (tmp_path / "network" / "blocks.py").write_text("from ..run.decode import Tracker\nfrom .stream import x\n")
    module = "network.blocks"
    found = imports(module, tmp_path / "network" / "blocks.py")
    assert found == [("run.decode", "Tracker", 1), ("network.stream", "x", 2)]
    assert group_of(found[0][0]) not in GROUPS[group_of(module)] and group_of(found[1][0]) == "network"


def test_the_development_page_draws_the_same_groups():
    page = (LIBRARY.parent / "docs" / "development.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| ([\w, ]*?) ?\|$", page, re.M))
    rows.pop("group", None)
    assert {g: set(filter(None, below.split(", "))) for g, below in rows.items()} == GROUPS
    for module, path in modules().items():  # every module has its line on the map
        if path.name not in ("__init__.py", "__main__.py"):
            assert f"`{path.name}`" in page, f"docs/development.md's map has no line for wan_vae/{path.relative_to(LIBRARY)}"
