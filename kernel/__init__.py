"""wippy.kernel: the Jupyter kernels hosting the runtime (``wippy``: Python + Lua; ``wippy-lua``: Lua).

``python -m wippy.kernel install [--user|--sys-prefix|--prefix P]`` installs both kernelspecs.
The kernel classes are imported on first use, so the install command does not load ipykernel.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WippyKernel", "WippyLuaKernel"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import kernel

        return getattr(kernel, name)
    raise AttributeError(f"module 'wippy.kernel' has no attribute {name!r}")
