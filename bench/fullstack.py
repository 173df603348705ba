"""Full stack vs relay only: what storage, limits and leases add to a streamed turn, and its infra cost.

Two configurations of the same app (`uvicorn main:app` from functions/chat, uvloop + httptools, as
functions/chat/run.sh and `make dev` run it), each in front of the same OpenAI-format upstream
(`bench.upstream`):

- **relay only**: no table, no auth, no limits (today's `bench/chat.py` path);
- **full stack**: the `make dev` default path with everything a deployed turn does: DynamoDB memory,
  API-key authentication (`x-api-key`) and limits with stream leases (`LIMITS_ENABLED=true`), against
  the embedded emulator process (`devtools.emulator`).

Measured: the time to first token each adds over the upstream alone (interleaved with direct
requests), relay throughput, the app's CPU per 1,000 streamed tokens (from /proc), and, counted at
the emulator, the DynamoDB requests of one turn by operation with the write and read units they
consume (computed from item sizes by `devtools.capacity_units`). From those and the published prices
below, the infrastructure cost of 1,000 ten-second streamed turns.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from bench.chat import _OPENAI_FIRST_CONTENT, CHAT_DIR, KeepAliveClient, _env, _free_port, percentile, upstream_process
from bench.sustained import cpu_seconds

# Prices, us-east-1, as published on the AWS pricing pages (aws.amazon.com/lambda/pricing/ and
# aws.amazon.com/dynamodb/pricing/on-demand/), checked 2025-06 (DynamoDB on-demand prices were cut by
# 50% on 2024-11-01; these are the post-cut prices). Rerun with new prices when they change.
PRICES_AS_OF = "2025-06 (us-east-1)"
LAMBDA_ARM64_GB_SECOND = 0.0000133334  # first 7.5 billion GB-s per month
LAMBDA_REQUEST = 0.20 / 1_000_000
DYNAMODB_WRITE_REQUEST_UNIT = 0.625 / 1_000_000
DYNAMODB_READ_REQUEST_UNIT = 0.125 / 1_000_000
TURN_SECONDS = 10.0
MEMORY_SIZES_MB = (128, 256, 512)

TARGET_ADDED_TTFT_MS = 3.0
TARGET_WRITE_UNITS = 6.0
TARGET_READ_UNITS = 4.0
TARGET_COST_PER_1000 = 0.04

_UI_TEXT_DELTA = b'"type":"text-delta"'
LIMITS_JSON = json.dumps({"pro": {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000,
                                  "tokens_per_day": 1_000_000_000, "concurrent_streams": 1_000}})


@dataclass(frozen=True)
class Options:
    ttft_requests: int = 300
    warmup_requests: int = 30
    throughput_requests: int = 6
    throughput_tokens: int = 5_000
    conversations: int = 5  # conversations of `turns_per_conversation` turns, every turn counted
    turns_per_conversation: int = 10
    deep_turn: int = 50  # the depth of the long-conversation row

    @classmethod
    def quick(cls) -> Options:
        return cls(ttft_requests=40, warmup_requests=5, throughput_requests=2, throughput_tokens=2_000,
                   conversations=2, turns_per_conversation=5, deep_turn=20)


def chat_function_memory_mb() -> int:
    """MemorySize of ChatFunction in template.yaml (the default of its parameter)."""
    from devtools.template_tables import load_template

    template = load_template()
    size = template["Resources"]["ChatFunction"]["Properties"]["MemorySize"]
    reference = getattr(size, "value", None)  # !Ref ChatMemorySize
    if reference is not None:
        size = template["Parameters"][reference]["Default"]
    return int(size)


@contextmanager
def app(upstream: str, extra_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """The chat app as functions/chat/run.sh runs it; yields (base URL, pid)."""
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
               "--timeout-keep-alive", "75", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools",
               "main:app"]
    env = _env(OPENAI_BASE_URL=upstream, OPENAI_API_KEY="bench", DEFAULT_MODEL="openai/bench", CORS_IN_APP="false",
               **extra_env)
    proc = subprocess.Popen(command, cwd=CHAT_DIR, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the chat app did not start")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def full_stack_env() -> Iterator[tuple[dict[str, str], Any, str]]:
    """The emulator with the template's table and one API key; yields (app env, emulator, key)."""
    import boto3
    from chatcore.auth.api_keys import ApiKeyStore

    from devtools.emulator import start_emulator
    from devtools.template_tables import create_tables

    emulator = start_emulator()
    try:
        table = "chat-bench"
        client = boto3.session.Session().client("dynamodb", endpoint_url=emulator.endpoint, region_name="us-east-1",
                                                aws_access_key_id="local", aws_secret_access_key="local")
        create_tables(client, table_name=table)
        key, _ = ApiKeyStore(table, lambda: client).create("bench-user", "pro", "bench")
        env = {"TABLE_NAME": table, "DYNAMODB_ENDPOINT_URL": emulator.endpoint, "AWS_ACCESS_KEY_ID": "local",
               "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": "us-east-1", "AUTH_MODE": "api_key",
               "LIMITS_ENABLED": "true", "LIMITS_JSON": LIMITS_JSON, "STAGE": "local"}
        yield env, emulator, key
    finally:
        emulator.stop()


