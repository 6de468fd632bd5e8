"""Node-to-node links (runtime/cluster_link.py) between OS processes on loopback, against raw pyzmq.

    .venv/bin/python bench/bench_cluster_link.py [--quick]

Definitions (what is counted):

* every case runs between TWO OS processes (this one and children started with multiprocessing's
  "spawn" method; fan-out: this one and three children), over tcp://127.0.0.1, in the same run; the
  children stay up for all the rounds. Pin the run to one CPU (``taskset -c 1``) and the figures are
  what the sender and the receiver cost together: they share that CPU.
* a message is the payload ``{"topic": "ping", "n": i}``. Raw pyzmq: one ``wire.encode`` and one
  blocking ``PUSH.send`` per message, one ``PULL.recv`` and one ``wire.decode`` per message on the other
  side (one zmq message per payload, default HWM) -- the same encoding work as a link, none of its
  batching. Links: ``Links.send(peer, "deliver", sender, target, payload)`` per message; the receiver
  counts the frames in its ``on_frames``.
* stream msgs/s = messages / (time from "go" until the receiver reports the last one received); the
  receiver is told the count first and answers "ready" before the clock starts.
* ping-pong: one request at a time, the next sent when the answer is back; a round trip is
  request + answer, timed on the sender per round trip (latency p50/p99) and in total (round trips/s).
  Raw: one thread blocking in ``recv`` on each side, PUSH/PULL both ways. Links: the caller's thread
  sends, the answer comes back on the I/O thread's ``on_frames`` to a ``queue.SimpleQueue`` the caller
  waits on; the echo process answers from its ``on_frames`` (on its I/O thread).
* fan-out: one sender, three receiving processes, messages sent round-robin to the three; msgs/s is the
  total over the time until all three have reported their last one.
* every figure is the median over 5 rounds (1 with --quick) after one warm-up round; "frames/batch" is
  the link's mean over the measured rounds (its ``stats()``).
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common
import zmq

try:
    from wippy.runtime import wire
    from wippy.runtime.cluster_link import Frame, Links
except ImportError:  # run from a checkout without the package installed
    from runtime import wire  # type: ignore[no-redef]
    from runtime.cluster_link import Frame, Links  # type: ignore[no-redef]

TARGET_RATE = 100_000      # the target for a link stream, msgs/s
TARGET_RATIO = 0.30        # ... and as a share of raw pyzmq in the same run

# --------------------------------------------------------------------------------------- children


def raw_receiver(conn: Connection) -> None:
    """PULL bound to a free port; per round: told n, answers ready, receives and decodes n, answers done."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    conn.send(f"tcp://127.0.0.1:{port}")
    decode = wire.decode
    while True:
        n = conn.recv()
        if n is None:
            break
        conn.send("ready")
        recv = pull.recv
        for _ in range(n):
            decode(recv())
        conn.send("done")
    pull.close(0)
    ctx.term()


def raw_echo(conn: Connection, reply_to: str) -> None:
    """PULL bound, PUSH to ``reply_to``: sends back every message until an empty one."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(reply_to)
    conn.send(f"tcp://127.0.0.1:{port}")
    while True:
        m = pull.recv()
        if not m:
            break
        push.send(wire.encode(wire.decode(m)))
    pull.close(0)
    push.close(0)
    ctx.term()


def links_receiver(conn: Connection, name: str) -> None:
    """A Links node; per round: told n, answers ready, answers done once on_frames has seen n frames."""
    state: dict[str, Any] = {"count": 0, "target": -1}
    done = threading.Event()

    def on_frames(from_node: str, frames: list[Frame]) -> None:
        state["count"] += len(frames)
        if state["count"] >= state["target"] >= 0:
            done.set()

    links = Links(name, on_frames)
    conn.send(links.start())
    while True:
        n = conn.recv()
        if n is None:
            break
        done.clear()
        state["count"], state["target"] = 0, n
        conn.send("ready")
        done.wait()
        conn.send("done")
    links.close()


def links_echo(conn: Connection, reply_to: str) -> None:
    """A Links node that answers every frame with a "reply" to the node it came from."""
    links: Links

    def on_frames(from_node: str, frames: list[Frame]) -> None:
        for _kind, sender, target, payload in frames:
            links.send(from_node, "reply", target, sender, payload)

    links = Links("echo", on_frames)
    address = links.start()
    links.connect("bench", reply_to)
    conn.send(address)
    conn.recv()          # None: stop
    links.close()


# --------------------------------------------------------------------------------------- the cases


class Child:
    """A child process running one of the functions above, and the parent's end of its pipe."""

    def __init__(self, target: Any, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(theirs, *args), daemon=True)
        self.proc.start()
        theirs.close()
        self.address: str = self.conn.recv()

    def go(self, n: int) -> None:
        self.conn.send(n)
        assert self.conn.recv() == "ready"

    def done(self) -> None:
        assert self.conn.recv() == "done"

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def raw_stream(child: Child, push: zmq.Socket[bytes], n: int) -> float:
    encode, send = wire.encode, push.send
    child.go(n)
    t0 = time.perf_counter()
    for i in range(n):
        send(encode({"topic": "ping", "n": i}))
    child.done()
    return time.perf_counter() - t0


