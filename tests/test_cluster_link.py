"""The direct node-to-node links (runtime/cluster_link.py): two and three Links in one process on
loopback, and one across two OS processes.

What is checked: every payload kind comes back exactly; each sender's frames arrive complete and in order
under load, in batches; a peer that binds after it was connected still gets everything; a slow peer
holds frames back without losing or reordering them; forget() drops the queued frames and counts them;
a payload that cannot be sent raises on the caller's thread and nothing is sent; garbage on the endpoint
is counted and the link goes on; close() is prompt and idempotent; a callback that raises does not stop
the I/O thread. Waits are on conditions with generous timeouts, never on a wall-clock window.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from wippy.runtime import WippyError, wire
from wippy.runtime.cluster_link import LINK_VERSION, Frame, LinkError, Links

pytestmark = [pytest.mark.timeout(60)]

WAIT = 30.0   # seconds: generous, only a broken link takes that long


class Inbox:
    """An on_frames callback that keeps every frame as (from_node, kind, sender, target, payload)."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, str, str, str, Any]] = []
        self.calls = 0
        self.cond = threading.Condition()

    def __call__(self, from_node: str, frames: list[Frame]) -> None:
        with self.cond:
            self.calls += 1
            self.frames.extend((from_node, *f) for f in frames)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.frames) >= n, timeout)

    def wait_until(self, pred: Callable[[list[tuple[str, str, str, str, Any]]], bool],
                   timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.frames), timeout)


