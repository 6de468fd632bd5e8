"""``python -m wippy.kernel install``: write the ``wippy`` and ``wippy-lua`` kernelspecs and install them.

Runs on the main thread of a short command; imports nothing of the kernel itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["KERNELSPECS", "install", "main"]

KERNELSPECS: dict[str, dict[str, Any]] = {
    "wippy": {
        "argv": [sys.executable, "-m", "wippy.kernel", "-f", "{connection_file}"],
        "display_name": "Wippy (Python + Lua)",
        "language": "python",
    },
    "wippy-lua": {
        "argv": [sys.executable, "-m", "wippy.kernel", "--lua", "-f", "{connection_file}"],
        "display_name": "Wippy (Lua)",
        "language": "lua",
    },
}


def install(user: bool = False, prefix: str | None = None) -> list[str]:
    """Install both kernelspecs (into ``prefix``, or the user's directory); return where they went."""
    from jupyter_client.kernelspec import KernelSpecManager

    manager = KernelSpecManager()
    installed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in KERNELSPECS.items():
            source = Path(tmp) / name
            source.mkdir()
            spec = {**spec, "metadata": {"debugger": False}, "interrupt_mode": "signal"}
            (source / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
            installed.append(manager.install_kernel_spec(str(source), name, user=user, prefix=prefix))
    return installed


def main(argv: list[str] | None = None) -> int:
    """The ``install`` subcommand; the default target is this environment (``--sys-prefix``)."""
    parser = argparse.ArgumentParser(prog="python -m wippy.kernel install",
                                     description="Install the wippy and wippy-lua kernelspecs.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="into the user's Jupyter directory")
    where.add_argument("--sys-prefix", action="store_true", help="into this environment (the default)")
    where.add_argument("--prefix", metavar="P", help="into P/share/jupyter/kernels")
    args = parser.parse_args(argv)
    prefix = None if args.user else (args.prefix or sys.prefix)
    for path in install(user=args.user, prefix=prefix):
        print(f"installed kernelspec {Path(path).name} in {path}")
    return 0
