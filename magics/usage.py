"""Reading a magic's line: options through ``magic_arguments``, JSON kept as typed, and wrong use reported.

Wrong use raises :class:`~IPython.core.error.UsageError`, which IPython shows as its message alone (no
Python traceback): the magic's name, what is wrong and the fix. Runs on the cell's thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring

__all__ = ["parse", "parse_json", "split_json"]

_JSON_START = re.compile(r'^(?:[\[{"]|-?\d|true\b|false\b|null\b)')
_WORD = re.compile(r"\S+")


def parse(magic: Callable[..., Any], line: str, name: str) -> Any:
    """``parse_argstring`` with the magic's name and a pointer to its help in the error."""
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        raise UsageError(f"{name}: {exc} (see {name}? for the usage)") from None


def split_json(line: str, required: int, optional: int = 0, valued: Sequence[str] = ()) -> tuple[str, str]:
    """Split ``line`` into the head (options and positional words) and the raw JSON after it.

    The JSON is kept as typed (IPython's argument splitting would drop its quotes). It starts after the
    ``required`` positionals, at the first word that reads as JSON (so an optional positional, such as
    %spawn's HOST, may be left out), and at the latest after ``required + optional`` positionals.
    ``valued`` names the options that take a value (the next word is that value, not a positional).
    """
    seen = 0
    skip_value = False
    for m in _WORD.finditer(line):
        word = m.group()
        if skip_value:
            skip_value = False
            continue
        if word.startswith("--"):
            skip_value = word in valued
            continue
        if seen == required + optional or (seen >= required and _JSON_START.match(word)):
            return line[: m.start()], line[m.start():].strip()
        seen += 1
    return line, ""


def parse_json(text: str, name: str, what: str) -> Any:
    """``json.loads(text)``, or a UsageError that says where it fails and how JSON is written."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{name}: the {what} is not JSON ({exc.msg} at column {exc.colno} of {text!r}); "
            f'write JSON: strings in double quotes ("text"), lists [1, 2], objects {{"key": 1}}'
        ) from None