def eventually(pred: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` passes (for counters that have no event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def make() -> Iterator[Callable[..., Links]]:
    """make(node_id, on_frames=None, start=True, **kw): a Links, closed after the test."""
    made: list[Links] = []

    def factory(node_id: str, on_frames: Callable[[str, list[Frame]], None] | None = None, *,
                start: bool = True, **kw: Any) -> Links:
        links = Links(node_id, on_frames or (lambda f, fr: None), **kw)
        made.append(links)
        if start:
            links.start()
        return links

    yield factory
    for links in made:
        links.close(linger=0)


def same(a: Any, b: Any) -> bool:
    """Equal with exactly the same types (NaN equal to NaN, the sign of zeros and dict order kept)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    return bool(a == b)


# --------------------------------------------------------------------------------------- round trips


PAYLOADS: list[Any] = [
    None, True, False, 0, 1, -1, 127, 128, -17, 2**63 - 1, -(2**63), 1.5, -0.0, math.inf, -math.inf,
    math.nan, "", "ping", "é中😀", "x" * 300, "\udc80", b"", b"\x00\xff" * 100, [], {}, [1, "a", None, [2.0]],
    {"topic": "ping", "n": 1}, {1: "int", 2.5: "float", b"k": "bytes", False: "bool", "s": {"deep": [{}]}},
    {"none": None, "list": list(range(40)), "dict": {str(i): i for i in range(20)}}, b"\x01" * 70_000,
]


def test_every_payload_kind_round_trips(make: Callable[..., Links]) -> None:
    inbox = Inbox()
    b = make("b", inbox)
    a = make("a")
    a.connect("b", b.address)
    for i, p in enumerate(PAYLOADS):
        a.send("b", "deliver", f"<a@{i}>", "<b@1.2>", p)
    a.send("b", "event", "sénder", "tärget", (1, (2, 3)))     # a tuple goes as a list
    assert inbox.wait_for(len(PAYLOADS) + 1)
    got = inbox.frames
    for i, p in enumerate(PAYLOADS):
        frm, kind, sender, target, payload = got[i]
        assert (frm, kind, sender, target) == ("a", "deliver", f"<a@{i}>", "<b@1.2>")
        assert same(payload, p), (i, p, payload)
    assert got[-1] == ("a", "event", "sénder", "tärget", [1, [2, 3]])
    assert a.peers() == {"b": b.address}
    s = a.stats()
    assert s["frames_sent"] == len(PAYLOADS) + 1 and s["queued"] == 0 and s["dropped"] == 0
    assert b.stats()["frames_received"] == len(PAYLOADS) + 1
    assert b.stats()["bytes_received"] == s["bytes_sent"]


def test_three_nodes_each_send_to_the_others(make: Callable[..., Links]) -> None:
    names = ["n1", "n2", "n3"]
    inboxes = {n: Inbox() for n in names}
    links = {n: make(n, inboxes[n]) for n in names}
    for n in names:
        for m in names:
            if m != n:
                links[n].connect(m, links[m].address)
    kinds = ["deliver", "event", "control", "spawn", "reply"]
    for i in range(500):
        for n in names:
            for m in names:
                if m != n:
                    links[n].send(m, kinds[i % 5], f"<{n}@{i % 3}>", f"<{m}@0>", {"from": n, "i": i})
    for n in names:
        inbox = inboxes[n]
        assert inbox.wait_for(1000)
        for m in names:
            if m == n:
                continue
            mine = [f for f in inbox.frames if f[0] == m]
            assert [f[4] for f in mine] == [{"from": m, "i": i} for i in range(500)]
            assert [f[1] for f in mine] == [kinds[i % 5] for i in range(500)]
            assert all(f[3] == f"<{n}@0>" for f in mine)


def test_frames_in_one_batch_are_the_documented_layout(make: Callable[..., Links]) -> None:
    """A batch built by hand from the module docstring (one wire batch, a header frame first) is read
    like a node's."""
    inbox = Inbox()
    b = make("b", inbox)
    with zmq.Context() as ctx, ctx.socket(zmq.PUSH) as push:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(b.address)
        push.send(wire.encode_batch([("by-hand", "wippy-link", [LINK_VERSION, ["deliver", "reply"]]),
                                     ("<x@1>", "<b@2>", {"n": 1}), ("<x@1>", "<b@3>", [b"z"])]))
        assert inbox.wait_for(2)
    assert inbox.frames == [("by-hand", "deliver", "<x@1>", "<b@2>", {"n": 1}),
                            ("by-hand", "reply", "<x@1>", "<b@3>", [b"z"])]
    assert inbox.calls == 1 and b.stats()["batches_received"] == 1


# --------------------------------------------------------------------------------------- order, batching


def test_per_sender_order_under_load_and_batching(make: Callable[..., Links]) -> None:
    per_sender, senders = 20_000, 3
    inbox = Inbox()
    b = make("b", inbox)
    a = make("a")
    a.connect("b", b.address)
    start = threading.Barrier(senders)

    def sender(k: int) -> None:
        start.wait()
        for i in range(per_sender):
            a.send("b", "deliver", f"<a@{k}>", "<b@1>", {"topic": "ping", "n": i})

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert inbox.wait_for(senders * per_sender)
    seqs: dict[str, list[int]] = {}
    for _frm, _kind, snd, _tgt, payload in inbox.frames:
        seqs.setdefault(snd, []).append(payload["n"])
    assert sorted(seqs) == [f"<a@{k}>" for k in range(senders)]
    for seq in seqs.values():
        assert seq == list(range(per_sender))       # complete and strictly increasing
    s = a.stats()
    assert s["frames_sent"] == senders * per_sender
    assert s["batches_sent"] < s["frames_sent"]     # batching happened
    assert b.stats()["batches_received"] == s["batches_sent"] == inbox.calls


def test_a_peer_that_binds_later_gets_everything(make: Callable[..., Links]) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    a = make("a", max_batch=16)
    a.connect("b", address)                         # nobody listens there yet
    n = 5000
    for i in range(n):
        a.send("b", "deliver", "<a@1>", "<b@1>", i)
    inbox = Inbox()
    b = make("b", inbox, bind=address)              # zmq reconnects and flushes
    assert b.address == address
    assert inbox.wait_for(n)
    assert [f[4] for f in inbox.frames] == list(range(n))
    assert eventually(lambda: a.stats()["queued"] == 0)


def test_a_slow_peer_holds_frames_back_in_order(make: Callable[..., Links]) -> None:
    """The receiver's I/O thread is held: zmq's queues and TCP fill, then the outbox holds the rest."""
    release = threading.Event()
    inbox = Inbox()

    def slow(from_node: str, frames: list[Frame]) -> None:
        release.wait(WAIT)
        inbox(from_node, frames)

    b = make("b", slow, hwm=2)
    a = make("a", max_batch=4, hwm=2)
    a.connect("b", b.address)
    n, blob = 2500, b"x" * 16384                    # 40 MiB: more than TCP buffers take (36 MiB here)
    for i in range(n):
        a.send("b", "deliver", "<a@1>", "<b@1>", [i, blob])
    assert eventually(lambda: a.stats()["queued"] > 0 and a.stats()["frames_sent"] > 0)
    time.sleep(0.2)                                 # however long it is held, the held peer takes no more
    held = a.stats()
    assert 0 < held["frames_sent"] < n and held["queued"] > 0 and held["dropped"] == 0
    release.set()
    assert inbox.wait_for(n)
    assert [f[4][0] for f in inbox.frames] == list(range(n))
    assert all(f[4][1] == blob for f in inbox.frames)
    # the sender counts a batch once zmq has taken it, which may be after the receiver has it
    assert eventually(lambda: a.stats()["frames_sent"] == n and a.stats()["queued"] == 0), a.stats()
    assert a.stats()["dropped"] == 0


# --------------------------------------------------------------------------------------- forget, refusals


def test_forget_drops_queued_frames_and_counts_them(make: Callable[..., Links]) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    a = make("a", max_batch=1, hwm=1)
    a.connect("b", address)                         # nobody listens: frames pile up
    n = 500
    for i in range(n):
        a.send("b", "deliver", "<a@1>", "<b@1>", i)
    dropped = a.forget("b")
    s = a.stats()
    assert dropped > 0
    assert s["frames_sent"] + dropped == n          # every frame was handed to zmq or dropped
    assert s["dropped"] == dropped and s["queued"] == 0
    assert a.peers() == {}
    assert a.forget("b") == 0                       # unknown now: nothing to drop
    with pytest.raises(LinkError, match=r"no link to 'b'.*connect\('b', address\)"):
        a.send("b", "deliver", "<a@1>", "<b@1>", "after")
    inbox = Inbox()
    make("b", inbox, bind=address)
    a.connect("b", address)                         # a fresh socket: none of the old frames
    a.send("b", "deliver", "<a@1>", "<b@1>", "after")
    a.send("b", "deliver", "<a@1>", "<b@1>", "last")
    assert inbox.wait_until(lambda fs: any(f[4] == "last" for f in fs))
    assert [f[4] for f in inbox.frames] == ["after", "last"]


def test_forget_before_start_and_send_before_start(make: Callable[..., Links]) -> None:
    inbox = Inbox()
    b = make("b", inbox)
    a = make("a", start=False)
    a.connect("b", b.address)
    a.connect("c", "tcp://127.0.0.1:1")
    a.send("b", "deliver", "<a@1>", "<b@1>", "queued before start")
    a.send("c", "deliver", "<a@1>", "<c@1>", 1)
    assert a.stats()["queued"] == 2
    assert a.forget("c") == 1
    a.start()
    assert inbox.wait_for(1)
    assert inbox.frames[0][4] == "queued before start"


def test_a_payload_that_cannot_be_sent_raises_on_the_caller_and_nothing_is_sent(
        make: Callable[..., Links]) -> None:
    inbox = Inbox()
    b = make("b", inbox)
    a = make("a")
    a.connect("b", b.address)
    caught: list[BaseException] = []

    def bad_send() -> None:
        try:
            a.send("b", "deliver", "<a@1>", "<b@7>", {"ok": 1, "f": lambda: 1})
        except LinkError as e:
            caught.append(e)

    t = threading.Thread(target=bad_send)
    t.start()
    t.join(WAIT)
    assert len(caught) == 1
    e = caught[0]
    assert isinstance(e, LinkError) and isinstance(e, WippyError)
    assert e.path == "$.f"
    assert isinstance(e.__cause__, wire.WireError)
    assert "<b@7>" in str(e) and "$.f" in str(e) and "plain data" in str(e) and "nothing was sent" in str(e)
    with pytest.raises(LinkError, match="outside the signed 64-bit range"):
        a.send("b", "deliver", "<a@1>", "<b@1>", [1, 2**64])
    with pytest.raises(LinkError, match="the sender is int"):
        a.send("b", "deliver", 5, "<b@1>", None)  # type: ignore[arg-type]
    with pytest.raises(LinkError, match="the kind is list"):
        a.send("b", ["deliver"], "<a@1>", "<b@1>", None)  # type: ignore[arg-type]
    with pytest.raises(LinkError, match=r"no link to 'zz' \(known peers: b\)"):
        a.send("zz", "deliver", "<a@1>", "<b@1>", None)
    assert a.stats()["queued"] == 0
    a.send("b", "deliver", "<a@1>", "<b@1>", "good")
    assert inbox.wait_for(1)
    assert eventually(lambda: a.stats()["frames_sent"] == 1)
    assert [f[4] for f in inbox.frames] == ["good"]


def test_bad_addresses_raise_naming_them(make: Callable[..., Links]) -> None:
    a = make("a")
    with pytest.raises(LinkError, match=r"node 'b' cannot bind 'tcp://127\.0\.0\.1:\d+'.*free port"):
        make("b", bind=a.address)
    with pytest.raises(LinkError, match="cannot connect to peer 'x' at 'nonsense'"):
        a.connect("x", "nonsense")
    with pytest.raises(LinkError, match="cannot connect to peer 'x' at 'bogus://h:1'"):
        a.connect("x", "bogus://h:1")
    assert a.peers() == {}
    with pytest.raises(LinkError, match="not started"):
        _ = Links("c", lambda f, fr: None).address


def test_connect_to_a_new_address_moves_the_link(make: Callable[..., Links]) -> None:
    """A restarted peer on another port: connect() with the new address, frames go there."""
    first, second = Inbox(), Inbox()
    b1 = make("b", first)
    a = make("a")
    a.connect("b", b1.address)
    a.send("b", "deliver", "<a@1>", "<b@1>", 1)
    assert first.wait_for(1)
    b1.close()
    b2 = make("b", second)
    a.connect("b", b2.address)
    a.connect("b", b2.address)                      # the same address again: nothing changes
    assert a.peers() == {"b": b2.address}
    a.send("b", "deliver", "<a@1>", "<b@1>", 2)
    assert second.wait_for(1)
    assert [f[4] for f in second.frames] == [2]


# --------------------------------------------------------------------------------------- robustness


def test_garbage_is_counted_reported_and_the_link_keeps_working(make: Callable[..., Links]) -> None:
    errors: list[str] = []
    inbox = Inbox()
    b = make("b", inbox, on_error=errors.append)
    header = ("raw", "wippy-link", [LINK_VERSION, ["deliver"]])
    good = wire.encode_batch([header, ("<r@1>", "<b@1>", "after garbage")])
    garbage = [
        [b"hello"],                                                          # not a wire batch
        [good, good],                                                        # two parts
        [wire.encode_batch([("raw", "wippy-link", [99, ["deliver"]]), ("<r@1>", "<b@1>", 1)])],  # version
        [wire.encode_batch([header])],                                       # one kind, no frame
        [good[:-3]],                                                         # truncated
        [wire.encode_batch([("<r@1>", "<b@1>", "no header")])],              # a batch, but not a link's
    ]
    with zmq.Context() as ctx, ctx.socket(zmq.PUSH) as push:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(b.address)
        for parts in garbage:
            push.send_multipart(parts)
        push.send(good)                              # the same pipe: after all the garbage
        assert inbox.wait_for(1)
    assert inbox.frames == [("raw", "deliver", "<r@1>", "<b@1>", "after garbage")]
    s = b.stats()
    assert s["bad_batches"] == len(garbage) and s["batches_received"] == 1
    assert len(errors) == 3                          # reported at the 1st, 2nd and 4th
    assert "not a link batch" in errors[0] and "byte 0" in errors[0] and "same version" in errors[0]
    assert "2 parts" in errors[1] and "one kind for each of the 0 frames" in errors[2]   # the 3rd is not told
    a = make("a")
    a.connect("b", b.address)
    a.send("b", "deliver", "<a@1>", "<b@1>", "still works")
    assert inbox.wait_for(2)
    assert inbox.frames[-1][4] == "still works"


def test_a_batch_of_another_link_version_is_refused_saying_so(make: Callable[..., Links]) -> None:
    errors: list[str] = []
    inbox = Inbox()
    b = make("b", inbox, on_error=errors.append)
    with zmq.Context() as ctx, ctx.socket(zmq.PUSH) as push:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(b.address)
        push.send(wire.encode_batch([("old", "wippy-link", [99, ["deliver"]]), ("<o@1>", "<b@1>", 1)]))
        assert eventually(lambda: b.stats()["bad_batches"] == 1)
    assert len(errors) == 1
    assert "link format version 99, this node reads version 1" in errors[0]
    assert "run the same version on every node" in errors[0]
    assert inbox.frames == []


def test_a_callback_that_raises_does_not_stop_the_io_thread(make: Callable[..., Links]) -> None:
    errors: list[str] = []
    inbox = Inbox()

    def on_frames(from_node: str, frames: list[Frame]) -> None:
        if any(f[3] == "boom" for f in frames):
            raise RuntimeError("boom in the callback")
        inbox(from_node, frames)

    b = make("b", on_frames, on_error=errors.append)
    a = make("a")
    a.connect("b", b.address)
    a.send("b", "deliver", "<a@1>", "<b@1>", "boom")
    assert eventually(lambda: b.stats()["callback_errors"] == 1)
    a.send("b", "deliver", "<a@1>", "<b@1>", "fine")
    assert inbox.wait_for(1)
    assert inbox.frames[0][4] == "fine"
    assert len(errors) == 1 and "RuntimeError: boom in the callback" in errors[0]
    assert b.stats()["frames_received"] == 2


def test_the_callback_may_send_connect_and_close(make: Callable[..., Links]) -> None:
    inbox = Inbox()
    a = make("a", inbox)
    closed = threading.Event()

    def echo(from_node: str, frames: list[Frame]) -> None:
        for kind, sender, target, payload in frames:
            if kind == "control":
                b.close()                           # from the I/O thread: returns at once
                closed.set()
                return
            b.connect(from_node, a.address)
            b.send(from_node, "reply", target, sender, payload)

    b = make("b", echo)
    a.connect("b", b.address)
    for i in range(100):
        a.send("b", "deliver", "<a@1>", "<b@1>", i)
    assert inbox.wait_for(100)
    assert [(f[1], f[2], f[3], f[4]) for f in inbox.frames] == [("reply", "<b@1>", "<a@1>", i) for i in range(100)]
    a.send("b", "control", "<a@1>", "<b@1>", "stop")
    assert closed.wait(WAIT)
    assert eventually(lambda: not any(t.name == "wippy-link-b" for t in threading.enumerate()))
    with pytest.raises(LinkError, match="closed"):
        b.send("a", "deliver", "<b@1>", "<a@1>", 1)


def test_close_is_prompt_and_idempotent(make: Callable[..., Links]) -> None:
    a = make("a", hwm=1, max_batch=1)
    a.connect("b", f"tcp://127.0.0.1:{free_port()}")   # nobody listens: frames stay queued
    for i in range(1000):
        a.send("b", "deliver", "<a@1>", "<b@1>", i)
    t0 = time.monotonic()
    a.close(linger=0.2)
    assert time.monotonic() - t0 < 10               # about the linger, with room for a busy machine
    t0 = time.monotonic()
    a.close()
    assert time.monotonic() - t0 < 1
    s = a.stats()
    assert s["frames_sent"] + s["dropped"] == 1000 and s["queued"] == 0
    assert not any(t.name == "wippy-link-a" for t in threading.enumerate())
    with pytest.raises(LinkError, match="closed"):
        a.send("b", "deliver", "<a@1>", "<b@1>", 1)
    with pytest.raises(LinkError, match="closed"):
        a.connect("c", "tcp://127.0.0.1:1")
    with pytest.raises(LinkError, match="start"):
        a.start()
    assert a.forget("b") == 0
    never = Links("n", lambda f, fr: None)          # never started
    never.close()
    never.close()


def test_close_delivers_what_was_queued(make: Callable[..., Links]) -> None:
    inbox = Inbox()
    b = make("b", inbox)
    a = make("a")
    a.connect("b", b.address)
    for i in range(3000):
        a.send("b", "deliver", "<a@1>", "<b@1>", i)
    a.close(linger=WAIT)                            # returns once everything has left
    assert inbox.wait_for(3000)
    assert [f[4] for f in inbox.frames] == list(range(3000))
    assert a.stats()["dropped"] == 0


# --------------------------------------------------------------------------------------- two OS processes


CHILD = r"""
import sys, threading
from wippy.runtime.cluster_link import Links

done = threading.Event()

def on_frames(from_node, frames):
    for kind, sender, target, payload in frames:
        if kind == "control" and payload == "stop":
            done.set()
        else:
            links.send(from_node, "reply", target, sender, payload)

links = Links("child", on_frames)
address = links.start()
links.connect("parent", sys.argv[1])
print(address, flush=True)
ok = done.wait(50)
links.close()
print("stats", links.stats()["frames_received"], flush=True)
sys.exit(0 if ok else 3)
"""


def test_across_two_os_processes(make: Callable[..., Links]) -> None:
    inbox = Inbox()
    parent = make("parent", inbox)
    child = subprocess.Popen([sys.executable, "-c", CHILD, parent.address], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        address = child.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:"), (address, child.stderr.read() if child.stderr else "")
        parent.connect("child", address)
        n = 2000
        for i in range(n):
            parent.send("child", "deliver", "<parent@1>", f"<child@{i % 4}>", {"n": i, "b": b"\x00" * (i % 50)})
        assert inbox.wait_for(n)
        assert [f[4] for f in inbox.frames] == [{"n": i, "b": b"\x00" * (i % 50)} for i in range(n)]
        assert all(f[:4] == ("child", "reply", f"<child@{i % 4}>", "<parent@1>") for i, f in enumerate(inbox.frames))
        parent.send("child", "control", "<parent@1>", "<child@0>", "stop")
        out, err = child.communicate(timeout=WAIT)
        assert child.returncode == 0, err
        assert f"stats {n + 1}" in out
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