def ui_body(model: str, conversation: str) -> bytes:
    """A useChat request: one new user message in `conversation` (stored with memory on)."""
    return json.dumps({"id": conversation, "model": model, "trigger": "submit-message", "messages": [
        {"id": f"u{uuid.uuid4().hex[:12]}", "role": "user",
         "parts": [{"type": "text", "text": "Benchmark prompt, please."}]}]}).encode()


def openai_body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "Benchmark prompt, please."}],
                       "stream": True, "stream_options": {"include_usage": True}}).encode()


@dataclass
class PathResult:
    name: str
    direct_ms: list[float]
    app_ms: list[float]
    tokens_per_s: float
    cpu_ms_per_1000_tokens: float
    emulator_cpu_ms_per_1000_tokens: float | None = None
    cpu_ms_per_turn: float = 0.0  # the app's CPU per 16-token turn of the TTFT run (first use included)

    def added(self, q: float) -> float:
        return percentile(self.app_ms, q) - percentile(self.direct_ms, q)


async def _ttft(upstream: str, url: str, headers: dict[str, str], options: Options) -> tuple[list[float], list[float]]:
    direct, through = KeepAliveClient(upstream.removesuffix("/v1")), KeepAliveClient(url, headers)
    direct_ms: list[float] = []
    app_ms: list[float] = []
    conversation = f"ttft-{uuid.uuid4().hex[:8]}"
    try:
        for index in range(options.warmup_requests + options.ttft_requests):
            # A new conversation every 20 turns: some turns start one, most continue one.
            if index % 20 == 0:
                conversation = f"ttft-{uuid.uuid4().hex[:8]}"
            pair: list[tuple[str, KeepAliveClient, str, bytes, re.Pattern[bytes] | bytes]] = [
                ("d", direct, "/v1/chat/completions", openai_body("bench?tokens=16"), _OPENAI_FIRST_CONTENT),
                ("a", through, "/api/chat", ui_body("openai/bench?tokens=16", conversation), _UI_TEXT_DELTA)]
            if index % 2:
                pair.reverse()
            for kind, client, path, body, marker in pair:
                first, _, _ = await client.post(path, body, marker)
                if index >= options.warmup_requests:
                    (direct_ms if kind == "d" else app_ms).append(first * 1000)
    finally:
        await direct.close()
        await through.close()
    return direct_ms, app_ms


async def _throughput(url: str, headers: dict[str, str], options: Options) -> tuple[int, float]:
    client = KeepAliveClient(url, headers)
    model = f"openai/bench?tokens={options.throughput_tokens}"
    await client.post("/api/chat", ui_body(model, f"tp-{uuid.uuid4().hex[:8]}"), _UI_TEXT_DELTA)  # warm-up
    tokens, seconds = 0, 0.0
    for _ in range(options.throughput_requests):
        _, total, buffer = await client.post("/api/chat", ui_body(model, f"tp-{uuid.uuid4().hex[:8]}"), _UI_TEXT_DELTA)
        count = buffer.count(_UI_TEXT_DELTA)
        if count != options.throughput_tokens:
            raise RuntimeError(f"expected {options.throughput_tokens} text deltas, got {count}")
        tokens, seconds = tokens + count, seconds + total
    await client.close()
    return tokens, seconds


async def _turns(url: str, headers: dict[str, str], conversation: str, turns: int) -> None:
    """`turns` turns in `conversation` (the first one creates it), one after another."""
    client = KeepAliveClient(url, headers)
    for _ in range(turns):
        await client.post("/api/chat", ui_body("openai/bench?tokens=50", conversation), _UI_TEXT_DELTA)
    await client.close()


def _counted(emulator: Any, url: str, headers: dict[str, str], conversation: str, turns: int) -> dict[str, dict[str, float]]:
    """The emulator's counts of `turns` turns in `conversation`, per turn, including the work each turn
    leaves to run after its response (the long-term-memory observer)."""
    emulator.reset_stats(units=True)
    asyncio.run(_turns(url, headers, conversation, turns))
    time.sleep(0.5)  # background work after the last response still counts
    return {op: {k: v / turns for k, v in stats.items()} for op, stats in emulator.stats().items()}


