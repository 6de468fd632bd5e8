"""The layers point one way: no module imports a private name of a sibling, and runtime/ has no import circle.

Static (``ast``, nothing is imported): every ``.py`` file under runtime/, magics/ and kernel/ is parsed and
its imports are read wherever they are (module level, under ``if TYPE_CHECKING:``, inside functions),
since an import that only a type checker or a late call sees still ties the two modules together.
The layer diagram and the rule are in docs/architecture.md ("Layers"). That runtime/ imports no notebook
code (IPython, ipykernel, ipywidgets) is checked in tests/test_exports.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"runtime": "wippy.runtime", "magics": "wippy.magics", "kernel": "wippy.kernel"}


def _module_name(path: Path) -> str:
    """``runtime/views/x.py`` -> ``wippy.runtime.views.x`` (a package's ``__init__`` is the package)."""
    rel = path.relative_to(ROOT)
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:-1]]
    if rel.stem != "__init__":
        parts.append(rel.stem)
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module a ``from ...module import`` of ``importer`` names."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _sources(*packages: str) -> Iterator[Path]:
    for pkg in packages:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def _known_modules() -> set[str]:
    return {_module_name(p) for p in _sources(*PACKAGES)}


def _imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line, module, name)`` for every import of ``path``: ``name`` is what a ``from`` import takes
    (None for a plain ``import m``), resolved to absolute module names."""
    me = _module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(me, _is_package(path), node.level, node.module)
            for a in node.names:
                yield node.lineno, target, a.name


def _module_aliases(path: Path, known: set[str]) -> dict[str, str]:
    """Local names ``path`` binds to one of our modules (``from . import host``, ``import wippy.x as y``)."""
    me = _module_name(path)
    aliases: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in known:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(me, _is_package(path), node.level, node.module)
            for a in node.names:
                if f"{target}.{a.name}" in known:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
    return aliases


def private_imports(*packages: str) -> list[str]:
    """``from .sibling import _private`` (or ``import pkg._private``, or ``sibling._private`` on a module
    imported by name) anywhere in ``packages``."""
    known = _known_modules()
    found = []
    for path in _sources(*packages):
        me = _module_name(path)
        for line, module, name in _imports(path):
            if not module.startswith("wippy."):
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if name is not None and name.startswith("_") and f"{module}.{name}" not in known:
                found.append(f"{where}: imports the private name {name} of {module}")
            tail = [p for p in module.split(".")[2:] if p.startswith("_") and p != "__init__"]
            if tail and module != me:
                found.append(f"{where}: imports the private module {module}")
        aliases = _module_aliases(path, known)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses the private name {node.attr} "
                             f"of {aliases[node.value.id]}")
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Which modules of ``package`` each module of it imports (``from . import x`` counts as ``x``)."""
    known = {_module_name(p) for p in _sources(package)}
    graph: dict[str, set[str]] = {}
    for path in _sources(package):
        me = _module_name(path)
        edges = graph.setdefault(me, set())
        for _, module, name in _imports(path):
            if name is not None and f"{module}.{name}" in known:
                edges.add(f"{module}.{name}")   # a submodule taken by name
            elif module in known:
                edges.add(module)
        edges.discard(me)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_runtime_imports_no_private_name_of_a_sibling() -> None:
    assert private_imports("runtime") == []


def test_magics_and_kernel_import_no_private_name_of_a_sibling() -> None:
    assert private_imports("magics", "kernel") == []


def test_runtime_has_no_import_circle() -> None:
    cycle = find_cycle(import_graph("runtime"))
    assert cycle is None, "import circle in runtime/: " + " -> ".join(m.removeprefix("wippy.runtime.") for m in cycle)


def test_the_checks_see_what_they_must(tmp_path: Path) -> None:
    """The graph and the private-name check find a circle and a private import hidden where they hide."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    runtime = import_graph("runtime")
    # node.py uses the host; the host, by its port, does not know the node
    assert "wippy.runtime.host" in runtime["wippy.runtime.node"]
    assert "wippy.runtime.node" not in runtime["wippy.runtime.host"]
    assert _resolve("wippy.runtime.host", False, 1, "node") == "wippy.runtime.node"
    assert _resolve("wippy.magics.views.tree", False, 2, "process") == "wippy.magics.process"
    assert _resolve("wippy.magics.views", True, 1, "pump") == "wippy.magics.views.pump"
