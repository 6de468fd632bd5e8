"""Several nodes (runtime/cluster.py): Lua processes talking across node processes on loopback, against raw pyzmq.

    .venv/bin/python bench/bench_cluster.py [--quick] [--url URL]

One run: a throwaway PostgreSQL server (tests/pg_server.py, fsync on; or ``--url``: an existing one, a
fresh schema in it dropped afterwards), this script's own node "t" (a Python-side ``Node`` that joins the
cluster) and node processes ``python -m wippy.runtime.cli run tests/cluster_tree --cluster URL --node NAME``
(n1; n2 and n3 for the fan-out), each with a fresh data directory. Every node runs with ``cluster_ttl``
2 s (heartbeat every ttl / 5 = 0.4 s). The node processes run tests/cluster_tree: a service ``c:echo``
that prints its PID and answers every message with the same topic and payload. Pin the run to one CPU
(``taskset -c 1``): the children inherit it, so this process, the node processes and PostgreSQL share
that CPU, and the figures are what the sending and the answering side cost together.

Definitions (what is counted):

* a message is ``process.send(dest, "ping", i)`` (an integer payload) from a Lua process on t to the
  echo on n1; the echo's answer (same topic and payload) is another message. Times are taken inside the
  Lua process with ``time.now():unix_nano()`` (wall clock), from before the first send to after the last
  answer; the Lua process reads every answer's payload.
* (1) ping-pong: one at a time, the next ping sent when the answer is back; a round trip is 2 messages.
  Every round trip is timed on its own (two ``time.now()`` calls, about 1.5 us) for p50/p99.
* (2) stream: N pings sent without waiting, then the N answers received; msgs/s counts both
  directions (2N messages over the whole time).
* (3) fan-out: N pings to EACH of n1, n2, n3's echo (round-robin), then all 3N answers received;
  msgs/s counts both directions (6N messages).
* (4) raw pyzmq, the same run, the same CPU (bench/bench_cluster_link.py's helpers): between this
  process and a child process, one ``wire.encode`` + PUSH.send per message of ``{"topic": "ping",
  "n": i}``, one PULL.recv + ``wire.decode`` on the other side. The stream is ONE-WAY (N messages
  until the receiver reports the last one); the ping-pong is PUSH/PULL both ways, one at a time.
* (5) failure detection: a Lua watcher on t monitors n1's echo, then pings it and waits for the answer
  (so the monitor request, sent first on the same link, has reached n1), then says "armed"; n1 is
  killed -9; the figure is the time from just before the kill (``time.time_ns()``) to the watcher
  receiving its ``pid.exit`` event with reason ``noconnection`` (``time.now()`` in the watcher). Only t
  and n1 are up then (n2 and n3 are stopped), so t's membership thread is the only detector. Each trial
  has a fresh n1 on a fresh data directory; median of 3 (1 with --quick).

Every (1)-(4) figure is the median over 3 rounds (1 with --quick) after one warm-up round. Figures only,
nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import bench_cluster_link as bcl
import common
import zmq

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "tests" / "cluster_tree"
TTL = 2.0                  # cluster_ttl of every node in this run, seconds
TARGET_RATE = 100_000      # the target for the cross-node stream, msgs/s
TARGET_RATIO = 0.30        # ... and as a share of raw pyzmq in the same run

PINGPONG = """return { main = function(dest, n)
  local inbox, send, now = process.inbox(), process.send, time.now
  local lat = {}
  local t0 = now():unix_nano()
  for i = 1, n do
    local a = now():unix_nano()
    assert(send(dest, "ping", i))
    local got = inbox:receive():payload():data()
    lat[i] = now():unix_nano() - a
    if got ~= i then error("answer " .. tostring(got) .. " to ping " .. i) end
  end
  return { total = now():unix_nano() - t0, lat = lat }
end }"""

STREAM = """return { main = function(dests, n)
  local inbox, send, now = process.inbox(), process.send, time.now
  local k = #dests
  local t0 = now():unix_nano()
  for i = 1, n do
    for j = 1, k do assert(send(dests[j], "ping", i)) end
  end
  local sent = now():unix_nano()
  local sum = 0
  for _ = 1, n * k do sum = sum + inbox:receive():payload():data() end
  local t1 = now():unix_nano()
  if sum ~= k * n * (n + 1) // 2 then error("answers sum to " .. sum) end
  return { sending = sent - t0, total = t1 - t0 }
end }"""

WATCHER = """return { main = function(dest, notify)
  assert(process.monitor(dest))
  assert(process.send(dest, "armed?", 0))
  process.inbox():receive()
  process.send(notify, "armed", true)
  local ev = process.events():receive()
  return { at = time.now():unix_nano(), kind = ev.kind, reason = tostring(ev.reason) }
end }"""


def _options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--url", help="use this PostgreSQL server (a fresh schema in it) instead of starting one")


# --------------------------------------------------------------------------------------- node processes


def _pump(stream: IO[str], sink: Callable[[str], None]) -> None:
    with stream:
        for line in stream:
            sink(line.rstrip("\n"))


@dataclass
class NodeProc:
    """A ``wippy run --cluster`` node process on tests/cluster_tree (tests/test_cluster.py's harness)."""

    name: str
    data_dir: Path
    url: str
    proc: subprocess.Popen[str] | None = None
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    errors: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wippy.runtime.cli", "run", str(TREE), "--no-watch", "--cluster", self.url,
             "--node", self.name, "--cluster-ttl", str(TTL), "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=ROOT,
        )
        out, err = self.proc.stdout, self.proc.stderr
        assert out is not None and err is not None
        threading.Thread(target=_pump, args=(out, self.lines.put), daemon=True).start()
        threading.Thread(target=_pump, args=(err, self.errors.append), daemon=True).start()

    def echo_pid(self, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"node {self.name} exited {self.proc.returncode}: {self.errors}") from None
                continue
            if line.startswith("echo pid "):
                return line.split(" ", 2)[2]
        raise RuntimeError(f"node {self.name} printed no echo PID within {timeout}s: {self.errors}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGINT (the node leaves the cluster), SIGKILL if it has not ended within 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_up(node: Any, names: set[str], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not names <= set(node.cluster.up()):
        if time.monotonic() > end:
            raise RuntimeError(f"nodes up: {node.cluster.up()}, wanted {sorted(names)}")
        time.sleep(0.05)


def wait_gone(node: Any, name: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while name in node.cluster.up():
        if time.monotonic() > end:
            raise RuntimeError(f"node {name} still up after {timeout}s")
        time.sleep(0.05)


@contextlib.contextmanager
def cluster_url(url: str | None) -> Iterator[tuple[str, str] | None]:
    """A server (common.postgres) and a fresh schema in it, dropped afterwards."""
    import pg_server

    with common.postgres(url) as pg:
        if pg is None:
            yield None
            return
        server_url, where = pg
        with pg_server.isolated_url(server_url) as schema_url:
            yield schema_url, where


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)   # so the finally blocks stop the children and PostgreSQL


# --------------------------------------------------------------------------------------- the cases


@dataclass
class Figures:
    pp: list[dict[str, Any]] = field(default_factory=list)       # (1) per round: total ns, lat ns list
    stream: list[dict[str, Any]] = field(default_factory=list)   # (2)
    fan: list[dict[str, Any]] = field(default_factory=list)      # (3)
    raw_stream: list[float] = field(default_factory=list)        # (4) seconds per round
    raw_pp: list[tuple[float, list[int]]] = field(default_factory=list)
    detect: list[tuple[float, float, str]] = field(default_factory=list)  # (5) s to Lua event, s to Python, value


def raw_baselines(f: Figures, rounds: int, n_stream: int, n_pp: int) -> None:
    """(4): bench_cluster_link's raw pyzmq stream and ping-pong, between this process and a child."""
    ctx = zmq.Context()
    children: list[bcl.Child] = []
    socks: list[zmq.Socket[bytes]] = []
    try:
        rx = bcl.Child(bcl.raw_receiver)
        children.append(rx)
        push = ctx.socket(zmq.PUSH)
        socks.append(push)
        push.connect(rx.address)
        bcl.raw_stream(rx, push, max(1000, n_stream // 10))
        f.raw_stream = [bcl.raw_stream(rx, push, n_stream) for _ in range(rounds)]
        rx.stop()

        back = ctx.socket(zmq.PULL)
        socks.append(back)
        port = back.bind_to_random_port("tcp://127.0.0.1")
        echo = bcl.Child(bcl.raw_echo, f"tcp://127.0.0.1:{port}")
        children.append(echo)
        out = ctx.socket(zmq.PUSH)
        socks.append(out)
        out.connect(echo.address)
        bcl.raw_pingpong(out, back, max(100, n_pp // 10))
        f.raw_pp = [bcl.raw_pingpong(out, back, n_pp) for _ in range(rounds)]
        out.send(b"")
        echo.proc.join(10)
    finally:
        for c in children:
            if c.proc.is_alive():
                c.stop()
        for s in socks:
            s.close(0)
        ctx.term()


def cluster_cases(f: Figures, me: Any, url: str, tmp: Path, procs: list[NodeProc], rounds: int,
                  n_stream: int, n_pp: int, n_fan: int, trials: int) -> None:
    """(1)-(3) and (5), between node t (``me``) and node processes started here (kept in ``procs``)."""
    me.define("b:pingpong", "process.lua", source=PINGPONG)
    me.define("b:stream", "process.lua", source=STREAM)
    me.define("b:watcher", "process.lua", source=WATCHER)

    nodes = {name: NodeProc(name, tmp / name, url) for name in ("n1", "n2", "n3")}
    for p in nodes.values():
        procs.append(p)
        p.start()
    pids = {name: p.echo_pid() for name, p in nodes.items()}
    wait_up(me, set(nodes))
    n1 = pids["n1"]

    print("(1) ping-pong ...", flush=True)
    me.exec("b:pingpong", n1, max(100, n_pp // 10), timeout=300)
    f.pp = [me.exec("b:pingpong", n1, n_pp, timeout=600) for _ in range(rounds)]

    print("(2) stream ...", flush=True)
    me.exec("b:stream", [n1], max(1000, n_stream // 10), timeout=300)
    f.stream = [me.exec("b:stream", [n1], n_stream, timeout=600) for _ in range(rounds)]

    print("(3) fan-out ...", flush=True)
    fan = [pids["n1"], pids["n2"], pids["n3"]]
    me.exec("b:stream", fan, max(1000, n_fan // 10), timeout=300)
    f.fan = [me.exec("b:stream", fan, n_fan, timeout=600) for _ in range(rounds)]

    for p in nodes.values():
        p.stop()
    for name in nodes:
        wait_gone(me, name)

    print("(5) failure detection ...", flush=True)
    for k in range(trials):
        p = NodeProc("n1", tmp / f"n1-kill{k}", url)
        procs.append(p)
        p.start()
        pid = p.echo_pid()
        wait_up(me, {"n1"})
        with me.mailbox() as mb:
            watcher = me.spawn("b:watcher", pid, mb.pid, monitor=mb)
            armed = mb.receive(timeout=60)
            if armed.topic != "armed":
                raise RuntimeError(f"watcher said {armed}")
            t_kill = time.time_ns()
            p.kill9()
            ev = mb.wait_exit(watcher, timeout=TTL + 60)
            t_py = time.time_ns()
        value = ev.result.get("value")
        if not isinstance(value, dict):
            raise RuntimeError(f"watcher ended with {ev}")
        seen = f"{value['kind']} {value['reason']}"
        f.detect.append(((value["at"] - t_kill) / 1e9, (t_py - t_kill) / 1e9, seen))
        wait_gone(me, "n1")


# --------------------------------------------------------------------------------------- report


def report(f: Figures, rounds: int, n_stream: int, n_pp: int, n_fan: int) -> None:
    med = common.median

    def us(samples_ns: list[int], p: float) -> float:
        return common.percentile([s / 1000 for s in samples_ns], p)

    raw_stream = n_stream / med(f.raw_stream)
    raw_rt = n_pp / med([t for t, _ in f.raw_pp])
    raw_p50 = med([us(s, 50) for _, s in f.raw_pp])
    raw_p99 = med([us(s, 99) for _, s in f.raw_pp])
    pp_rt = n_pp / med([r["total"] / 1e9 for r in f.pp])
    pp_p50 = med([us(list(r["lat"]), 50) for r in f.pp])
    pp_p99 = med([us(list(r["lat"]), 99) for r in f.pp])
    stream = 2 * n_stream / med([r["total"] / 1e9 for r in f.stream])
    stream_send = n_stream / med([r["sending"] / 1e9 for r in f.stream])
    fan = 6 * n_fan / med([r["total"] / 1e9 for r in f.fan])
    fan_send = 3 * n_fan / med([r["sending"] / 1e9 for r in f.fan])

    print()
    print(f"median of {rounds} round(s) after one warm-up; every node cluster_ttl {TTL:g} s; "
          f"ping-pong {n_pp:,} round trips a round, stream {n_stream:,} pings a round, "
          f"fan-out {n_fan:,} pings to each of 3 nodes a round")
    print()
    common.table(
        ["case", "processes", "messages counted", "msgs/s", "vs raw pyzmq stream", "sending phase"],
        [["(2) stream t -> n1 echo -> t (Lua)", "2 nodes", f"{2 * n_stream:,} (both ways)",
          common.fmt_rate(stream), common.fmt_ratio(stream, raw_stream), common.fmt_rate(stream_send)],
         ["(3) fan-out t -> n1, n2, n3 echo -> t (Lua)", "4 nodes", f"{6 * n_fan:,} (both ways)",
          common.fmt_rate(fan), common.fmt_ratio(fan, raw_stream), common.fmt_rate(fan_send)],
         ["(4) raw pyzmq PUSH/PULL stream, one zmq message each", "2", f"{n_stream:,} (one way)",
          common.fmt_rate(raw_stream), "1.00x", ""]],
    )
    common.table(
        ["ping-pong, one at a time", "round trips/s", "msgs/s", "vs raw", "p50 us", "p99 us"],
        [["(1) Lua on t -> n1 echo -> t", common.fmt_rate(pp_rt), common.fmt_rate(2 * pp_rt),
          common.fmt_ratio(pp_rt, raw_rt), f"{pp_p50:,.0f}", f"{pp_p99:,.0f}"],
         ["(4) raw pyzmq PUSH/PULL both ways", common.fmt_rate(raw_rt), common.fmt_rate(2 * raw_rt), "1.00x",
          f"{raw_p50:,.0f}", f"{raw_p99:,.0f}"]],
    )
    print("'sending phase': pings sent per second while the Lua process was still sending (answers already")
    print("arriving meanwhile); msgs/s is over the whole time, both directions.")
    print()
    ratio = stream / raw_stream
    print(f"stream (2) vs raw pyzmq stream: {ratio:.2f}x (target >= {TARGET_RATIO:.2f}x of raw pyzmq: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    print(f"stream (2): {common.fmt_rate(stream)} (target >= {common.fmt_rate(TARGET_RATE)}: "
          f"{'met' if stream >= TARGET_RATE else 'NOT met'})")
    print(f"  (the stream counts both directions, the raw stream one way; one way, the stream's "
          f"{common.fmt_rate(stream / 2)} is {stream / 2 / raw_stream:.2f}x of raw)")
    print(f"ping-pong (1) vs raw pyzmq ping-pong: {pp_rt / raw_rt:.2f}x round trips/s, p50 "
          f"{pp_p50 / raw_p50:.1f}x the raw latency")
    print()

    lua_s = [d[0] for d in f.detect]
    py_s = [d[1] for d in f.detect]
    seen = sorted({d[2] for d in f.detect})
    common.table(
        ["failure detection (kill -9 n1)", "cluster_ttl", "heartbeat", "trials", "median", "min", "max",
         "to Python (median)", "watcher saw"],
        [["(5) kill -> watcher's exit event", f"{TTL:g} s", f"{TTL / 5:g} s", str(len(lua_s)),
          f"{med(lua_s):.2f} s", f"{min(lua_s):.2f} s", f"{max(lua_s):.2f} s", f"{med(py_s):.2f} s",
          ", ".join(seen)]],
    )
    print(f"per trial (s): {', '.join(f'{x:.2f}' for x in lua_s)}; 'to Python': until mb.wait_exit returned")


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0], extra=_options)
    quick = args.quick
    common.header("bench_cluster: Lua processes across node processes (loopback, one PostgreSQL)", quick)
    print(f"zmq:     pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}")
    rounds = 1 if quick else 3
    trials = 1 if quick else 3
    n_stream = 20_000 if quick else 100_000
    n_pp = 2_000 if quick else 5_000
    n_fan = 10_000 if quick else 50_000
    signal.signal(signal.SIGTERM, _sigterm)
    from wippy.runtime import Node

    f = Figures()
    procs: list[NodeProc] = []
    tmp = Path(tempfile.mkdtemp(prefix="wippy-bench-cluster-"))
    t0 = time.monotonic()
    try:
        print("(4) raw pyzmq ...", flush=True)
        raw_baselines(f, rounds, n_stream, n_pp)
        with cluster_url(args.url) as pg:
            if pg is None:
                return 1
            url, where = pg
            print(f"postgres: {where}")
            me = Node(output=None, data_dir=tmp / "t", node_name="t").start()
            try:
                me.join_cluster(url, ttl=TTL)
                cluster_cases(f, me, url, tmp, procs, rounds, n_stream, n_pp, n_fan, trials)
            finally:
                for p in procs:
                    if p.alive():
                        p.stop()
                me.stop(grace=1.0)
    finally:
        for p in procs:   # anything still running (an error between start and stop)
            if p.alive():
                p.proc.kill()  # type: ignore[union-attr]
                p.proc.wait(timeout=10)  # type: ignore[union-attr]
        shutil.rmtree(tmp, ignore_errors=True)
    report(f, rounds, n_stream, n_pp, n_fan)
    print(f"\nwall time of the run: {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
