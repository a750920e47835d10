"""The library's layout stays legible: no import cycles inside wan_vae/, no module importing another's private names,
and no ComfyUI import in it. Parsed with ast, so every import counts, also those inside functions."""

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "wan_vae"


def imports(path: Path) -> list[tuple[str, str, int]]:
    """(module of wan_vae imported, name imported from it or "", line) for every relative import in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:  # from .x import a, b
                found += [(node.module.split(".")[0], alias.name, node.lineno) for alias in node.names]
            else:  # from . import x, y
                found += [(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 1:
            raise AssertionError(f"{path.name}:{node.lineno}: wan_vae imports from outside itself ({'.' * node.level}{node.module})")
    return found


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in LIBRARY.glob("*.py")}
    return {p.stem: {m for m, _, _ in imports(p) if m in modules and m != "__init__"} for p in LIBRARY.glob("*.py")}


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
    edges.pop("__init__")  # the package's entry imports its modules; they never import it
    assert find_cycle(edges) is None, f"import cycle in wan_vae: {' -> '.join(find_cycle(edges))}"


def test_no_module_imports_another_modules_private_names():
    private = [f"{p.name}:{line}: from .{m} import {name}" for p in LIBRARY.glob("*.py")
               for m, name, line in imports(p) if name.startswith("_") or m.startswith("_") and m != "__future__"]  # fmt: skip
    assert not private, "private names imported across modules:\n" + "\n".join(private)


def test_the_library_does_not_import_comfyui():
    comfy = ("comfy", "comfy_extras", "folder_paths", "server", "execution", "nodes", "comfy_api")
    found = []
    for p in LIBRARY.glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []  # fmt: skip
            found += [f"{p.name}:{node.lineno}: {n}" for n in names if n.split(".")[0] in comfy]
    assert not found, found


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
])  # fmt: skip
def test_the_cycle_finder_finds_cycles(edges, cycle):
    assert find_cycle(edges) == cycle
