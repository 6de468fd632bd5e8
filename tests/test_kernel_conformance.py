"""Both kernels against jupyter_kernel_test, the Jupyter project's protocol conformance suite.

Each class starts its kernel once (over ZeroMQ, as a notebook would), in a temporary working directory
with its own ``WIPPY_DATA_DIR`` and ``IPYTHONDIR`` (so the node's data and IPython's history database stay
out of the repository and the user's home), with warnings as errors in the kernel as in tests/test_kernel.py.

What the wippy-lua kernel leaves out, and why (the attribute is left unset, so jupyter_kernel_test skips
the test by its own rule):

- ``code_stderr``: a Lua cell has no stream but stdout. The shell's ``print`` is its only output (it goes
  to the cell's stdout as it happens) and the sandbox has no ``io`` library, so no Lua code writes to
  stderr. (Magics write usage errors to stderr, but those cells fail, and the test wants status ok.)
- ``code_display_data``: Lua has no display machinery; a cell's value is an ``execute_result`` (tested),
  and no Lua function publishes a rich mime bundle.
- ``code_clear_output``: likewise, no Lua function sends ``clear_output``.

The pager works in the Lua kernel through a magic (``%lua?`` pages the magic's help): magics run in
either kernel, so that is tested rather than skipped.

History is tested by "tail" and "search", not by "range", in both kernels: IPython (so ipykernel's own
python3 kernel too) answers a range request for the current session with session number 0 in each row,
where jupyter_kernel_test wants the session's number that a tail request gave.

Two kernel bugs this suite found are fixed and kept fixed by tests below: do_history is a coroutine
(ipykernel 7 warns about plain ones, an error under PYTHONWARNINGS=error), and the Lua kernel's history
keeps cells as typed (not with the `%%lua` the kernel runs them under).
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from typing import Any, ClassVar

import jupyter_kernel_test
from jupyter_client.manager import start_new_kernel

# Warnings are errors in the kernel too.
KERNEL_WARNINGS = "error"

HISTORY = ("tail", "search")  # not "range": see the module's docstring

# The API completions after `process.sp` (luadoc's list; the completion test compares sets exactly).
SPAWNS = {"spawn", "spawn_linked", "spawn_linked_monitored", "spawn_monitored"}


class _WippyKernelTests(jupyter_kernel_test.KernelTests):
    """Starts the kernel in a temporary directory instead of jupyter_kernel_test's bare start_new_kernel."""

    __test__ = False  # the base itself is no test (pytest collects every TestCase subclass in the module)
    workdir: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.workdir = tempfile.mkdtemp(prefix=f"{cls.kernel_name}-conformance-")
        env = {
            **os.environ,
            "WIPPY_DATA_DIR": os.path.join(cls.workdir, "data"),
            "IPYTHONDIR": os.path.join(cls.workdir, "ipython"),
            "PYTHONWARNINGS": KERNEL_WARNINGS,
        }
        try:
            cls.km, cls.kc = start_new_kernel(kernel_name=cls.kernel_name, startup_timeout=30, cwd=cls.workdir,
                                              env=env)
        except BaseException:
            shutil.rmtree(cls.workdir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.workdir, ignore_errors=True)


class WippyKernelTests(_WippyKernelTests):
    """The ``wippy`` kernel: IPython, plus ``%%lua`` cells that complete, inspect and is_complete in Lua."""

    __test__ = True
    kernel_name = "wippy"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('oops', file=sys.stderr)"
    code_page_something = "print?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result: ClassVar[list[dict[str, str]]] = [
        {"code": "1 + 1", "result": "2"},
        {"code": "%%lua\nreturn 6 * 7", "result": "42"},
    ]
    code_display_data: ClassVar[list[dict[str, str]]] = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))", "mime": "text/latex"},
    ]
    code_clear_output = "from IPython.display import clear_output; clear_output()"
    code_history_pattern = "1 + *"  # a glob; it matches one of code_execute_result's cells
    supported_history_operations = HISTORY
    code_inspect_sample = "print"

    completion_samples: ClassVar[list[dict[str, Any]]] = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "%%lua\nprocess.sp", "matches": SPAWNS},
    ]
    complete_code_samples: ClassVar[list[str]] = ["1", "print('hello, world')", "%%lua\nreturn 1"]
    incomplete_code_samples: ClassVar[list[str]] = ["print('''hello", "def f():\n    x = 1", "%%lua\nfor i = 1, 3 do"]
    invalid_code_samples: ClassVar[list[str]] = ["raise = 2", "%%lua\nreturn = 1"]


class WippyLuaKernelTests(_WippyKernelTests):
    """The ``wippy-lua`` kernel: every cell is Lua unless it starts with ``%``."""

    __test__ = True
    kernel_name = "wippy-lua"
    language_name = "lua"
    file_extension = ".lua"

    code_hello_world = 'print("hello, world")'
    code_page_something = "%lua?"
    code_generate_error = 'error("boom")'
    code_execute_result: ClassVar[list[dict[str, str]]] = [
        {"code": "return 6 * 7", "result": "42"},
        {"code": 'return "wip" .. "py"', "result": '"wippy"'},
    ]
    code_history_pattern = "return 6*"
    supported_history_operations = HISTORY
    code_inspect_sample = "process.spawn"

    completion_samples: ClassVar[list[dict[str, Any]]] = [{"text": "process.sp", "matches": SPAWNS}]
    complete_code_samples: ClassVar[list[str]] = ["return 1", 'print("hello, world")', "x = 1\nreturn x"]
    incomplete_code_samples: ClassVar[list[str]] = ["for i = 1, 3 do", "local t = {", "function f()"]
    invalid_code_samples: ClassVar[list[str]] = ["return = 1", "x = = 1"]

    def test_history_keeps_the_cell_as_typed(self) -> None:
        self.flush_channels()
        self.execute_helper("return 6 * 7")
        reply = self.kc.history(hist_access_type="tail", n=1, raw=True, output=False, reply=True, timeout=15)
        assert [row[2] for row in reply["content"]["history"]] == ["return 6 * 7"]


def test_do_history_is_a_coroutine() -> None:
    """do_history is a coroutine (ipykernel 7 warns about plain do_* handlers)."""
    from wippy.kernel.kernel import WippyKernel

    assert inspect.iscoroutinefunction(WippyKernel.do_history)
