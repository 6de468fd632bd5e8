"""``%cluster join URL [--name N] [--ttl S] | status | leave``: the kernel's node in a cluster (API.md "Several nodes").

    %cluster join postgresql://...   the kernel's node joins (restarting as a named node: PIDs {name@host|id})
    %cluster status                  every node the database knows: name, address, status, heartbeat age, load
    %cluster leave                   leave (the other nodes' watchers of this node's processes hear noconnection)

A node outside any cluster has PIDs ``{host|id}``; a cluster member's PIDs carry its name. So joining
restarts the kernel's node under a name (kept in its data directory, ``node-name``, so a restarted
kernel rejoins as itself): its processes stop, its registry (in the data directory) is kept. The new
node is ``node`` in the notebook from the next cell on.

Threads: the cell's thread. Wrong input raises UsageError.
"""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from wippy.runtime import WippyError
from wippy.runtime.cli import node_name_for

from .current import node, replace_node, start_node

__all__ = ["ClusterMagics", "ClusterText", "status_text"]


class ClusterText(str):
    """Lines shown bare (not quoted) as a cell's result."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def status_text(st: Any) -> str:
    """``%cluster status``: this node, then a table of the nodes the database knows."""
    lines = [f"node {st.node} at {st.address}, cluster {st.url}"
             + ("" if st.connected and st.accepting else "  (database unreachable: not taking new work)")]
    rows = [("node", "address", "status", "heartbeat", "load")]
    for n in st.nodes:
        me = " (this node)" if n.node_id == st.node else ""
        rows.append((n.node_id + me, n.address, n.status, f"{n.age:.1f}s ago", str(n.load)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    links = st.links
    if links:
        lines.append("links: " + ", ".join(f"{k} {v}" for k, v in sorted(links.items())))
    return "\n".join(lines)


@magics_class
class ClusterMagics(Magics):
    """``%cluster``."""

    @line_magic("cluster")
    def cluster(self, line: str) -> ClusterText:
        """``%cluster join URL [--name N] [--ttl S] | status | leave``."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%cluster: {exc}") from None
        if not words or words[0] not in ("join", "status", "leave"):
            raise UsageError("%cluster: usage: %cluster join URL [--name N] [--ttl SECONDS] | status | leave")
        sub, rest = words[0], words[1:]
        try:
            if sub == "join":
                return ClusterText(self._join(rest))
            n = node()
            if n.cluster is None:
                raise UsageError(f"%cluster {sub}: this node is in no cluster (%cluster join postgresql://...)")
            if rest:
                raise UsageError(f"%cluster {sub}: takes no arguments")
            if sub == "status":
                return ClusterText(status_text(n.cluster.status()))
            name = n.node_name
            n.leave_cluster()
            return ClusterText(f"node {name} left the cluster (its PIDs keep its name until the kernel restarts)")
        except WippyError as exc:
            raise UsageError(f"%cluster {sub}: {exc}") from None

    def _join(self, rest: list[str]) -> str:
        url, name, ttl = None, None, None
        it = iter(rest)
        for w in it:
            if w in ("--name", "--ttl"):
                value = next(it, None)
                if value is None:
                    raise UsageError(f"%cluster join: {w} needs a value")
                if w == "--name":
                    name = value
                else:
                    try:
                        ttl = float(value)
                    except ValueError:
                        raise UsageError(f"%cluster join: --ttl must be a number of seconds, got {value!r}") from None
            elif url is None and not w.startswith("--"):
                url = w
            else:
                raise UsageError(f"%cluster join: unexpected {w!r}; usage: %cluster join URL [--name N] [--ttl S]")
        if url is None:
            raise UsageError("%cluster join: usage: %cluster join postgresql://USER@HOST:PORT/DB [--name N]")
        old = node()
        if old.cluster is not None:
            raise UsageError(f"%cluster join: node {old.node_name} is already in a cluster; %cluster leave first")
        data_dir = old.data_dir
        assert data_dir is not None
        name = node_name_for(data_dir, name)
        if old.node_name != name:   # PIDs carry the node's name: a node of that name replaces this one
            old.stop(grace=1.0)
            try:
                new = start_node(name, cluster=url, ttl=ttl)
            except WippyError:
                replace_node(start_node(old.node_name))   # never leave the notebook without a node
                self.shell.push({"node": node()})
                raise
            replace_node(new)
            self.shell.push({"node": new})
            new.shell()
            cluster = new.cluster
        else:
            cluster = old.join_cluster(url, ttl=ttl)
        up = cluster.up()
        return (f"node {name} joined the cluster at {cluster.status().url} (link {cluster.address}); "
                f"other nodes up: {', '.join(up) or 'none yet'}")
