"""Loading a YAML source tree (``_index.yaml`` files) into entries, checked before anything is applied.

A tree is a directory; every ``_index.yaml`` below it holds ``version`` (optional), ``namespace`` and
``entries``. Every entry key but ``name``, ``kind`` and ``meta`` goes into ``data``. A Lua entry's
``source: file://x.lua`` is read relative to its ``_index.yaml``; Lua sources are compiled once here so a
syntax error is reported with its file and line before the tree is used. Any thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from lupa import lua54

from .entries import LUA_KINDS, Entry, check_entry
from .errors import EntryError, TreeError
from .units import parse_bytes, parse_seconds

__all__ = [
    "compile_check", "dump_yaml", "export_tree", "load_index", "load_text", "load_tree", "parse_bytes",
    "parse_seconds",
]

INDEX = "_index.yaml"
_local = threading.local()


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping and of each of its values."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    lines = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            lines[key_node.value] = value_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">"):
                lines[key_node.value] += 1  # a block scalar's text starts on the next line
    mapping["__line__"] = node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("__line__", "__lines__")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _checker() -> Any:
    lua = getattr(_local, "lua", None)
    if lua is None:
        lua = lua54.LuaRuntime(register_eval=False, register_builtins=False, encoding=None)
        # compile as the scheduler does (wrapped in a function); on failure report the error of the
        # plain chunk, whose line numbers and "near <eof>" read naturally
        _local.check = lua.eval(
            b"function(src, name) local f, err = load('return function(_ENV) return function(...) ' .."
            b" src .. '\\nend end', name, 't', {}) if f then return nil end"
            b" local g, err2 = load(src, name, 't', {}) return err2 or err end"
        )
        _local.lua = lua
    return _local.check


def compile_check(source: str, chunkname: str) -> str | None:
    """Compile Lua ``source`` as the runtime will; return the error message (``name:line: ...``) or None."""
    err = _checker()(source.encode("utf-8", "surrogateescape"), chunkname.encode())
    return None if err is None else err.decode("utf-8", "replace")


def _lua_error_line(message: str) -> int | None:
    m = re.search(r":(\d+):", message)
    return int(m.group(1)) if m else None


def load_index(path: Path, display_root: Path | None = None) -> list[Entry]:
    """Read one ``_index.yaml`` into entries; raises :class:`TreeError` with file and line."""
    return [e for e, _ in _load_index(path, display_root)]


def _load_index(path: Path, display_root: Path | None) -> list[tuple[Entry, tuple[str, int]]]:
    shown = _display(path, display_root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TreeError(f"cannot read: {exc}", shown) from None
    return _parse_index(text, shown, path.parent, display_root)


def _parse_index(text: str, shown: str, base: Path,
                 display_root: Path | None) -> list[tuple[Entry, tuple[str, int]]]:
    """Parse one ``_index.yaml`` document; ``file://`` sources are read relative to ``base``."""
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        context_mark = getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} at line {context_mark.line + 1})"
        raise TreeError(f"malformed YAML: {problem}", shown, line) from None
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise TreeError("expected a mapping with `namespace:` and `entries:`", shown, 1)
    ns = doc.get("namespace")
    if not isinstance(ns, str) or not re.match(r"^[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)*$", ns):
        raise TreeError(
            f"`namespace:` must be a dotted name like app.workers, got {ns!r}", shown,
            doc["__lines__"].get("namespace", 1),
        )
    raw_entries = doc.get("entries") or []
    if not isinstance(raw_entries, list):
        raise TreeError("`entries:` must be a list", shown, doc["__lines__"].get("entries"))
    out: list[tuple[Entry, tuple[str, int]]] = []
    for raw in raw_entries:
        if not isinstance(raw, dict):
            raise TreeError("each entry must be a mapping with `name:` and `kind:`", shown,
                            doc["__lines__"].get("entries"))
        line = raw["__line__"]
        lines = raw["__lines__"]
        name = raw.get("name")
        kind = raw.get("kind")
        if not isinstance(name, str) or not name:
            raise TreeError("entry without `name:`", shown, line)
        if not isinstance(kind, str) or not kind:
            raise TreeError(f"entry '{ns}:{name}' has no `kind:`", shown, line)
        meta = _strip(raw.get("meta") or {})
        if not isinstance(meta, dict):
            raise TreeError(f"entry '{ns}:{name}': `meta:` must be a mapping", shown, lines.get("meta", line))
        data = {k: _strip(v) for k, v in raw.items()
                if k not in ("name", "kind", "meta", "__line__", "__lines__")}
        entry_id = f"{ns}:{name}"
        if kind in LUA_KINDS and isinstance(data.get("source"), str):
            source = data["source"]
            src_line = lines.get("source", line)
            if source.startswith("file://"):
                rel = source[len("file://"):]
                src_path = (base / rel).resolve()
                try:
                    data["source"] = src_path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise TreeError(
                        f"entry '{entry_id}': cannot read source {source}: "
                        f"{exc.strerror if isinstance(exc, OSError) else exc}",
                        shown, src_line,
                    ) from None
                meta = {**meta, "source_path": _display(src_path, display_root)}
                err = compile_check(data["source"], "@" + meta["source_path"])
                if err is not None:
                    raise TreeError(f"entry '{entry_id}': Lua syntax error: {err}", meta["source_path"],
                                    _lua_error_line(err))
            else:
                err = compile_check(source, "=" + entry_id)
                if err is not None:
                    lua_line = _lua_error_line(err.replace(entry_id, "", 1))
                    if lua_line is not None:  # "near <eof>" counts the line after the last newline
                        lua_line = min(lua_line, len(source.rstrip("\n").split("\n")))
                    at = src_line + lua_line - 1 if lua_line is not None else src_line
                    raise TreeError(f"entry '{entry_id}': Lua syntax error: {err}", shown, at)
        entry = Entry(entry_id, kind, meta, data)
        try:
            check_entry(entry)
        except EntryError as exc:
            raise TreeError(str(exc), shown, line) from None
        out.append((entry, (shown, line)))
    return out


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve().parent))
        except ValueError:
            pass
    return str(path)


