"""Resumable streams: what `RESUMABLE_STREAMS=true` adds to a streamed turn.

The full stack of `bench.fullstack` (DynamoDB memory, API keys, limits with leases, against the
emulator process), once with resumability off and once on for each flush interval, in front of the
same OpenAI-format upstream (`bench.upstream`). Measured:

- DynamoDB requests and write units per turn, counted at the emulator (`GET /_emulator/stats`), for
  answers streamed at a typical rate (`PACE_MS` between tokens), turns run concurrently in separate
  conversations; the extra over "off" per second of streaming is the figure the target is about;
- the read units of the writer's stop checks (one consistent `GetItem` once a second has passed
  without a call to DynamoDB), and what the extra writes and reads cost per 1,000 turns;
- the time to first token the app adds over the upstream alone (interleaved direct requests, as
  in `bench.fullstack`), off vs on.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.chat import KeepAliveClient, percentile, upstream_process
from bench.fullstack import _UI_TEXT_DELTA, Options, _ttft, app, full_stack_env, ui_body

PACE_MS = 20.0  # 50 tokens per second: a typical hosted model's streaming rate
FAST_PACE_MS = 1000 / 150  # 150 tokens per second: a fast model, the batch size's worst case
DEFAULT_FLUSH_MS = "2000"
TARGET_WCU_PER_S = 1.0
WRITE_PRICE = 0.625 / 1e6  # on-demand, per write request unit (us-east-1)
READ_PRICE = 0.125 / 1e6  # per read request unit
TARGET_ADDED_TTFT_MS = 1.0  # noise level: "none" on the critical path


@dataclass(frozen=True)
class Run:
    turns: int = 10
    tokens: int = 500  # 10 s at 50 tokens/s
    ttft: Options = field(default_factory=lambda: Options(ttft_requests=200, warmup_requests=20))

    @classmethod
    def quick(cls) -> Run:
        return cls(turns=4, tokens=200, ttft=Options(ttft_requests=40, warmup_requests=5))


@dataclass
class Config:
    name: str
    env: dict[str, str]
    pace_ms: float = PACE_MS
    per_turn: dict[str, dict[str, float]] | None = None
    ttft_added_p50: float = 0.0
    ttft_added_p95: float = 0.0
    answer_s: float = 0.0


async def _paced_turns(url: str, headers: dict[str, str], run: Run, pace_ms: float) -> float:
    """`run.turns` concurrent turns, each in a new conversation; returns the mean answer duration (s)."""
    model = f"openai/bench?tokens={run.tokens}&pace_ms={pace_ms}"

    async def turn() -> float:
        client = KeepAliveClient(url, headers)
        try:
            first, total, buffer = await client.post("/api/chat", ui_body(model, f"rs-{uuid.uuid4().hex[:10]}"),
                                                     _UI_TEXT_DELTA)
        finally:
            await client.close()
        if buffer.count(_UI_TEXT_DELTA) != run.tokens:
            raise RuntimeError("the answer was not complete")
        return total - first

    durations = await asyncio.gather(*(turn() for _ in range(run.turns)))
    return sum(durations) / len(durations)


def measure(config: Config, upstream: str, env: dict[str, str], emulator: Any, key: str, run: Run) -> None:
    headers = {"x-api-key": key}
    with app(upstream, {**env, **config.env}) as (url, _pid):
        direct, through = asyncio.run(_ttft(upstream, url, headers, run.ttft))
        config.ttft_added_p50 = percentile(through, 50) - percentile(direct, 50)
        config.ttft_added_p95 = percentile(through, 95) - percentile(direct, 95)
        emulator.reset_stats(units=True)
        config.answer_s = asyncio.run(_paced_turns(url, headers, run, config.pace_ms))
        time.sleep(0.5)
        config.per_turn = {op: {k: v / run.turns for k, v in stats.items()} for op, stats in emulator.stats().items()}


def _totals(per_turn: dict[str, dict[str, float]]) -> tuple[float, float, float]:
    requests = sum(s.get("requests", 0.0) for s in per_turn.values())
    writes = sum(s.get("write_units", 0.0) for s in per_turn.values())
    reads = sum(s.get("read_units", 0.0) for s in per_turn.values())
    return requests, writes, reads


def _check_reads(config: Config, base: Config) -> float:
    """Read units of the stop checks per turn: the `GetItem`s "off" does not make."""
    assert config.per_turn is not None and base.per_turn is not None
    return (config.per_turn.get("GetItem", {}).get("read_units", 0.0)
            - base.per_turn.get("GetItem", {}).get("read_units", 0.0))


def report(configs: list[Config], run: Run) -> str:
    base = configs[0]
    assert base.per_turn is not None
    base_requests, base_writes, _ = _totals(base.per_turn)
    lines = [
        "## Resumable streams (`RESUMABLE_STREAMS`)",
        "",
        f"`python -m bench --only resumable` (`bench/resumable.py`). The full stack of the section above "
        f"(memory, API key, limits and leases, the emulator process), {run.turns} concurrent turns of "
        f"{run.tokens} tokens at {1000 / PACE_MS:.0f} tokens/s (a typical hosted model; one row at "
        f"{1000 / FAST_PACE_MS:.0f}), each in a new conversation; DynamoDB requests and units per turn counted at "
        "the emulator. Extra cost per 1,000 turns at on-demand prices ($0.625 per million write request units, "
        "$0.125 per million read request units). Time to first token "
        f"added over the upstream alone: {run.ttft.ttft_requests} interleaved requests of 16 tokens.",
        "",
        "| configuration | answer (s) | requests / turn | write units / turn | extra writes / turn | "
        "extra write units / turn | extra WCU per s of streaming | stop-check read units / turn | "
        "extra cost per 1,000 turns | added TTFT p50 / p95 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config in configs:
        assert config.per_turn is not None
        requests, writes, _ = _totals(config.per_turn)
        extra_requests, extra_writes = requests - base_requests, writes - base_writes
        per_s = extra_writes / config.answer_s if config.answer_s else 0.0
        checks = _check_reads(config, base)
        cost = 1000 * (extra_writes * WRITE_PRICE + checks * READ_PRICE)
        lines.append(
            f"| {config.name} | {config.answer_s:.1f} | {requests:.1f} | {writes:.1f} | {extra_requests:+.1f} | "
            f"{extra_writes:+.1f} | {per_s:.2f} | {checks:.1f} | ${cost:.5f} | "
            f"{config.ttft_added_p50:.2f} / {config.ttft_added_p95:.2f} |")
    lines += ["", "Operations per turn (requests, write units, read units):", ""]
    for config in configs:
        assert config.per_turn is not None
        ops = ", ".join(f"{op} {s.get('requests', 0):.1f} ({s.get('write_units', 0):.1f} WU, "
                        f"{s.get('read_units', 0):.1f} RU)"
                        for op, s in sorted(config.per_turn.items()) if s.get("requests"))
        lines.append(f"- {config.name}: {ops}")
    chosen = next(c for c in configs if c.env.get("STREAM_FLUSH_MS") == DEFAULT_FLUSH_MS and c.pace_ms == PACE_MS)
    assert chosen.per_turn is not None
    per_s = (_totals(chosen.per_turn)[1] - base_writes) / chosen.answer_s
    added = chosen.ttft_added_p50 - base.ttft_added_p50
    lines += [
        "",
        f"Targets, default flush interval ({chosen.name}): at most {TARGET_WCU_PER_S:.0f} extra write unit per "
        f"second of streaming: **{per_s:.2f}** ({'met' if per_s <= TARGET_WCU_PER_S else 'missed'}); "
        f"no added time to first token (the first chunk is queued to the client before the log sees it, and "
        f"the log is written by its own task): p50 {added:+.2f} ms vs off (the off run's own spread on a "
        f"shared machine is larger than {TARGET_ADDED_TTFT_MS:.0f} ms; compare the rows).",
    ]
    return "\n".join(lines) + "\n"


def run(quick: bool = False) -> str:
    """The resumable-streams section of docs/benchmarks.md."""
    settings = Run.quick() if quick else Run()
    configs = [
        Config("off", {"RESUMABLE_STREAMS": "false"}),
        Config("on, flush 2000 ms (default)", {"RESUMABLE_STREAMS": "true", "STREAM_FLUSH_MS": DEFAULT_FLUSH_MS}),
        Config("on, flush 1000 ms", {"RESUMABLE_STREAMS": "true", "STREAM_FLUSH_MS": "1000"}),
        Config(f"on, flush 2000 ms, {1000 / FAST_PACE_MS:.0f} tokens/s",
               {"RESUMABLE_STREAMS": "true", "STREAM_FLUSH_MS": DEFAULT_FLUSH_MS}, pace_ms=FAST_PACE_MS),
    ]
    with upstream_process() as upstream, full_stack_env() as (env, emulator, key):
        for config in configs:
            measure(config, upstream, env, emulator, key, settings)
    return report(configs, settings)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
