"""The layers of magics/ and kernel/ point one way (read statically, from the source).

No module imports a private name (``_name``) of a sibling module, and the modules of ``wippy.magics``
form no import circle: the views (``wippy.magics.views.*``) import shared helpers (format, tree_picture,
registry_diff, current), never the magic modules that show them. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("magics", "kernel")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out["wippy." + ".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of ``path``, made absolute."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return found


def test_no_module_takes_a_private_name_of_a_sibling() -> None:
    modules = _modules()
    bad = [f"{path.relative_to(ROOT)}:{line} imports {n} from {target}"
           for name, path in modules.items()
           for target, names, line in _imports(name, path)
           if target.startswith("wippy.") and target != name
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, "\n".join(bad)


def test_magics_has_no_import_circle() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules if m.startswith("wippy.magics")}
    for name in graph:
        for target, names, _ in _imports(name, modules[name]):
            for t in [target, *(f"{target}.{n}" for n in names)]:  # `from . import x` names a module
                if t in graph and t != name:
                    graph[name].add(t)
    # a package's __init__ only gathers its modules (lazily, for IPython): an edge into a package from
    # one of its own modules would close a circle, and is counted; the package's edges out are too
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join([*stack[stack.index(t):], t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)
