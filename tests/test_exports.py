"""The public names of wippy.runtime are exactly those of __all__, and the layers point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import wippy.runtime as runtime

ROOT = Path(__file__).resolve().parent.parent


def test_all_names_exist_and_nothing_else_is_public() -> None:
    """Every name in __all__ exists; every public module-level name is in __all__ or a submodule."""
    for name in runtime.__all__:
        assert hasattr(runtime, name), name
    public = {n for n in vars(runtime) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(runtime, n)).__name__ == "module"}
    assert public - modules - {"annotations"} == set(runtime.__all__)


def test_runtime_imports_no_notebook_layer() -> None:
    """runtime/ imports no IPython, ipykernel, ipywidgets, kernel or magics code (it runs headless)."""
    banned = ("IPython", "ipykernel", "ipywidgets", "wippy.kernel", "wippy.magics")
    for path in (ROOT / "runtime").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert not n.startswith(banned), f"{path}: imports {n}"