@dataclass
class TurnCounts:
    """DynamoDB requests and units per turn: `typical` over the continued turns of short conversations,
    `first` their first turns, and one turn by depth."""

    typical: dict[str, dict[str, float]]
    first: dict[str, dict[str, float]]
    by_depth: dict[str, dict[str, dict[str, float]]]


def _add(into: dict[str, dict[str, float]], counted: dict[str, dict[str, float]], weight: float) -> None:
    for op, stats in counted.items():
        target = into.setdefault(op, {})
        for name, value in stats.items():
            target[name] = target.get(name, 0.0) + value * weight


def count_turns(emulator: Any, url: str, headers: dict[str, str], options: Options) -> TurnCounts:
    typical: dict[str, dict[str, float]] = {}
    first: dict[str, dict[str, float]] = {}
    for index in range(options.conversations):
        conversation = f"typical-{index}"
        _add(first, _counted(emulator, url, headers, conversation, 1), 1 / options.conversations)
        _add(typical, _counted(emulator, url, headers, conversation, options.turns_per_conversation - 1),
             1 / options.conversations)
    by_depth: dict[str, dict[str, dict[str, float]]] = {}
    for depth in (options.turns_per_conversation, options.deep_turn):
        conversation = f"depth-{depth}"
        asyncio.run(_turns(url, headers, conversation, depth - 1))
        time.sleep(0.3)
        by_depth[f"turn {depth} ({2 * (depth - 1)} messages of history)"] = _counted(emulator, url, headers,
                                                                                     conversation, 1)
    return TurnCounts(typical, first, by_depth)


def _totals(per_turn: dict[str, dict[str, float]]) -> tuple[float, float, float]:
    return (sum(s["requests"] for s in per_turn.values()), sum(s["write_units"] for s in per_turn.values()),
            sum(s["read_units"] for s in per_turn.values()))


def measure_path(name: str, upstream: str, extra_env: dict[str, str], headers: dict[str, str], options: Options,
                 emulator: Any = None) -> tuple[PathResult, TurnCounts | None]:
    with app(upstream, extra_env) as (url, pid):
        cpu_start = cpu_seconds(pid)
        direct_ms, app_ms = asyncio.run(_ttft(upstream, url, headers, options))
        cpu_per_turn_ms = (cpu_seconds(pid) - cpu_start) / (options.warmup_requests + options.ttft_requests) * 1000
        cpu_before = cpu_seconds(pid)
        emulator_before = cpu_seconds(emulator.pid) if emulator else 0.0
        tokens, seconds = asyncio.run(_throughput(url, headers, options))
        cpu = cpu_seconds(pid) - cpu_before
        emulator_cpu = cpu_seconds(emulator.pid) - emulator_before if emulator else None
        per_turn = count_turns(emulator, url, headers, options) if emulator is not None else None
    result = PathResult(name, direct_ms, app_ms, tokens / seconds, cpu / tokens * 1_000_000,
                        None if emulator_cpu is None else emulator_cpu / tokens * 1_000_000, cpu_per_turn_ms)
    return result, per_turn


def turn_cost(memory_mb: int, write_units: float, read_units: float, turns: int = 1_000) -> dict[str, float]:
    """Lambda (arm64, the whole streamed turn billed) and DynamoDB on-demand cost of `turns` turns."""
    lambda_compute = turns * TURN_SECONDS * memory_mb / 1024 * LAMBDA_ARM64_GB_SECOND
    lambda_requests = turns * LAMBDA_REQUEST
    dynamodb = turns * (write_units * DYNAMODB_WRITE_REQUEST_UNIT + read_units * DYNAMODB_READ_REQUEST_UNIT)
    return {"lambda": lambda_compute + lambda_requests, "dynamodb": dynamodb,
            "total": lambda_compute + lambda_requests + dynamodb}


