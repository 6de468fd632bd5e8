"""The direct node-to-node message links of a wippy cluster, over ZeroMQ.

Every node process has one :class:`Links`: one endpoint that the other nodes send to, and one outgoing
link per peer node. A frame is ``(kind, sender, target, payload)`` (:data:`Frame`): ``kind`` a short str
("deliver", "event", "control", "spawn", "reply"), ``sender`` and ``target`` PID strings or names,
``payload`` plain data, copied: it is encoded with :mod:`wippy.runtime.wire` on the caller's thread, so
the receiver gets a fresh value and a payload that cannot be sent is refused at once.

Sockets
=======

Each node binds one ``PULL`` socket (its address, returned by :meth:`Links.start`) and has one ``PUSH``
socket per peer, connected to that peer's address. ``PUSH`` to one ``PULL`` is a one-way pipe: a node
never answers on the link it received from, it sends on its own link to the sender (a request and its
reply travel on two links). ``PULL`` fair-queues between the peers that send to it.

Frame format
============

Frames travel in *batches*. A batch is ONE single-part ZeroMQ message, and that message is exactly one
wire batch (as ``wire.encode_batch`` writes it and ``wire.decode_batch`` reads it: 0x57,
``wire.FORMAT_VERSION``, a varint count, then per frame the sender and the target as varint length +
UTF-8, and the payload as one wire value). Its first frame is the *header*, the frames follow in order::

    frame 0 (header):  sender = the sending node_id, target = "wippy-link",
                       payload = [LINK_VERSION (1), [kind, kind, ...]]  one kind (str) per frame below
    frames 1..n:       sender PID, target PID or name, payload                  (n = the number of kinds)

So the batch's count is n + 1 and one ``decode_batch`` call reads the whole message, header included.
The layouts measured when this module was written (512 small frames a batch, loopback, one CPU): this
one; the same with each payload wrapped as ``[kind, payload]`` instead of the kinds in the header
(decoding about 2x slower: a list per frame); the header and the frames as two parts of one message (the
same decoding, but two zmq sends and receives a batch instead of one: ping-pong round trips about 20%
slower); and a multipart message with one part per frame (about 3x slower to send and
receive). Each frame's bytes are built once, by :meth:`Links.send`; the I/O thread only joins them.

Batching
========

:meth:`Links.send` appends the encoded frame to the peer's *outbox* and, if the I/O thread is idle,
wakes it. The I/O thread takes frames from the front of each outbox, at most ``max_batch`` frames and
about ``max_bytes`` bytes per batch (a frame larger than ``max_bytes`` goes alone), and sends each batch
as one message. Nothing waits to fill a batch: a lone frame leaves at once (one round trip of a request
is one batch each way); under load the frames that pile up while the I/O thread is busy (or waiting for
the GIL) leave together, so batches grow with the load by themselves.

Order
=====

Frames from one sender to one peer arrive in the order :meth:`Links.send` was called (calls made from
several threads at once are ordered by when each took the outbox lock), because: each
peer has ONE outbox (a FIFO, appended under a lock in call order), drained by ONE thread (the I/O
thread, front first, into batches sent in that order) onto ONE socket with ONE connection (a ZeroMQ pipe
keeps message order); the receiving node decodes the batches in arrival order on its one I/O thread and
calls ``on_frames`` once per batch with the frames in order. This holds across kinds too (an "event"
sent after a "deliver" arrives after it). Frames of different sending nodes interleave freely.

Backpressure, and a peer that is slow or gone
=============================================

Each socket holds at most ``hwm`` batches (``SNDHWM`` on a peer's socket, ``RCVHWM`` on the endpoint;
default 64 batches). ZeroMQ queues batches for a peer that is not connected yet (or reconnecting) up to
that mark too, so a node can connect first and the peer bind later. The I/O thread sends with
``NOBLOCK``: when a peer's socket is at its mark (a slow peer, a peer not up) the batch stays where it
is, the frames behind it stay in the outbox, and the I/O thread waits for the socket to become writable
(``POLLOUT``) while it goes on serving the other peers and receiving. Nothing is dropped and order is
kept; :meth:`Links.send` never blocks, and the outbox grows (``stats()["queued"]``) -- bounding it is
the node's business (it can watch ``queued`` and :meth:`Links.forget` a peer).

When a peer's process is gone, ZeroMQ reconnects every 0.1 s (backing off to 1 s) and the link keeps
queueing as above: nothing tells the sender, nothing raises. The node's failure detector (not this
module) declares the peer down and calls :meth:`Links.forget`, which closes the socket (what ZeroMQ held
for that peer is discarded) and drops the outbox, returning how many queued frames it dropped. If the
peer comes back at the same address before that, ZeroMQ reconnects and the queued batches go to the new
process. If it comes back at a new address, :meth:`Links.connect` with that address closes the old
socket (what it held is lost) and the outbox drains to the new one; call :meth:`Links.forget` first to
drop the frames meant for the old process instead. Frames already written to a connection that then
broke (in the kernel's buffers, or in ZeroMQ's queue of a socket closed by forget/connect/close) are
lost without being counted as dropped: the link delivers at most once, in order, with no duplicates, and
a gap only where a connection broke or the node forgot/re-addressed the peer.

Lifecycle
=========

A :class:`Links` holds nothing until :meth:`Links.start` (no socket, no thread): peers connected and
frames sent before it wait in the outboxes. :meth:`Links.forget` drops one peer (socket, outbox, the batch
its socket refused) and says how many frames that was. :meth:`Links.close` refuses further sends, hands
what is queued to the sockets, waits up to ``linger`` seconds for it to leave (ZeroMQ's ``LINGER``, so
close takes about ``linger`` only when a peer does not take its frames), counts what could not be handed
over as dropped, closes the sockets and ends the I/O thread; calling it again does nothing.

Bad input
=========

A message on the endpoint that is not a batch of this format and version (a foreign sender, garbage, a
node of another wippy version) is counted (``stats()["bad_batches"]``), reported through ``on_error``
(the 1st, 2nd, 4th, 8th, ... time: a flood does not flood the log) and ignored; so is a callback that
raises (``callback_errors``). Neither stops the I/O thread.

Threads:

* :meth:`Links.send`, :meth:`Links.connect`, :meth:`Links.forget`, :meth:`Links.stats`,
  :meth:`Links.peers` and :meth:`Links.close`: any thread. ``send`` encodes on the caller's thread, takes
  a short lock and never blocks on the network; ``connect`` and ``forget`` are run by the I/O thread and
  wait for it (when called on the I/O thread, e.g. from ``on_frames``, they run at once).
* the one I/O thread (``wippy-link-<node_id>``, started by :meth:`Links.start`) is the only thread that
  touches the ZeroMQ sockets (they are not thread-safe): it polls the endpoint, the wake socket and the
  sockets of stuck peers, sends the batches and receives. It calls ``on_frames(from_node_id, frames)``
  and ``on_error(message)``: they run ON the I/O thread and must not block (a node only puts the frames
  on its hosts' queues); while one runs, this node neither sends nor receives. They may call ``send``.
* ZeroMQ's own background I/O thread (one per :class:`Links`, in C) moves bytes between sockets and TCP.
"""

