"""The tutorial notebooks as a user runs them: JupyterLab in Debian's chromium, Run > Run All Cells.

Each test opens a notebook of notebooks/ (a temporary copy), clears its saved outputs, runs every cell
through the menu, then reads the rendered outputs from the DOM; it saves a screenshot for the docs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .helpers import (
    REPO,
    error_outputs,
    hide_left_sidebar,
    open_notebook,
    outputs_text,
    run_all,
    screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def saved_code_cells(name: str) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = json.loads((REPO / "notebooks" / name).read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def test_01_actors_runs_all_cells_in_jupyterlab(page, lab):
    open_notebook(page, "01-actors.ipynb")
    cells = run_all(page)

    # The crasher's error is printed on purpose, as ordinary output ("error:\tapp:crasher:3: attempt to
    # index a nil value"): no cell of this notebook should show a traceback or write to stderr.
    assert not error_outputs(cells), f"error outputs in 01-actors: {error_outputs(cells)}"
    text = outputs_text(cells)
    for expected in (
        '"hello from Lua, again"',  # a %lua expression's result
        '{n = 1, text = "hello"}',  # the echo's reply, a Lua table shown as a result
        "the counter still counts: 4",  # the crash stayed in its process
        "echo {'n': 1} True",  # the same processes from Python
    ):
        assert expected in text, f"{expected!r} not in the outputs of 01-actors:\n{text}"
    assert len(cells) == len(saved_code_cells("01-actors.ipynb")), "Lab rendered fewer code cells than saved"
    assert lab.data_dir("01-actors.ipynb").is_dir(), "the kernel kept its data elsewhere than beside the copy"

    hide_left_sidebar(page)
    screenshot(page, "01-actors", scroll_to='.jp-CodeCell:has-text("the counter still counts")')
