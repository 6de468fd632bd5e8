"""Drive a real JupyterLab in Debian's chromium (Playwright's sync API) and read what it shows.

Everything here runs in the test's thread, on a ``Page`` that the ``page`` fixture (conftest.py) opened on
the session's JupyterLab server; nothing here starts or stops a server or a browser.

Every wait polls the DOM with a deadline, and a wait that runs out raises :class:`BrowserWaitError` saying
what it waited for and what it saw instead (the kernel's status, the cells' prompts, the open dialog).
The conftest hook saves a screenshot of any failing test into its pytest tmp dir. The images the tests take
on purpose (:func:`screenshot`) go to ``build/screenshots/`` (git-ignored), so a test run leaves the tree
clean; ``make screenshots`` points ``WIPPY_SCREENSHOTS`` at ``docs/screenshots/`` to refresh the committed
pictures.

Selectors are JupyterLab 4's (checked on 4.6): the kernel status is the status bar item titled
"Change kernel for <notebook>" ("Wippy (Python + Lua) | Idle"), not the toolbar's execution indicator,
which says "idle" before the kernel has even connected.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

__all__ = [
    "CHROMIUM",
    "LAUNCH_ARGS",
    "SCREENSHOTS",
    "BrowserWaitError",
    "CellOutput",
    "CodeCell",
    "clear_all_outputs",
    "code_cells",
    "error_outputs",
    "execute_new_cell",
    "hide_left_sidebar",
    "kernel_status",
    "menu",
    "open_notebook",
    "outputs_text",
    "run_all",
    "screenshot",
    "wait_for_kernel_idle",
    "wait_for_selector_in_output",
]

REPO = Path(__file__).resolve().parents[2]
#: where :func:`screenshot` saves: ``$WIPPY_SCREENSHOTS`` (``make screenshots``: docs/screenshots), else build/
SCREENSHOTS = Path(os.environ.get("WIPPY_SCREENSHOTS") or REPO / "build" / "screenshots")

# Debian's chromium (scripts/ensure-chromium.sh installs it); /usr/bin/chromium is a shell wrapper that
# prints a harmless error. Playwright adds --headless itself and gives every launch a fresh profile
# (--user-data-dir in the system temp dir, removed at close): it refuses a --user-data-dir in `args`.
CHROMIUM = Path("/usr/lib/chromium/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

POLL = 0.1  # seconds between two looks at the DOM

# The notebook on screen: Lumino hides the other tabs' panels with lm-mod-hidden.
_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
_KERNEL_STATUS = '.jp-StatusBar-TextItem[title^="Change kernel"]'

_STATE_JS = """
([notebook, kernelStatus]) => ({
  kernel: document.querySelector(kernelStatus)?.textContent.trim() ?? null,
  dialog: [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText.trim().replace(/\\s+/g, ' ')),
  cells: [...document.querySelectorAll(notebook + ' .jp-CodeCell')].map(cell => ({
    prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent ?? '').trim(),
    outputs: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => ({
      mime: o.getAttribute('data-mime-type') ?? '',
      text: o.textContent ?? '',
    })),
  })),
})
"""

_EXECUTED = re.compile(r"^\[\d+\]:$")
_ERROR_TEXT = re.compile(r"Traceback|\b[A-Z]\w*Error\b")  # LuaError, WippyError, KeyError, ...

T = TypeVar("T")


class BrowserWaitError(AssertionError):
    """A wait ran out before the page showed what it waited for; the message says what it saw."""


@dataclass(frozen=True)
class CellOutput:
    """One rendered output of a code cell (a ``.jp-OutputArea-output`` element)."""

    mime: str
    """Its ``data-mime-type``: ``application/vnd.jupyter.stdout``, ``text/html``, ...; Lab renders both
    stderr streams and error outputs (tracebacks) as ``application/vnd.jupyter.stderr``."""
    text: str
    """Its ``textContent``, as the DOM has it (tabs and newlines kept)."""


@dataclass(frozen=True)
class CodeCell:
    """A code cell of the notebook on screen, as rendered."""

    index: int
    """0-based position among the notebook's code cells (markdown cells are not counted)."""
    prompt: str
    """``[3]:`` once run, ``[*]:`` while queued or running, ``[ ]:`` never run (or outputs cleared)."""
    outputs: tuple[CellOutput, ...]

    @property
    def text(self) -> str:
        return "".join(o.text for o in self.outputs)


@dataclass(frozen=True)
class _State:
    kernel: str | None
    dialog: list[str]
    cells: list[CodeCell]

    def kernel_word(self) -> str:
        """``Idle``, ``Busy``, ``Initializing``, ... (what follows "|" in the status bar)."""
        return (self.kernel or "").rpartition("|")[2].strip()

    def describe(self) -> str:
        prompts = " ".join(c.prompt or "?" for c in self.cells) or "(no code cells)"
        said = f"status bar said {self.kernel!r}" if self.kernel is not None else "no kernel status in the status bar"
        parts = [said, f"prompts: {prompts}"]
        if self.dialog:
            parts.append(f"a dialog is open: {' | '.join(self.dialog)!r}")
        return "; ".join(parts)