from __future__ import annotations

import collections
import itertools
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import zmq

from . import wire
from .errors import WippyError

__all__ = ["LINK_VERSION", "Frame", "LinkError", "Links"]

LINK_VERSION = 1

Frame = tuple[str, str, str, Any]
"""``(kind, sender, target, payload)``: a short kind ("deliver", "event", "control", "spawn", "reply"),
the sender's and the target's PID strings (or names), and the payload as plain data."""

_MAGIC = "wippy-link"
_COMMAND_WAIT = 30.0            # seconds connect/forget wait for the I/O thread before giving up
_RECV_BUDGET = 64               # messages received per loop turn before the outboxes get a turn
_SEND_BUDGET = 16               # batches sent per peer per loop turn before the endpoint gets a turn
_PREFIX_MAX = 4096              # cached (kind, sender, target) encodings before the cache is cleared

# The wire format's own bytes, taken from wire itself (see the "Format" of runtime/wire.py): the start
# of a batch (0x57, the format version), the tag of a short list (+ count 0..15) and of a long one.
_BATCH_HEAD = wire.encode_batch([])[:2]
_FIXLIST = wire.encode([])[0]
_LONGLIST = wire.encode([0] * 16)[0]

_NEW, _RUNNING, _CLOSING, _CLOSED = "new", "running", "closing", "closed"