def links_stream(children: list[Child], links: Links, peers: list[str], n: int) -> float:
    send = links.send
    k = len(peers)
    for c in children:
        c.go(n // k)
    t0 = time.perf_counter()
    if k == 1:
        peer = peers[0]
        for i in range(n):
            send(peer, "deliver", "<bench@1>", "<rx@1>", {"topic": "ping", "n": i})
    else:
        for i in range(n):
            send(peers[i % k], "deliver", "<bench@1>", "<rx@1>", {"topic": "ping", "n": i})
    for c in children:
        c.done()
    return time.perf_counter() - t0


def raw_pingpong(push: zmq.Socket[bytes], pull: zmq.Socket[bytes], count: int) -> tuple[float, list[int]]:
    samples = []
    t_all = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter_ns()
        push.send(wire.encode({"topic": "ping", "n": i}))
        wire.decode(pull.recv())
        samples.append(time.perf_counter_ns() - t0)
    return time.perf_counter() - t_all, samples


def links_pingpong(links: Links, answers: queue.SimpleQueue[Any], count: int) -> tuple[float, list[int]]:
    samples = []
    send, get = links.send, answers.get
    t_all = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter_ns()
        send("echo", "deliver", "<bench@1>", "<echo@1>", {"topic": "ping", "n": i})
        get()
        samples.append(time.perf_counter_ns() - t0)
    return time.perf_counter() - t_all, samples


def batch_figures(links: Links, before: dict[str, int]) -> float:
    s = links.stats()
    batches = s["batches_sent"] - before["batches_sent"]
    return (s["frames_sent"] - before["frames_sent"]) / batches if batches else float("nan")


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    common.header("bench_cluster_link: node-to-node links between OS processes (loopback)", quick)
    print(f"zmq:     pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}")
    print()
    rounds = 1 if quick else 5
    n_stream = 50_000 if quick else 200_000
    n_pp = 1_000 if quick else 5_000
    ctx = zmq.Context()

    # (a) raw pyzmq stream
    print("raw pyzmq stream ...", flush=True)
    rx = Child(raw_receiver)
    push = ctx.socket(zmq.PUSH)
    push.connect(rx.address)
    raw_stream(rx, push, n_stream // 10)
    raw_times = [raw_stream(rx, push, n_stream) for _ in range(rounds)]
    push.close(0)
    rx.stop()

    # (b) the same stream through Links
    print("Links stream ...", flush=True)
    links = Links("bench", lambda f, fr: None)
    links.start()
    lrx = Child(links_receiver, "rx")
    links.connect("rx", lrx.address)
    links_stream([lrx], links, ["rx"], n_stream // 10)
    before = links.stats()
    link_times = [links_stream([lrx], links, ["rx"], n_stream) for _ in range(rounds)]
    stream_batch = batch_figures(links, before)
    lrx.stop()
    links.close()

    # (c) ping-pong: raw pyzmq, then Links
    print("ping-pong ...", flush=True)
    back = ctx.socket(zmq.PULL)
    back_port = back.bind_to_random_port("tcp://127.0.0.1")
    echo = Child(raw_echo, f"tcp://127.0.0.1:{back_port}")
    out = ctx.socket(zmq.PUSH)
    out.connect(echo.address)
    raw_pingpong(out, back, max(100, n_pp // 10))
    raw_pp = [raw_pingpong(out, back, n_pp) for _ in range(rounds)]
    out.send(b"")
    echo.proc.join(10)
    out.close(0)
    back.close(0)

    answers: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def on_answers(from_node: str, frames: list[Frame]) -> None:
        for f in frames:
            answers.put(f)

    links = Links("bench", on_answers)
    address = links.start()
    lecho = Child(links_echo, address)
    links.connect("echo", lecho.address)
    links_pingpong(links, answers, max(100, n_pp // 10))
    link_pp = [links_pingpong(links, answers, n_pp) for _ in range(rounds)]
    lecho.stop()
    links.close()

    # (d) fan-out: one sender, three receiving processes
    print("fan-out ...", flush=True)
    links = Links("bench", lambda f, fr: None)
    links.start()
    fans = [Child(links_receiver, f"rx{k}") for k in range(3)]
    names = [f"rx{k}" for k in range(3)]
    for name, c in zip(names, fans, strict=True):
        links.connect(name, c.address)
    n_fan = n_stream - n_stream % 3
    links_stream(fans, links, names, n_fan // 10 - (n_fan // 10) % 3)
    before = links.stats()
    fan_times = [links_stream(fans, links, names, n_fan) for _ in range(rounds)]
    fan_batch = batch_figures(links, before)
    for c in fans:
        c.stop()
    links.close()
    ctx.term()
    print()

    raw_rate = n_stream / common.median(raw_times)
    link_rate = n_stream / common.median(link_times)
    fan_rate = n_fan / common.median(fan_times)
    print(f"median of {rounds} round(s) after one warm-up; {n_stream:,} messages a stream round, "
          f"{n_pp:,} round trips a ping-pong round")
    print()
    common.table(
        ["case", "processes", "msgs/s", "vs raw pyzmq", "frames/batch"],
        [["(a) raw pyzmq PUSH/PULL, one zmq message per payload", "2", common.fmt_rate(raw_rate), "1.00x", "1"],
         ["(b) Links.send -> on_frames", "2", common.fmt_rate(link_rate), common.fmt_ratio(link_rate, raw_rate),
          f"{stream_batch:.1f}"],
         ["(d) Links fan-out, 1 sender -> 3 receivers", "4", common.fmt_rate(fan_rate),
          common.fmt_ratio(fan_rate, raw_rate), f"{fan_batch:.1f}"]],
    )
    pp_rows = []
    pp_rates = {}
    for label, runs in (("raw pyzmq PUSH/PULL both ways", raw_pp), ("(c) Links (send -> on_frames -> reply)", link_pp)):
        rate = n_pp / common.median([t for t, _ in runs])
        pp_rates[label] = rate
        p50 = common.median([common.percentile([s / 1000 for s in samples], 50) for _, samples in runs])
        p99 = common.median([common.percentile([s / 1000 for s in samples], 99) for _, samples in runs])
        pp_rows.append([label, common.fmt_rate(rate), f"{p50:,.0f}", f"{p99:,.0f}"])
    common.table(["ping-pong, one at a time", "round trips/s", "p50 us", "p99 us"], pp_rows)
    ratio = link_rate / raw_rate
    print(f"Links stream vs raw pyzmq stream: {ratio:.2f}x (target >= {TARGET_RATIO:.2f}x: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    print(f"Links stream: {common.fmt_rate(link_rate)} (target >= {common.fmt_rate(TARGET_RATE)}: "
          f"{'met' if link_rate >= TARGET_RATE else 'NOT met'})")
    raw_pp_rate, link_pp_rate = pp_rates.values()
    print(f"Links ping-pong vs raw pyzmq ping-pong: {link_pp_rate / raw_pp_rate:.2f}x (round trips/s)")
    print(f"Links fan-out to 3 vs Links stream to 1: {fan_rate / link_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