def _state(page: Page) -> _State:
    raw: dict[str, Any] = page.evaluate(_STATE_JS, [_NOTEBOOK, _KERNEL_STATUS])
    cells = [
        CodeCell(i, c["prompt"], tuple(CellOutput(o["mime"], o["text"]) for o in c["outputs"]))
        for i, c in enumerate(raw["cells"])
    ]
    return _State(raw["kernel"], raw["dialog"], cells)


def _poll(
    page: Page, look: Callable[[Page], T], done: Callable[[T], bool], timeout: float, failure: Callable[[T], str]
) -> T:
    """Look at the page every POLL s until ``done(seen)``; after ``timeout`` s raise with ``failure(seen)``.

    ``done`` may itself raise BrowserWaitError for a state that will never get better.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = look(page)
        if done(seen):
            return seen
        if time.monotonic() >= deadline:
            raise BrowserWaitError(failure(seen))
        page.wait_for_timeout(POLL * 1000)  # lets Playwright dispatch its events, unlike time.sleep


def kernel_status(page: Page) -> str | None:
    """The status bar's kernel item: ``"Wippy (Python + Lua) | Idle"``, or None if it is not shown."""
    return _state(page).kernel


def wait_for_kernel_idle(page: Page, timeout: float = 45.0) -> None:
    """Wait until the notebook's kernel is connected and idle (status bar: "<kernel name> | Idle")."""

    def idle(s: _State) -> bool:
        if s.kernel_word() == "Dead":  # never recovers on its own: no use waiting out the timeout
            raise BrowserWaitError(f"the kernel died: {s.describe()}")
        return s.kernel_word() == "Idle" and not (s.kernel or "").startswith("No Kernel")

    _poll(page, _state, idle, timeout, lambda s: f"kernel never became idle within {timeout:g} s: {s.describe()}")


def open_notebook(page: Page, name: str, timeout: float = 45.0) -> None:
    """Open ``name`` (relative to the server's root dir) on a reset workspace and wait for its kernel.

    ``?reset`` makes Lab forget the last session's layout, so only this notebook is open.
    """
    page.goto(f"/lab/tree/{name}?reset")
    try:
        page.locator(_NOTEBOOK).wait_for(state="visible", timeout=timeout * 1000)
    except Exception:  # playwright's TimeoutError: say which notebook, and what the page showed instead
        raise BrowserWaitError(
            f"notebook {name} did not show within {timeout:g} s: {_state(page).describe()}"
        ) from None
    wait_for_kernel_idle(page, timeout)