class LinkError(WippyError):
    """A link cannot do what was asked: an address cannot be bound or connected, a frame cannot be
    encoded, a peer is unknown, or the links are closed. The message names the node, the peer or target
    and what to do. ``path`` is the payload path at fault (``$.a[3]``) when a payload was refused."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


def _uvarint(n: int) -> bytes:
    """``n`` as a wire varint (unsigned LEB128)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _list_head(n: int) -> bytes:
    """The wire header of a list of ``n`` items."""
    return bytes((_FIXLIST + n,)) if n < 16 else bytes((_LONGLIST,)) + _uvarint(n)


class _BadBatch(Exception):
    """Internal: a received message is not a batch of this format (the text says what is wrong)."""


class _Peer:
    """One peer node. ``address`` and ``outbox`` are shared (changed under ``Links._lock``; ``outbox`` is
    appended by senders and popped from the front by the I/O thread only); the rest is the I/O thread's."""

    __slots__ = ("address", "outbox", "pending", "pending_bytes", "pending_frames", "sock", "stuck")

    def __init__(self, address: str) -> None:
        self.address = address
        self.outbox: collections.deque[tuple[bytes, bytes]] = collections.deque()   # (kind, frame) bytes
        self.sock: zmq.Socket[bytes] | None = None
        self.pending: bytes | None = None           # the next batch, kept while the socket refuses it
        self.pending_frames = 0
        self.pending_bytes = 0
        self.stuck = False                          # registered for POLLOUT: waits for the socket


