"""What tests/test_supervisor.py and tests/test_services.py share: reading the probe mailbox the
supervised processes report to, barriers instead of sleeps, and looking nodes up in the tree."""

from __future__ import annotations

from wippy.runtime import Mailbox, Node
from wippy.runtime.supervisor_tree import TreeNode


def seen(mb: Mailbox, n: int) -> list[tuple[str, str]]:
    """The next ``n`` reports: (topic, tag)."""
    out = []
    for _ in range(n):
        m = mb.receive(5)
        out.append((m.topic, m.payload["tag"]))
    return out


def settle(node: Node) -> None:
    """Let the supervision and the host finish what is queued (barriers, not sleeps)."""
    node.supervision.sync()
    for _ in range(2):
        node.call(lambda ctx: None)


def quiet(node: Node, mb: Mailbox) -> None:
    """Nothing more was reported."""
    settle(node)
    extra = mb.receive_nowait()
    assert extra is None, f"unexpected report {extra}"


def node_of(node: Node, node_id: str) -> TreeNode:
    found = node.supervision.tree().find(node_id)
    assert found is not None, node.supervision.text()
    return found


def pid_of(node: Node, node_id: str) -> str:
    pid = node_of(node, node_id).pid
    assert pid is not None, node.supervision.text()
    return pid