def menu(page: Page, top: str, item: str) -> None:
    """Click ``top`` in the menu bar, then the entry labelled exactly ``item`` (e.g. "Run", "Run All Cells")."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(top)}$")).click()
    entry = page.locator(".lm-Menu:not(.lm-mod-hidden) .lm-Menu-item").filter(
        has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$"))
    )
    try:
        entry.first.wait_for(state="visible", timeout=5000)
    except Exception:
        page.keyboard.press("Escape")
        raise BrowserWaitError(f"menu {top} has no entry {item!r} within 5 s") from None
    if "lm-mod-disabled" in (entry.first.get_attribute("class") or ""):
        page.keyboard.press("Escape")
        raise BrowserWaitError(f"menu entry {top} > {item} is disabled (is a notebook the current widget?)")
    entry.first.click()


def code_cells(page: Page) -> list[CodeCell]:
    """The code cells of the notebook on screen, with their prompts and rendered outputs."""
    return _state(page).cells


def clear_all_outputs(page: Page, timeout: float = 10.0) -> None:
    """Edit > Clear Outputs of All Cells, and wait until no code cell has a prompt number or an output.

    Run this before :func:`run_all`: the saved notebook shows outputs and prompt numbers of its own, and a
    test must read the ones this run produced.
    """
    menu(page, "Edit", "Clear Outputs of All Cells")

    def cleared(s: _State) -> bool:
        return all(c.prompt == "[ ]:" and not c.outputs for c in s.cells)

    _poll(
        page,
        _state,
        cleared,
        timeout,
        lambda s: f"outputs were still shown {timeout:g} s after Clear Outputs of All Cells: {s.describe()}",
    )


def run_all(page: Page, timeout: float = 60.0) -> list[CodeCell]:
    """Clear every output, click Run > Run All Cells, wait until every code cell has run; return the cells.

    Done means: every code cell shows a prompt number, none shows ``[*]``, and the kernel is idle. A cell
    that raises stops Lab's Run All (the cells after it go back to ``[ ]``): that fails at once, with the
    error outputs in the message, rather than at the timeout.
    """
    clear_all_outputs(page)
    menu(page, "Run", "Run All Cells")
    started = False

    def finished(s: _State) -> bool:
        nonlocal started
        prompts = [c.prompt for c in s.cells]
        started = started or any(p == "[*]:" or _EXECUTED.match(p) for p in prompts)
        idle = s.kernel_word() == "Idle"
        if s.kernel_word() == "Dead":
            raise BrowserWaitError(f"the kernel died during Run All Cells: {s.describe()}")
        if started and idle and "[*]:" not in prompts and "[ ]:" in prompts:
            last = prompts.index("[ ]:") - 1
            errors = "; ".join(f"code cell {i}: {o.text.strip()[:500]!r}" for i, o in error_outputs(s.cells))
            raise BrowserWaitError(
                f"Run All Cells stopped after code cell {last}, the cells after it did not run "
                f"({s.describe()}); error outputs: {errors or 'none'}"
            )
        return idle and bool(prompts) and all(_EXECUTED.match(p) for p in prompts)

    def failure(s: _State) -> str:
        if not started:
            return f"Run All Cells started no cell within {timeout:g} s: {s.describe()}"
        return f"Run All Cells did not finish within {timeout:g} s: {s.describe()}"

    return _poll(page, _state, finished, timeout, failure).cells


def execute_new_cell(page: Page, code: str, timeout: float = 30.0) -> str:
    """Add a code cell below the last cell, type ``code`` into it, run it (Shift+Enter) and return the text
    of its outputs once it has run and the kernel is idle.

    Works in command mode with Lab's default shortcuts: Escape, ``b`` (insert below), Enter (edit).
    """
    index = len(code_cells(page))  # the new cell is the last code cell
    page.locator(f"{_NOTEBOOK} .jp-Cell").last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.insert_text(code)  # no auto-indent or bracket closing, unlike typing key by key
    page.keyboard.press("Shift+Enter")

    def ran(s: _State) -> bool:
        if s.kernel_word() == "Dead":
            raise BrowserWaitError(f"the kernel died running a new cell: {s.describe()}")
        return len(s.cells) > index and bool(_EXECUTED.match(s.cells[index].prompt)) and s.kernel_word() == "Idle"

    seen = _poll(page, _state, ran, timeout,
                 lambda s: f"the new cell {code!r} did not run within {timeout:g} s: {s.describe()}")  # fmt: skip
    return seen.cells[index].text


def error_outputs(cells: list[CodeCell]) -> list[tuple[int, CellOutput]]:
    """``(code cell index, output)`` for each output that looks like a failure: anything rendered as stderr
    (error outputs and stderr streams), or text with a traceback or an exception name (``LuaError``, ...).

    A notebook that means to show an error should have its test allow that one cell.
    """
    return [
        (c.index, o)
        for c in cells
        for o in c.outputs
        if o.mime == "application/vnd.jupyter.stderr" or _ERROR_TEXT.search(o.text)
    ]


def outputs_text(cells: list[CodeCell]) -> str:
    """All outputs' text, whitespace runs collapsed to one space (``print`` in Lua separates by tabs)."""
    return " ".join(" ".join(c.text.split()) for c in cells)


def wait_for_selector_in_output(page: Page, css: str, timeout: float = 30.0) -> Locator:
    """Wait until an element matching ``css`` is visible inside some cell output; return a locator of them.

    For widgets: ``wait_for_selector_in_output(page, "svg.wippy-tree circle")`` finds the SVG a widget view
    drew in its output area. The first render of a widget after a server start can be slow: give it time.
    """
    found = page.locator(f"{_NOTEBOOK} .jp-OutputArea-output").locator(css)

    def visible(p: Page) -> bool:
        return found.count() > 0 and found.first.is_visible()

    def failure(_: bool) -> str:
        s = _state(page)
        mimes = sorted({o.mime for c in s.cells for o in c.outputs}) or ["(no outputs)"]
        what = "matches but none is visible" if found.count() else "matches nothing"
        return (
            f"no cell output showed {css!r} within {timeout:g} s ({what}); "
            f"output types on the page: {', '.join(mimes)}; {s.describe()}"
        )

    _poll(page, visible, bool, timeout, failure)
    return found


def hide_left_sidebar(page: Page) -> None:
    """Collapse the left sidebar (the file browser that ``?reset`` opens), for a wider notebook on screen."""
    current = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if current.count():
        current.first.click()  # clicking the open panel's tab collapses the sidebar
    _poll(page, lambda p: current.count(), lambda n: n == 0, 5.0, lambda _: "the left sidebar stayed open for 5 s")


def screenshot(page: Page, name: str, *, scroll_to: str | None = None) -> Path:
    """Save the viewport as ``<SCREENSHOTS>/<name>.png`` (images for the docs, refreshed there by
    ``make screenshots``); return its path.

    ``scroll_to`` is a selector (CSS, or Playwright's like ``.jp-CodeCell:has-text("...")``) of an element
    scrolled to the middle of the notebook first. Menus and tooltips are closed, the caret hidden and
    animations stopped so the image shows the notebook only.
    """
    if scroll_to is not None:
        target = page.locator(scroll_to)
        if not target.count():
            raise BrowserWaitError(f"nothing on the page matches {scroll_to!r} to scroll to")
        target.first.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.keyboard.press("Escape")
    page.mouse.move(0, 0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, animations="disabled", caret="hide")
    return path