class _Command:
    """A call run by the I/O thread for another thread (connect, forget), and its outcome."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], int]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result = 0
        self.error: LinkError | None = None


class Links:
    """The message links of one node: one endpoint to receive on, one outgoing link per peer.

    ``on_frames(from_node_id, frames)`` is called on the I/O thread with each batch received, in order;
    it must not block (see "Threads:" in the module docstring). ``on_error(message)`` (default: a line
    on stderr) hears of bad batches and of callbacks that raised. ``bind`` is the endpoint's address
    (port 0: a free port; bind a specific interface, as a wildcard address cannot be dialled by peers).
    A batch holds at most ``max_batch`` frames and about ``max_bytes`` bytes; ``hwm`` is the number of
    batches a socket holds before the link keeps frames in its outbox (the module docstring says more).
    """

    def __init__(
        self,
        node_id: str,
        on_frames: Callable[[str, list[Frame]], None],
        *,
        bind: str = "tcp://127.0.0.1:0",
        max_batch: int = 512,
        max_bytes: int = 1 << 20,
        hwm: int = 64,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise LinkError(f"a node_id is a non-empty str, not {node_id!r}")
        for name, value in (("max_batch", max_batch), ("max_bytes", max_bytes), ("hwm", hwm)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LinkError(f"links of node {node_id!r}: {name} must be an int >= 1, not {value!r}")
        self._node_id = node_id
        self._on_frames = on_frames
        self._on_error = on_error
        self._bind = bind
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._hwm = hwm

        self._lock = threading.Lock()       # guards _state, _peers (the dict), _commands, _woken, the wake socket
        self._state = _NEW
        self._peers: dict[str, _Peer] = {}
        self._commands: collections.deque[_Command] = collections.deque()
        self._woken = False                 # a wake byte is on its way and the I/O thread has not seen it
        # made by start() (a Links never started holds no socket, no thread, nothing to close):
        self._wake_r: socket.socket         # the I/O thread polls it ...
        self._wake_w: socket.socket         # ... and other threads write a byte to it to wake it
        self._ctx: zmq.Context[zmq.Socket[bytes]]
        self._pull: zmq.Socket[bytes] | None = None
        self._address: str | None = None
        self._thread: threading.Thread | None = None
        self._io_ident = -1
        self._linger = 1.0
        self._prefixes: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
        self._poller = zmq.Poller()
        # the header frame's bytes up to its kinds: node_id, "wippy-link", [LINK_VERSION, [...
        self._head = (wire.encode_batch([(node_id, _MAGIC, None)])[len(_BATCH_HEAD) + 1:-1]
                      + _list_head(2) + wire.encode(LINK_VERSION))
        # counters: written by the I/O thread only (forget/close before start: the caller, under the lock)
        self._c = dict.fromkeys(
            ("frames_sent", "frames_received", "batches_sent", "batches_received", "bytes_sent",
             "bytes_received", "dropped", "bad_batches", "callback_errors", "send_errors", "internal_errors"), 0)

    # ----------------------------------------------------------------------------------- any thread

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def address(self) -> str:
        """The address the endpoint is bound to (what peers pass to :meth:`connect`), once started."""
        if self._address is None:
            raise LinkError(f"links of node {self._node_id!r} are not started: call start() first")
        return self._address

    def start(self) -> str:
        """Bind the endpoint, open the links of the peers known so far, start the I/O thread; return the
        address bound (with port 0, the port picked)."""
        with self._lock:
            if self._state is not _NEW:
                raise LinkError(f"links of node {self._node_id!r} are {self._state}: start() is called once")
            self._ctx = zmq.Context(io_threads=1)
            pull = self._ctx.socket(zmq.PULL)
            pull.setsockopt(zmq.RCVHWM, self._hwm)
            pull.setsockopt(zmq.LINGER, 0)
            where = self._bind
            if where.startswith("tcp://") and where.rsplit(":", 1)[-1] == "0":
                where = where[:-1] + "*"          # ZeroMQ picks a free port
            try:
                try:
                    pull.bind(where)
                except zmq.ZMQError as e:
                    raise LinkError(f"node {self._node_id!r} cannot bind {self._bind!r}: {e.strerror}; use a free "
                                    "port (port 0 picks one) on an address of this host, as tcp://HOST:PORT"
                                    ) from None
                for peer_id, peer in self._peers.items():
                    peer.sock = self._open(peer_id, peer.address)
            except LinkError:
                for p in self._peers.values():
                    if p.sock is not None:
                        p.sock.close(linger=0)
                        p.sock = None
                pull.close(linger=0)
                self._ctx.term()
                raise                           # still new: start() may be called again
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._pull = pull
            self._address = pull.getsockopt_string(zmq.LAST_ENDPOINT)
            self._poller.register(pull, zmq.POLLIN)
            self._poller.register(self._wake_r.fileno(), zmq.POLLIN)
            self._thread = threading.Thread(target=self._run, name=f"wippy-link-{self._node_id}", daemon=True)
            self._state = _RUNNING
            self._thread.start()
            return self._address

    def connect(self, peer_id: str, address: str) -> None:
        """Remember that peer ``peer_id`` listens at ``address`` (the address its :meth:`start` returned).

        Connecting a known peer to the same address does nothing; to a new address (a restarted node)
        closes the old socket and sends the outbox to the new one. ZeroMQ connects in the background and
        reconnects when the connection breaks: the peer need not be up yet.
        """
        if not isinstance(peer_id, str) or not peer_id:
            raise LinkError(f"node {self._node_id!r}: a peer_id is a non-empty str, not {peer_id!r}")
        if not isinstance(address, str) or "://" not in address:
            raise LinkError(f"node {self._node_id!r} cannot connect to peer {peer_id!r} at {address!r}: an address "
                            "is a str like 'tcp://10.0.0.2:5555' (what the peer's start() returned)")
        with self._lock:
            self._check_open()
            if self._state is _NEW:
                peer = self._peers.get(peer_id)
                if peer is None:
                    self._peers[peer_id] = _Peer(address)
                else:
                    peer.address = address
                return
        self._command(lambda: self._do_connect(peer_id, address))

    def forget(self, peer_id: str) -> int:
        """Drop peer ``peer_id``: close its socket and drop its queued frames; return how many were dropped
        (also counted in ``stats()["dropped"]``). Sending to it raises until it is connected again. An
        unknown peer (or closed links) drops nothing and returns 0."""
        with self._lock:
            if self._state is _CLOSING or self._state is _CLOSED:
                return 0
            if self._state is _NEW:
                peer = self._peers.pop(peer_id, None)
                n = len(peer.outbox) if peer is not None else 0
                self._c["dropped"] += n
                return n
        return self._command(lambda: self._do_forget(peer_id))

    def send(self, peer_id: str, kind: str, sender: str, target: str, payload: Any) -> None:
        """Queue the frame ``(kind, sender, target, payload)`` for peer ``peer_id``; never blocks.

        The payload is encoded now, on this thread: a payload that is not plain data (or a kind, sender or
        target that is not a str) raises :class:`LinkError` naming the path at fault, and nothing is sent.
        An unknown peer (not connected, or forgotten) and closed links raise :class:`LinkError` too.
        """
        try:
            kb, prefix = self._prefixes[(kind, sender, target)]
        except (KeyError, TypeError):
            kb, prefix = self._prefix(peer_id, kind, sender, target)
        try:
            body = wire.encode(payload)
        except wire.WireError as e:
            raise LinkError(f"node {self._node_id!r} cannot send the {kind!r} frame from {sender} to {target} "
                            f"(peer {peer_id!r}): {e}; nothing was sent", path=e.path) from e
        item = (kb, prefix + body)
        with self._lock:
            peer = self._peers.get(peer_id)
            if peer is None or self._state is not _RUNNING:
                self._check_open()
                if peer is None:
                    raise self._unknown(peer_id)
            peer.outbox.append(item)
            if not self._woken and self._state is _RUNNING and threading.get_ident() != self._io_ident:
                self._wake()

    def stats(self) -> dict[str, int]:
        """Counters since the links were made: frames_sent (handed to ZeroMQ), frames_received,
        batches_sent, batches_received, bytes_sent, bytes_received (whole messages, header frames included), dropped
        (by forget and close), bad_batches, callback_errors, send_errors (a socket error other than "full"),
        internal_errors (a bug in this module, reported through on_error) and queued (frames waiting in the
        outboxes now)."""
        with self._lock:
            queued = sum(len(p.outbox) + p.pending_frames for p in self._peers.values())
        out = dict(self._c)
        out["queued"] = queued
        return out

    def peers(self) -> dict[str, str]:
        """``{peer_id: address}`` of the peers connected (and not forgotten)."""
        with self._lock:
            return {pid: p.address for pid, p in self._peers.items()}

    def close(self, linger: float = 1.0) -> None:
        """Stop: hand what is queued to the sockets, give it up to ``linger`` seconds to leave, close.

        Frames that could not be handed over in that time are dropped (``stats()["dropped"]``). After
        close returns, ``on_frames`` is not called again and ``send`` raises. Idempotent. Called from
        ``on_frames`` (the I/O thread) it returns at once and the links close when the callback returns.
        """
        with self._lock:
            state = self._state
            if state is _NEW:
                self._state = _CLOSED
                self._c["dropped"] += sum(len(p.outbox) for p in self._peers.values())
                self._peers.clear()
            elif state is _RUNNING:
                self._state = _CLOSING
                self._linger = max(0.0, float(linger))
                self._wake()
        thread = self._thread
        if thread is None or threading.get_ident() == self._io_ident:
            return
        thread.join(self._linger + _COMMAND_WAIT)
        if thread.is_alive():
            raise LinkError(f"the link I/O thread of node {self._node_id!r} did not stop within "
                            f"{self._linger + _COMMAND_WAIT:g} s: an on_frames or on_error callback is blocking "
                            "(callbacks must only hand the frames on)")

    # ----------------------------------------------------------------------------------- helpers

    def _check_open(self) -> None:
        """Raise if the links are closing or closed (call with the lock held)."""
        if self._state is _CLOSING or self._state is _CLOSED:
            raise LinkError(f"links of node {self._node_id!r} are closed: nothing can be sent or connected")

    def _unknown(self, peer_id: str) -> LinkError:
        known = ", ".join(sorted(self._peers)) or "none"
        return LinkError(f"node {self._node_id!r} has no link to {peer_id!r} (known peers: {known}): "
                         f"call connect({peer_id!r}, address) first")

    def _wake(self) -> None:
        """Wake the I/O thread (call with the lock held)."""
        self._woken = True
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            pass            # the buffer is full of wake bytes: the I/O thread will wake anyway

    def _prefix(self, peer_id: str, kind: object, sender: object, target: object) -> tuple[bytes, bytes]:
        """The encodings of ``kind`` and of ``sender`` + ``target`` (cached), or LinkError."""
        for what, v in (("kind", kind), ("sender", sender), ("target", target)):
            if not isinstance(v, str):
                raise LinkError(f"node {self._node_id!r} cannot send to peer {peer_id!r}: the {what} is "
                                f"{type(v).__name__} {v!r}, not a str (PIDs and names are str)")
        assert isinstance(kind, str) and isinstance(sender, str) and isinstance(target, str)
        key = (str.__str__(kind), str.__str__(sender), str.__str__(target))
        kb = wire.encode(key[0])
        prefix = wire.encode_batch([(key[1], key[2], None)])[len(_BATCH_HEAD) + 1:-1]   # the two names
        if len(self._prefixes) >= _PREFIX_MAX:
            self._prefixes.clear()
        self._prefixes[key] = (kb, prefix)
        return kb, prefix

    def _command(self, fn: Callable[[], int]) -> int:
        """Run ``fn`` on the I/O thread (at once when called on it) and return its result."""
        if threading.get_ident() == self._io_ident:
            return fn()
        cmd = _Command(fn)
        with self._lock:
            self._check_open()
            self._commands.append(cmd)
            self._wake()
        if not cmd.done.wait(_COMMAND_WAIT):
            raise LinkError(f"the link I/O thread of node {self._node_id!r} did not answer within "
                            f"{_COMMAND_WAIT:g} s: an on_frames or on_error callback is blocking")
        if cmd.error is not None:
            raise cmd.error
        return cmd.result

    def _report(self, count: int, message: str) -> None:
        """Tell on_error (or stderr) ``message`` when ``count`` is 1, 2, 4, 8, ... Never raises."""
        if count & (count - 1):
            return
        text = f"link of node {self._node_id!r}: {message}"
        try:
            if self._on_error is not None:
                self._on_error(text)
            else:
                sys.stderr.write(f"wippy: {text}\n")
                sys.stderr.flush()
        except Exception:  # noqa: S110 -- a reporter that fails has nobody left to report to
            pass

    # ----------------------------------------------------------------------------------- I/O thread

    def _open(self, peer_id: str, address: str) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
        try:
            sock.connect(address)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            raise LinkError(f"node {self._node_id!r} cannot connect to peer {peer_id!r} at {address!r}: "
                            f"{e.strerror}; pass the address the peer's start() returned, as "
                            "tcp://HOST:PORT") from None
        return sock

    def _unstick(self, peer: _Peer) -> None:
        if peer.stuck:
            assert peer.sock is not None
            self._poller.unregister(peer.sock)
            peer.stuck = False

    def _do_connect(self, peer_id: str, address: str) -> int:
        peer = self._peers.get(peer_id)
        if peer is not None and peer.address == address and peer.sock is not None:
            return 0
        sock = self._open(peer_id, address)
        if peer is None:
            peer = _Peer(address)
            peer.sock = sock
            with self._lock:
                self._peers[peer_id] = peer
            return 0
        self._unstick(peer)
        if peer.sock is not None:
            peer.sock.close(linger=0)
        peer.sock = sock
        with self._lock:
            peer.address = address
        return 0

    def _do_forget(self, peer_id: str) -> int:
        with self._lock:
            peer = self._peers.pop(peer_id, None)
        if peer is None:
            return 0
        self._unstick(peer)
        if peer.sock is not None:
            peer.sock.close(linger=0)
            peer.sock = None
        n = len(peer.outbox) + peer.pending_frames
        peer.outbox.clear()
        peer.pending, peer.pending_frames, peer.pending_bytes = None, 0, 0
        self._c["dropped"] += n
        return n

    def _run(self) -> None:
        self._io_ident = threading.get_ident()
        timeout: int | None = 0
        pull = self._pull
        assert pull is not None
        wake_fd = self._wake_r.fileno()
        poll = self._poller.poll
        while True:
            try:
                ready = dict(poll(timeout))
                if ready.pop(wake_fd, 0):
                    try:
                        self._wake_r.recv(4096)     # what is left (over 4096 wakes) wakes the next poll
                    except BlockingIOError:
                        pass
                with self._lock:
                    self._woken = False
                    commands = list(self._commands) if self._commands else None
                    self._commands.clear()
                    closing = self._state is _CLOSING
                if commands:
                    for cmd in commands:
                        try:
                            cmd.result = cmd.fn()
                        except LinkError as e:
                            cmd.error = e
                        finally:
                            cmd.done.set()
                more = False
                for sock, ev in ready.items():
                    if sock is pull:
                        if not closing:
                            more = self._receive(pull)
                    elif ev & zmq.POLLOUT:
                        for peer in self._peers.values():
                            if peer.sock is sock:
                                self._unstick(peer)
                more = self._flush() or more
                if self._state is _CLOSING:     # set under the lock; read alone, at worst a turn late
                    break
                timeout = 0 if more else None
            except Exception as e:   # a bug: report it and keep the links alive
                self._c["internal_errors"] += 1
                self._report(self._c["internal_errors"], f"the I/O thread hit {type(e).__name__}: {e}")
                time.sleep(0.01)
                timeout = 0
        self._shutdown()

    def _receive(self, pull: zmq.Socket[bytes]) -> bool:
        """Receive and deliver up to _RECV_BUDGET batches; True if more may be waiting."""
        c = self._c
        for _ in range(_RECV_BUDGET):
            # EVENTS, not a NOBLOCK recv that raises Again: an exception per empty turn costs more
            if not cast(int, pull.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return False
            try:
                msg = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return False
            c["bytes_received"] += len(msg)
            try:
                if pull.getsockopt(zmq.RCVMORE):     # a multipart message: not from a link
                    n = 1 + len(pull.recv_multipart(zmq.NOBLOCK))
                    raise _BadBatch(f"a message of {n} parts, where a batch is one")
                from_node, frames = self._decode(msg)
            except (_BadBatch, wire.WireError) as e:
                c["bad_batches"] += 1
                self._report(c["bad_batches"], f"ignored a message on {self._address} that is not a link batch: "
                             f"{e} ({c['bad_batches']} so far; a foreign sender, or a node of another wippy "
                             "version: run the same version on every node)")
                continue
            c["batches_received"] += 1
            c["frames_received"] += len(frames)
            try:
                self._on_frames(from_node, frames)
            except Exception as e:
                c["callback_errors"] += 1
                self._report(c["callback_errors"], f"on_frames raised {type(e).__name__}: {e} on a batch of "
                             f"{len(frames)} frames from {from_node!r} ({c['callback_errors']} so far; the "
                             "frames count as received: on_frames must not raise)")
            if self._state is _CLOSING:     # close() was called from the callback: deliver no more
                return False
        return True

    @staticmethod
    def _decode(msg: bytes) -> tuple[str, list[Frame]]:
        raw = wire.decode_batch(msg)
        if not raw:
            raise _BadBatch("an empty batch, without its header frame")
        from_node, magic, meta = raw[0]
        if magic != _MAGIC or type(meta) is not list or len(meta) != 2:
            raise _BadBatch("its first frame is not a link header")
        version, kinds = meta
        if type(version) is not int or version != LINK_VERSION:
            raise _BadBatch(f"link format version {version!r}, this node reads version {LINK_VERSION}")
        if type(kinds) is not list or len(kinds) != len(raw) - 1:
            raise _BadBatch(f"a link header that does not list one kind for each of the {len(raw) - 1} frames")
        frames = [(k, s, t, p) for k, (s, t, p) in zip(kinds, itertools.islice(raw, 1, None), strict=True)
                  if type(k) is str]
        if len(frames) != len(kinds):
            raise _BadBatch("a frame kind that is not a str")
        return from_node, frames

    def _assemble(self, peer: _Peer) -> None:
        """Take the next batch from the front of ``peer``'s outbox into ``peer.pending``."""
        box = peer.outbox
        popleft = box.popleft
        kinds: list[bytes] = []
        frames: list[bytes] = [b""]
        size = 0
        limit = min(self._max_batch, len(box))
        max_bytes = self._max_bytes
        for _ in range(limit):
            k, f = popleft()
            kinds.append(k)
            frames.append(f)
            size += len(f)
            if size >= max_bytes:
                break
        n = len(kinds)
        frames[0] = _BATCH_HEAD + _uvarint(n + 1) + self._head + _list_head(n) + b"".join(kinds)
        peer.pending = b"".join(frames)
        peer.pending_frames = n
        peer.pending_bytes = len(peer.pending)

    def _flush(self) -> bool:
        """Send the outboxes, up to _SEND_BUDGET batches per peer; True if some are left (not stuck)."""
        more = False
        c = self._c
        for peer in tuple(self._peers.values()):
            sock = peer.sock
            if peer.stuck or sock is None:
                continue
            for _ in range(_SEND_BUDGET):
                if peer.pending is None:
                    if not peer.outbox:
                        break
                    self._assemble(peer)
                assert peer.pending is not None
                try:
                    sock.send(peer.pending, zmq.NOBLOCK)
                except zmq.Again:
                    peer.stuck = True
                    self._poller.register(sock, zmq.POLLOUT)
                    break
                except zmq.ZMQError as e:
                    c["send_errors"] += 1
                    self._report(c["send_errors"], f"sending to {peer.address} failed: {e.strerror}; retrying")
                    peer.stuck = True
                    self._poller.register(sock, zmq.POLLOUT)
                    break
                c["batches_sent"] += 1
                c["frames_sent"] += peer.pending_frames
                c["bytes_sent"] += peer.pending_bytes
                peer.pending, peer.pending_frames, peer.pending_bytes = None, 0, 0
            else:
                more = more or bool(peer.outbox)
        return more

    def _queued(self) -> bool:
        return any(p.pending is not None or p.outbox for p in self._peers.values())

    def _shutdown(self) -> None:
        """On the I/O thread, after close(): flush for up to the linger time, then close everything."""
        deadline = time.monotonic() + self._linger
        assert self._pull is not None
        self._poller.unregister(self._pull)
        self._poller.unregister(self._wake_r.fileno())
        while self._queued():
            self._flush()
            left = deadline - time.monotonic()
            if left <= 0 or not self._queued():
                break
            for sock, ev in self._poller.poll(int(min(left, 0.05) * 1000) + 1):
                if ev & zmq.POLLOUT:
                    for peer in self._peers.values():
                        if peer.sock is sock:
                            self._unstick(peer)
        left_ms = max(0, int((deadline - time.monotonic()) * 1000))
        with self._lock:
            self._state = _CLOSED
            commands = list(self._commands)
            self._commands.clear()
            peers = list(self._peers.values())
            dropped = sum(len(p.outbox) + p.pending_frames for p in peers)
            self._peers.clear()
            self._wake_r.close()
            self._wake_w.close()
        self._c["dropped"] += dropped
        for cmd in commands:
            cmd.error = LinkError(f"links of node {self._node_id!r} closed before the call ran")
            cmd.done.set()
        for peer in peers:
            if peer.sock is not None:
                peer.sock.close(linger=left_ms)
        self._pull.close(linger=0)
        self._ctx.term()
