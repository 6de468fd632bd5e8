"""Payload codecs for node-to-node links: runtime/wire.py against json, pickle, marshal (and msgpack).

    .venv/bin/python bench/bench_wire.py [--quick]

Definitions (what is counted):

* a message is one ``encode`` then one ``decode`` of the payload (a round trip through bytes).
  Payloads: "small" ``{"topic": "ping", "n": 1}``; "record", a dict of 20 fields of mixed types (ints,
  floats, strs, bools, None, a list, a nested dict, 4 bytes); "list100", a list of 100 dicts of 3 keys;
  "blob64k", 64 KiB of bytes.
* each round times n encodes in a loop, then n decodes of the encoded buffer; n is chosen per payload
  and codec so that a round takes about 0.2 s (0.03 s with --quick). The figure is the median over 5
  rounds (1 with --quick) after one warm-up round; "enc us" and "dec us" are the medians per message.
  msgs/s = n / (encode time + decode time).
* MB/s counts every message at its wire-encoded size (whatever codec carries it), so the column compares
  like for like: it is msgs/s times the "wire" size, not the codec's own size.
* "bytes" is the codec's own encoded size of the payload.

Codecs, all in this process and this run: wire (this repo, pure Python); json (stdlib, C accelerated;
it is not a faithful codec for payloads: it has no bytes, so bytes go out as a base64 str through
``default=`` and come back as a str, and non-str dict keys come back as str -- the figure is a lower
bound on the cost of a faithful JSON link); pickle (protocol 5, C); marshal (C; exact types, but its
format is tied to the Python version); msgpack when importable (not a dependency; skipped otherwise).
"""

from __future__ import annotations

import base64
import datetime
import functools
import gc
import json
import marshal
import math
import os
import pickle
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common

try:
    from wippy.runtime import wire
except ImportError:  # run from a checkout without the package installed
    from runtime import wire  # type: ignore[no-redef]

Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]


def _json_default(o: object) -> Any:
    if isinstance(o, bytes):
        return base64.b64encode(o).decode("ascii")
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


_json_enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode
_json_dec = json.JSONDecoder().decode


def json_encode(v: Any) -> bytes:
    return _json_enc(v).encode()


def json_decode(b: bytes) -> Any:
    return _json_dec(b.decode())


def codecs() -> tuple[dict[str, Codec], list[str]]:
    """The codecs to compare, and notes on those skipped."""
    found: dict[str, Codec] = {
        "wire": (wire.encode, wire.decode),
        "json": (json_encode, json_decode),
        "pickle": (functools.partial(pickle.dumps, protocol=5), pickle.loads),
        "marshal": (marshal.dumps, marshal.loads),
    }
    notes = []
    try:
        import msgpack  # type: ignore[import-not-found, unused-ignore]

        packb, unpackb = msgpack.packb, msgpack.unpackb
        found["msgpack"] = (lambda v: packb(v, use_bin_type=True),
                            lambda b: unpackb(b, raw=False, strict_map_key=False))
    except ImportError:
        notes.append("msgpack: not importable in this environment, skipped (not a dependency; not installed)")
    return found, notes


def payloads() -> dict[str, Any]:
    record = {
        "id": 123456789, "seq": 42, "name": "order-00042", "status": "shipped", "ok": True,
        "cancelled": False, "price": 19.99, "qty": 3, "discount": 0.0, "weight_kg": 1.25,
        "customer": "Ada Lovelace", "email": "ada@example.com", "tags": ["a", "b", "priority"],
        "created": 1735689600, "updated": 1735693200.5, "note": None,
        "address": {"city": "London", "zip": "NW1"}, "score": -17, "ratio": 3.14159,
        "blob": b"\x00\x01\x02\x03",
    }
    assert len(record) == 20
    return {
        "small": {"topic": "ping", "n": 1},
        "record": record,
        "list100": [{"i": i, "name": f"item{i}", "v": i * 0.5} for i in range(100)],
        "blob64k": random.Random(1).randbytes(65536),
    }