def report(relay: PathResult, full: PathResult, counts: TurnCounts, options: Options,
           floor: dict[str, float]) -> str:
    operations = {op: s for op, s in counts.typical.items() if s["requests"] > 0}
    _, write_units, read_units = _totals(operations)
    first = _totals(counts.first)
    n = options.turns_per_conversation
    mix = tuple((f + (n - 1) * t) / n for f, t in zip(first, _totals(operations), strict=True))
    configured = chat_function_memory_mb()

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    extra_p50 = full.added(50) - relay.added(50)
    costs = {mb: turn_cost(mb, write_units, read_units) for mb in (configured, *MEMORY_SIZES_MB)}
    lines = [
        "## Full stack vs relay only (`bench/fullstack.py`)",
        "",
        "The same app (`uvicorn main:app`, uvloop + httptools) in front of the same OpenAI-format upstream "
        "(`bench/upstream.py`). **Relay only**: no table, no auth, no limits. **Full stack**: the `make dev` default "
        "path with DynamoDB memory, API-key auth (`x-api-key`, `AUTH_MODE=api_key`) and limits with stream leases "
        "(`LIMITS_ENABLED=true`), against the embedded emulator process. TTFT requests continue a conversation "
        "(a new one every 20 turns), interleaved with requests straight to the upstream; 16-token answers.",
        "",
        "| measure | relay only | full stack |",
        "|---|---:|---:|",
        f"| added TTFT p50 | {relay.added(50):.2f} ms | {full.added(50):.2f} ms |",
        f"| added TTFT p99 | {relay.added(99):.2f} ms | {full.added(99):.2f} ms |",
        f"| relay throughput ({options.throughput_tokens:,}-token answers) | {relay.tokens_per_s:,.0f} tokens/s "
        f"| {full.tokens_per_s:,.0f} tokens/s |",
        f"| app CPU per 1,000 streamed tokens | {relay.cpu_ms_per_1000_tokens:.1f} ms "
        f"| {full.cpu_ms_per_1000_tokens:.1f} ms (+ emulator {full.emulator_cpu_ms_per_1000_tokens or 0:.1f} ms) |",
        f"| app CPU per turn (16-token answer) | {relay.cpu_ms_per_turn:.1f} ms | {full.cpu_ms_per_turn:.1f} ms |",
        "",
        f"### DynamoDB requests of one turn (counted at the emulator, mean of "
        f"{options.conversations * (options.turns_per_conversation - 1)} turns)",
        "",
        f"The turns after the first of {options.conversations} conversations of {options.turns_per_conversation} "
        "turns each, including the long-term-memory work each turn leaves to run after its response. The first turn "
        "of a conversation (which creates it) and how the units grow with the conversation's depth are in the next "
        "table.",
        "",
        "Counted in the emulator process by `X-Amz-Target`; capacity units computed there from the sizes of the "
        "items each request reads and writes (before and after), by DynamoDB's rules (`devtools/capacity_units.py`: "
        "1 write unit per started KB of the larger image, x2 in a transaction, plus index writes; 1 read unit per "
        "started 4 KB, half when eventually consistent). API key cached (first use: one more GetItem, 0.5 units).",
        "",
        "| operation | requests | write units | read units |",
        "|---|---:|---:|---:|",
        *(f"| {op} | {s['requests']:.2f} | {s['write_units']:.2f} | {s['read_units']:.2f} |"
          for op, s in sorted(operations.items())),
        f"| **one turn** | **{sum(s['requests'] for s in operations.values()):.2f}** | **{write_units:.2f}** "
        f"| **{read_units:.2f}** |",
        "",
        "| one turn | requests | write units | read units |",
        "|---|---:|---:|---:|",
        f"| a conversation's first turn (creates it) | {first[0]:.2f} | {first[1]:.2f} | {first[2]:.2f} |",
        f"| mean over whole {options.turns_per_conversation}-turn conversations, first turns included "
        f"| {mix[0]:.2f} | {mix[1]:.2f} | {mix[2]:.2f} |",
        *(f"| {label} | {t[0]:.2f} | {t[1]:.2f} | {t[2]:.2f} |"
          for label, t in ((label, _totals(c)) for label, c in counts.by_depth.items())),
        "",
        f"### Infrastructure cost of 1,000 ten-second streamed turns (prices {PRICES_AS_OF})",
        "",
        f"Lambda arm64 ${LAMBDA_ARM64_GB_SECOND:.10f} per GB-second and ${LAMBDA_REQUEST * 1e6:.2f} per million "
        f"requests; DynamoDB on-demand ${DYNAMODB_WRITE_REQUEST_UNIT * 1e6:.3f} per million write request units and "
        f"${DYNAMODB_READ_REQUEST_UNIT * 1e6:.3f} per million read request units. A streamed turn holds its Lambda "
        f"for the whole {TURN_SECONDS:.0f} s. Excludes model tokens, data transfer, storage and CloudWatch.",
        "",
        "| chat function memory | Lambda | DynamoDB | total per 1,000 turns |",
        "|---|---:|---:|---:|",
        *(f"| {mb} MB{' (template.yaml)' if mb == configured else ''} | ${c['lambda']:.4f} | ${c['dynamodb']:.4f} "
          f"| **${c['total']:.4f}** |" for mb, c in costs.items()),
        "",
        "### What the emulator puts before the first token",
        "",
        "A turn must finish four DynamoDB requests before its first token: the admission, the history read and the "
        "memory digest (sent together), then the question's put (sent with the model call; the first token waits "
        "for it, so that a duplicate is a 409). The emulator is one Python process that answers one request at a "
        "time, so on this machine they cost the sum of their round trips; DynamoDB serves the first three in "
        "parallel. Each one alone, one client, medians:",
        "",
        "| request | round trip |",
        "|---|---:|",
        *(f"| {name} | {ms:.2f} ms |" for name, ms in floor.items()),
        f"| **sum** | **{sum(floor.values()):.2f} ms** |",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| full-stack added TTFT p50 within {TARGET_ADDED_TTFT_MS:.0f} ms of relay-only | +{extra_p50:.2f} ms "
        f"| {met(extra_p50 <= TARGET_ADDED_TTFT_MS)} |",
        f"| at most {TARGET_WRITE_UNITS:.0f} write units per turn | {write_units:.2f} "
        f"| {met(write_units <= TARGET_WRITE_UNITS)} |",
        f"| at most {TARGET_READ_UNITS:.0f} read units per turn | {read_units:.2f} | {met(read_units <= TARGET_READ_UNITS)} |",
        f"| at most ${TARGET_COST_PER_1000:.2f} per 1,000 turns at {configured} MB | ${costs[configured]['total']:.4f} "
        f"| {met(costs[configured]['total'] <= TARGET_COST_PER_1000)} |",
        "",
    ]
    return "\n".join(lines)