def load_tree(root: Path) -> list[Entry]:
    """Load every ``_index.yaml`` under ``root`` (or the file itself); :class:`TreeError` on any fault."""
    return [e for e, _ in load_tree_located(root)]


def load_tree_located(root: Path) -> list[tuple[Entry, tuple[str, int]]]:
    """:func:`load_tree`, with the (file, line) where each entry is declared, for later errors."""
    root = Path(root)
    if root.is_file():
        files = [root]
        display_root = root.parent
    elif root.is_dir():
        files = sorted(root.rglob(INDEX))
        display_root = root
        if not files:
            raise TreeError(f"no {INDEX} found under this directory", str(root))
    else:
        raise TreeError("no such file or directory", str(root))
    seen: dict[str, tuple[str, int]] = {}
    entries: list[tuple[Entry, tuple[str, int]]] = []
    for f in files:
        for e, where in _load_index(f, display_root):
            if e.id in seen:
                first = seen[e.id]
                raise TreeError(f"duplicate entry ID '{e.id}' (first defined at {first[0]}:{first[1]})",
                                where[0], where[1])
            seen[e.id] = where
            entries.append((e, where))
    return entries


def load_text(text: str, name: str, base: str | Path | None = None) -> list[Entry]:
    """Parse one ``_index.yaml`` document given as ``text`` (a notebook cell, say) into entries.

    ``name`` stands for the file in errors (``TreeError`` reads ``name:line: ...``); ``file://`` sources
    are read relative to ``base`` (default: the working directory). Duplicate IDs are refused.
    """
    seen: dict[str, int] = {}
    entries: list[Entry] = []
    for e, (shown, line) in _parse_index(text, name, Path(base) if base is not None else Path.cwd(), None):
        if e.id in seen:
            raise TreeError(f"duplicate entry ID '{e.id}' (first defined at line {seen[e.id]})", shown, line)
        seen[e.id] = line
        entries.append(e)
    return entries


class _BlockDumper(yaml.SafeDumper):
    """A SafeDumper that writes multi-line strings (Lua sources) as ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _represent_str)


def dump_yaml(value: Any) -> str:
    """``value`` as block-style YAML, keys in their order, multi-line strings as ``|`` blocks."""
    return yaml.dump(value, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _in_namespaces(entry_ns: str, namespaces: Iterable[str] | None) -> bool:
    if namespaces is None:
        return True
    return any(entry_ns == ns or entry_ns.startswith(ns + ".") for ns in namespaces)


def export_tree(entries: Iterable[Entry], directory: str | Path,
                namespaces: Iterable[str] | None = None) -> list[Path]:
    """Write ``entries`` as a tree :func:`load_tree` reads back to the same entries; returns the files.

    One folder per namespace (``directory/app.workers/_index.yaml``); a Lua entry's string ``source``
    goes to ``<name>.lua`` beside the index as ``source: file://<name>.lua``; ``meta.source_path`` is left
    out (loading sets it again). ``namespaces`` keeps the entries of those namespaces and the namespaces
    under them. Raises :class:`TreeError` (and writes nothing) when an entry cannot be written as YAML or
    ``directory`` already holds an ``_index.yaml`` (it would be loaded with the export).
    """
    root = Path(directory)
    ns_list = list(namespaces) if namespaces is not None else None
    chosen = sorted((e for e in entries if _in_namespaces(e.namespace, ns_list)), key=lambda e: e.id)
    if root.exists() and not root.is_dir():
        raise TreeError("exists and is not a directory; choose a new directory", str(root))
    if root.is_dir() and any(root.rglob(INDEX)):
        raise TreeError(f"already holds {INDEX} files; export into a new or empty directory", str(root))
    # build everything first, so a bad entry writes nothing
    files: dict[Path, str] = {}
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for e in chosen:
        clash = [k for k in ("name", "kind", "meta") if k in e.data]
        if clash:
            raise TreeError(f"entry '{e.id}': data.{clash[0]} cannot be written in a tree (the key `{clash[0]}:` "
                            "belongs to the entry itself); rename that data key", str(root))
        folder = root / e.namespace
        item: dict[str, Any] = {"name": e.name, "kind": e.kind}
        meta = {k: v for k, v in e.meta.items() if k != "source_path"}
        if meta:
            item["meta"] = meta
        data = dict(e.data)
        if e.kind in LUA_KINDS and isinstance(data.get("source"), str):
            files[folder / f"{e.name}.lua"] = data["source"]
            data["source"] = f"file://{e.name}.lua"
        item.update(data)
        by_ns.setdefault(e.namespace, []).append(item)
    for ns, items in by_ns.items():
        try:
            text = dump_yaml({"version": "1.0", "namespace": ns, "entries": items})
        except yaml.YAMLError as exc:
            raise TreeError(f"namespace {ns}: cannot write an entry as YAML: {exc}", str(root)) from None
        files[root / ns / INDEX] = text
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return sorted(files)