def one_round(codec: Codec, value: Any, n: int) -> tuple[float, float]:
    """(encode seconds, decode seconds) of n encodes and n decodes."""
    enc, dec = codec
    data = enc(value)
    rng = range(n)
    gc.collect()
    t0 = time.perf_counter()
    for _ in rng:
        enc(value)
    t1 = time.perf_counter()
    for _ in rng:
        dec(data)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def calibrate(codec: Codec, value: Any, target_s: float) -> int:
    """How many messages make a round of about ``target_s`` seconds for ``codec``."""
    n = 1
    while True:
        e, d = one_round(codec, value, n)
        if e + d >= target_s / 10 or n >= 10_000_000:
            return max(1, int(n * target_s / max(e + d, 1e-9)))
        n *= 4


def header(quick: bool) -> None:
    """What the figures were measured on (common.header also fingerprints the runtime with git and
    starts Lua; a pure-Python codec benchmark needs neither)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"# bench_wire: payload codecs for node-to-node links{'  (--quick)' if quick else ''}")
    print(f"date:    {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"python:  {platform.python_version()} ({platform.python_implementation()}, {sys.platform})")
    print(f"cpu:     {os.cpu_count()} CPUs ({usable} usable), {cpu}")
    shown = ""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        shown = f"; CPU pressure: runnable tasks waited {float(some.split()[1].split('=')[1]):.0f}% of the last 10 s"
    except (OSError, IndexError, ValueError):
        pass
    print(f"load:    {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min, before this run){shown}")
    print()


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    header(quick)
    rounds = 1 if quick else 5
    target = 0.03 if quick else 0.2
    found, notes = codecs()
    values = payloads()

    rows = []
    rates: dict[tuple[str, str], float] = {}
    for pname, value in values.items():
        wire_size = len(wire.encode(value))
        assert wire.decode(wire.encode(value)) == value
        print(f"{pname} ...", flush=True)
        for cname, codec in found.items():
            n = calibrate(codec, value, target)
            one_round(codec, value, max(1, n // 10))   # warm-up
            encs, decs, tots = [], [], []
            for _ in range(rounds):
                e, d = one_round(codec, value, n)
                encs.append(e)
                decs.append(d)
                tots.append(e + d)
            rate = n / common.median(tots)
            rates[(pname, cname)] = rate
            rows.append([pname, cname, f"{len(codec[0](value)):,}", common.fmt_rate(rate),
                         f"{rate * wire_size / 1e6:,.1f}", f"{common.median(encs) / n * 1e6:.2f}",
                         f"{common.median(decs) / n * 1e6:.2f}"])
    print()
    print(f"median of {rounds} round(s); msgs/s = encode + decode of one message; MB/s at the wire size")
    print()
    common.table(["payload", "codec", "bytes", "enc+dec msgs/s", "MB/s", "enc us", "dec us"], rows)
    print("ratios: msgs/s of wire / msgs/s of the other codec, per payload (above 1: wire is faster)")
    for other in [c for c in found if c != "wire"]:
        ratios = [rates[(p, "wire")] / rates[(p, other)] for p in values]
        each = "  ".join(f"{p} {r:.2f}" for p, r in zip(values, ratios, strict=True))
        print(f"  wire vs {other}: {each}")
    plain = [p for p in values if p != "blob64k"]
    json_ratios = [rates[(p, "wire")] / rates[(p, "json")] for p in plain]
    geo = math.exp(sum(math.log(r) for r in json_ratios) / len(json_ratios))
    print(f"wire vs json: {geo:.2f} (geometric mean over {', '.join(plain)}; blob64k left out: json has no bytes, "
          "its figure is mostly base64)")
    for note in notes:
        print(f"note: {note}")
    print("note: json is not a faithful codec here (bytes -> base64 str one way; non-str keys -> str);"
          " wire, pickle and marshal give back exactly the types sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
