"""The ``wippy`` command line: ``wippy run DIR [--entry ID] [--host HOST] [--data-dir D] [--no-watch]
[--cluster URL [--node NAME] [--cluster-ttl S]]``.

With ``--cluster`` the node joins the cluster whose membership is in that PostgreSQL database, under
``--node NAME`` or the name kept in its data directory (``node-name``; a new one the first time), so a
node restarted on the same directory rejoins as itself; its durable workflows are kept in that database
too (unless ``$WIPPY_WORKFLOW_STORE`` names another store), so another node claims them if it dies.

Without ``--entry`` the tree is watched (:class:`~.watch.TreeWatcher`): each edit of a file under it is
applied as one registry version, or refused whole with file and line, reported on stderr;
``--no-watch`` turns that off.

Runs on the main thread; the node's hosts run on their own threads. Lua ``print`` goes to stdout, flushed
line by line. Exit status: 0 when the entry returns normally (or, without ``--entry``, after a clean
Ctrl-C shutdown), 1 when the entry ends abnormally (the reason on stderr), 2 when the tree or the
arguments are wrong (a short message naming file and line, never a Python traceback), 130 when Ctrl-C
interrupts a running ``--entry``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .errors import EntryError, HostError, ProcessError, Timeout, WippyError
from .node import DEFAULT_HOST, Node, check_node_name
from .watch import TreeWatcher

__all__ = ["main"]

GRACE = 5.0
CLUSTER_TTL = 5.0   # cluster_ttl's default (API.md), also the workflow leases' length in a cluster
NODE_NAME_FILE = "node-name"   # in the data directory: the node's cluster name, kept across restarts


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"wippy: {message}\n")
    sys.stderr.flush()
    return code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wippy", description="Run Wippy apps: Lua processes from a YAML tree.")
    p.add_argument("--version", action="version", version="wippy 0.1.0")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="load a tree, start what auto-starts, run an entry (or until Ctrl-C)")
    run.add_argument("dir", help="the tree: a directory of _index.yaml files (or one _index.yaml)")
    run.add_argument("--entry", help="the process.lua entry to run, e.g. app:main")
    run.add_argument("--host", default=DEFAULT_HOST, help="the host the entry runs on (default app:processes)")
    run.add_argument("--data-dir", help="the node's data directory (default $WIPPY_DATA_DIR or ./.wippy)")
    run.add_argument("--grace", type=float, default=GRACE, help="seconds cancelled processes get on Ctrl-C")
    run.add_argument("--cluster", metavar="URL",
                     help="join the cluster whose membership is in this PostgreSQL database (postgresql://...)")
    run.add_argument("--node", metavar="NAME",
                     help="this node's name in the cluster (default: the one kept in the data directory, "
                          "else a new one); its PIDs are {NAME@host|id}")
    run.add_argument("--cluster-ttl", type=float, default=None, metavar="SECONDS",
                     help="seconds without a heartbeat after which a node is down (default 5)")
    run.add_argument("--no-watch", action="store_true",
                     help="without --entry: do not apply edits of the tree while running (watched by default)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wippy`` console script (main thread)."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    return 2  # pragma: no cover - argparse requires a command


def _data_dir(arg: str | None) -> Path:
    d = Path(arg or os.environ.get("WIPPY_DATA_DIR") or ".wippy")
    return d


def node_name_for(data_dir: Path, wanted: str | None) -> str:
    """The cluster name of the node on ``data_dir``: ``wanted`` (then kept there), else the one kept
    there (a node restarted on the same directory rejoins under its name), else a new one."""
    kept = data_dir / NODE_NAME_FILE
    if wanted is None and kept.is_file():
        return kept.read_text().strip()
    name = wanted or f"{socket.gethostname().split('.')[0][:40] or 'node'}-{secrets.token_hex(3)}"
    check_node_name(name)
    data_dir.mkdir(parents=True, exist_ok=True)
    kept.write_text(name + "\n")
    return name


def run(args: argparse.Namespace) -> int:
    tree = Path(args.dir)
    data_dir = _data_dir(args.data_dir)
    try:
        name = node_name_for(data_dir, args.node) if args.cluster else None
        # in a cluster the workflows live in its database too (unless $WIPPY_WORKFLOW_STORE names
        # another store), with leases as long as the cluster's ttl: a dead node's workflows are claimed
        store = args.cluster if args.cluster and not os.environ.get("WIPPY_WORKFLOW_STORE") else None
        ttl = (args.cluster_ttl if args.cluster_ttl is not None else CLUSTER_TTL) if store else None
        node = Node(data_dir=data_dir, node_name=name, workflow_store=store, workflow_ttl=ttl)
    except WippyError as exc:
        return _fail(str(exc))
    try:
        node.load(tree, replace=True)   # the tree is the app: a stored registry follows it
    except WippyError as exc:
        return _fail(f"cannot load {tree}: {exc}")
    try:
        if args.cluster:   # joined first: what starts with the node (services) is already a member
            cluster = node.join_cluster(args.cluster, ttl=args.cluster_ttl)
            sys.stderr.write(f"wippy: node {name} joined the cluster at {cluster.status().url} "
                             f"(link {cluster.address}; up: {', '.join(cluster.up()) or 'no other node'})\n")
            sys.stderr.flush()
        node.start()
        for h in list(node.hosts.values()):
            if not h.running:
                h.start()
    except WippyError as exc:
        node.stop(grace=1.0)
        return _fail(str(exc))
    if node.supervision.problems:
        # a required service (or an auto-started supervisor) could not start: the app cannot run
        problems = "; ".join(node.supervision.problems)
        node.stop(grace=1.0)
        return _fail(f"cannot start {tree}: {problems}", 1)

    stop = threading.Event()
    interrupted = {"n": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        interrupted["n"] += 1
        if interrupted["n"] > 1:
            # a second Ctrl-C: stop waiting for the grace period
            os._exit(130)
        stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.entry:
            return _run_entry(node, args.entry, args.host, stop, args.grace)
        sys.stderr.write(f"wippy: running {tree} ({len(node.entries.ids())} entries); Ctrl-C to stop\n")
        sys.stderr.flush()
        watcher = None if args.no_watch else _watch(node, tree)
        try:
            while not stop.wait(0.2):
                pass
        finally:
            if watcher is not None:
                watcher.stop()
        sys.stderr.write(f"wippy: stopping (cancel, {args.grace:g}s grace, terminate)\n")
        node.stop(grace=args.grace)
        return 0
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _watch(node: Node, tree: Path) -> TreeWatcher | None:
    """Watch ``tree``: each edit is one registry version, reported on stderr (watcher's thread)."""

    def report(kind: str, message: str) -> None:
        sys.stderr.write(f"wippy: watch: {message}\n" if kind == "applied" else f"wippy: watch: refused: {message}\n")
        sys.stderr.flush()

    watcher = TreeWatcher(node, tree, on_event=report)
    try:
        watcher.start()
    except (WippyError, OSError, ValueError, TypeError) as exc:
        _fail(f"not watching {tree}: {exc}", 0)
        return None
    sys.stderr.write(f"wippy: watching {tree}\n")
    sys.stderr.flush()
    return watcher


def _run_entry(node: Node, entry: str, host: str, stop: threading.Event, grace: float) -> int:
    mb = node.mailbox()
    try:
        pid = node.spawn(entry, host=host, monitor=mb, as_tree=True)
    except (EntryError, HostError, ProcessError) as exc:
        node.stop(grace=0.5)
        return _fail(str(exc))
    try:
        while True:
            try:
                ev = mb.wait_exit(pid, timeout=0.2)
                break
            except Timeout:
                if stop.is_set():
                    node.stop(grace=grace)
                    return _fail(f"interrupted; {entry} ({pid}) was cancelled", 130)
    finally:
        mb.close()
    node.stop(grace=grace)
    error = ev.result.get("error")
    if ev.reason in ("normal", "cancelled") and error is None:
        return 0
    return _fail(f"{entry} ({pid}) ended with {ev.reason}: {error}", 1)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