def emulator_floor(endpoint: str, table: str, rounds: int) -> dict[str, float]:
    """Median round trip (ms) of each request a turn must finish before its first token, sent one at a
    time by one client to the emulator: what the emulator alone puts on the critical path."""
    import dataclasses
    import statistics

    import boto3
    from chatcore.conversations.store import ConversationStore, StoredMessage, answer_position, next_question_position
    from chatcore.limits.ledger import Admitted, LimitLedger
    from chatcore.limits.policy import TierLimits
    from chatcore.memories.store import MemoryStore
    from chatcore.settings import Settings

    client = boto3.session.Session().client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                                            aws_access_key_id="local", aws_secret_access_key="local")
    settings = dataclasses.replace(Settings(), table_name=table, dynamodb_endpoint_url=endpoint)
    store = ConversationStore(settings, client=client)
    ledger = LimitLedger(table, lambda: client, 900)
    memories = MemoryStore(settings, client=client, critical_client=client)
    limits = TierLimits(requests_per_minute=10**6, tokens_per_minute=10**9, tokens_per_day=10**9,
                        concurrent_streams=1000)
    times: dict[str, list[float]] = {"admit (UpdateItem)": [], "history (Query)": [], "memory digest (Query)": [],
                                     "question (PutItem)": []}
    for index in range(rounds):
        conversation = f"floor-{index // 10}"  # up to 20 messages of history, like the TTFT run
        if index % 10 == 0:
            store.append_message("floor-user", conversation, StoredMessage(id=f"q{index}", role="user", text="hello"))
        started = time.perf_counter()
        admitted = ledger.admit("floor-user", time.time(), 100, limits)
        times["admit (UpdateItem)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        history = store.load_recent("floor-user", conversation)
        times["history (Query)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        memories.digest("floor-user", settings.memory_digest_size, consistent=False)
        times["memory digest (Query)"].append(time.perf_counter() - started)
        position = next_question_position(history)
        assert position is not None
        started = time.perf_counter()
        store.put_question("floor-user", conversation, StoredMessage(id=f"m{index}", role="user", text="Benchmark "
                                                                     "prompt, please.", position=position))
        times["question (PutItem)"].append(time.perf_counter() - started)
        store.put_answer("floor-user", conversation, StoredMessage(id=f"a{index}", role="assistant", text="ok " * 16,
                                                                   position=answer_position(position)), counted=2)
        if isinstance(admitted, Admitted):
            ledger.settle("floor-user", admitted, 0)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def run(quick: bool = False) -> str:
    """The full-stack section of docs/benchmarks.md."""
    options = Options.quick() if quick else Options()
    with upstream_process() as upstream:
        relay, _ = measure_path("relay only", upstream, {}, {}, options)
        with full_stack_env() as (env, emulator, key):
            full, per_turn = measure_path("full stack", upstream, env, {"x-api-key": key}, options, emulator)
            floor = emulator_floor(emulator.endpoint, env["TABLE_NAME"], 60 if quick else 300)
    assert per_turn is not None
    return report(relay, full, per_turn, options, floor)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))

