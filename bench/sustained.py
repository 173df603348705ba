"""Sustained use of `make dev`: thousands of chat turns, then 200 concurrent streams.

Runs `python -m devtools.devserver` (the `make dev` command, embedded emulator, data in a temporary
directory) as a subprocess and drives it from here over HTTP, one turn at a time: each turn is a new
conversation or continues an earlier one (half and half, seeded). Reports the median request time of
the first and the last 500 turns, the RSS of the dev server and its emulator along the way, and
whether 200 concurrent streams all complete.

    python -m bench.sustained            # 5,000 turns
    python -m bench.sustained --quick    # 600 turns, 200 concurrent streams
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mock/lorem?tokens=50&ttft_ms=0&pace_ms=0"
STREAM_MODEL = "mock/lorem?tokens=50&ttft_ms=0&pace_ms=20"  # one-second streams: 200 overlap for real
WINDOW = 500
TARGET_RSS_MB = 400.0
TARGET_SLOWDOWN = 1.5


@dataclass(frozen=True)
class Options:
    turns: int = 5_000
    concurrent_streams: int = 200
    checkpoint_every: int = 1_000

    @classmethod
    def quick(cls) -> Options:
        return cls(turns=600, concurrent_streams=200, checkpoint_every=200)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_mb(pid: int) -> float:
    """Resident set size of one process, in MB (VmRSS)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DevServerProcess:
    """`python -m devtools.devserver` on a free port, with its own data directory."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.data = tempfile.TemporaryDirectory(prefix="bench-dev-")
        base = {key: value for key, value in os.environ.items()
                if not key.startswith(("AWS_", "DYNAMODB_", "LOCAL_DYNAMODB", "TABLE_NAME", "AUTH_", "LIMITS_"))}
        base.update(PORT=str(self.port), LOCAL_DYNAMODB_DIR=self.data.name, LOG_LEVEL="WARNING",
                    PYTHONUNBUFFERED="1")
        base.update(env or {})
        self.log = open(Path(self.data.name) / "devserver.log", "w+")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "devtools.devserver", "--no-access-log",
                                         "--log-level", "warning"], cwd=ROOT, env=base, stdin=subprocess.DEVNULL,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.base_url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dev server did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def rss(self) -> dict[int, float]:
        """RSS in MB of every process of the dev server (the app and the emulator)."""
        return {pid: rss_mb(pid) for pid in process_tree(self.process.pid)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.data.cleanup()


def turn_body(conversation: str, text: str, model: str = MODEL) -> dict[str, object]:
    return {"id": conversation, "model": model, "trigger": "submit-message",
            "messages": [{"id": f"u{random.getrandbits(48):x}", "role": "user", "parts": [{"type": "text", "text": text}]}]}


@dataclass
class SustainedResult:
    turns_ms: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, float, float]] = field(default_factory=list)  # (turn, total MB, ms median since)
    conversations: int = 0
    rss_start: dict[int, float] = field(default_factory=dict)
    rss_end: dict[int, float] = field(default_factory=dict)
    rss_after_streams: dict[int, float] = field(default_factory=dict)
    streams_completed: int = 0
    streams_started: int = 0
    streams_seconds: float = 0.0
    pids: dict[str, int] = field(default_factory=dict)


def _run_turns(server: DevServerProcess, options: Options, result: SustainedResult) -> None:
    rng = random.Random(11)
    conversations: list[str] = []
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        since = 0
        for n in range(options.turns):
            if not conversations or rng.random() < 0.5:
                conversations.append(f"c{n:05d}")
                conversation = conversations[-1]
            else:
                conversation = rng.choice(conversations)
            started = time.perf_counter()
            response = client.post("/api/chat", json=turn_body(conversation, f"question {n}"))
            if response.status_code != 200 or not response.text.rstrip().endswith("data: [DONE]"):
                raise RuntimeError(f"turn {n}: {response.status_code} {response.text[-300:]}")
            result.turns_ms.append((time.perf_counter() - started) * 1000)
            if (n + 1) % options.checkpoint_every == 0:
                recent = statistics.median(result.turns_ms[since:])
                result.checkpoints.append((n + 1, sum(server.rss().values()), recent))
                since = n + 1
                print(f"bench.sustained: {n + 1} turns, {result.checkpoints[-1][1]:.0f} MB, "
                      f"median {recent:.1f} ms", file=sys.stderr, flush=True)
    result.conversations = len(conversations)


async def _concurrent_streams(base_url: str, count: int) -> tuple[int, float]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(base_url=base_url, timeout=180, limits=limits) as client:
        async def one(n: int) -> bool:
            try:
                async with client.stream("POST", "/api/chat",
                                         json=turn_body(f"s{n:04d}", f"stream {n}", STREAM_MODEL)) as response:
                    body = b"".join([chunk async for chunk in response.aiter_raw()])
                return response.status_code == 200 and body.rstrip().endswith(b"data: [DONE]")
            except httpx.HTTPError:
                return False

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(n) for n in range(count)))
        return sum(outcomes), time.perf_counter() - started


def measure(options: Options) -> SustainedResult:
    result = SustainedResult()
    server = DevServerProcess()
    try:
        tree = process_tree(server.process.pid)
        result.pids = {"app": server.process.pid, **{f"child {pid}": pid for pid in tree[1:]}}
        result.rss_start = server.rss()
        _run_turns(server, options, result)
        result.rss_end = server.rss()
        result.streams_started = options.concurrent_streams
        result.streams_completed, result.streams_seconds = asyncio.run(
            _concurrent_streams(server.base_url, options.concurrent_streams))
        result.rss_after_streams = server.rss()
    finally:
        server.stop()
    return result


def report(result: SustainedResult, options: Options) -> str:
    first = statistics.median(result.turns_ms[:WINDOW])
    last = statistics.median(result.turns_ms[-WINDOW:])
    total_end = sum(result.rss_end.values())
    app_pid = result.pids["app"]

    def split(rss: dict[int, float]) -> str:
        app = rss.get(app_pid, 0.0)
        return f"{sum(rss.values()):.0f} MB (app {app:.0f} MB, emulator {sum(rss.values()) - app:.0f} MB)"

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    lines = [
        "## Sustained use of `make dev` (`bench/sustained.py`)",
        "",
        f"`python -m devtools.devserver` (the `make dev` command: app and embedded emulator, data in a temporary "
        f"directory) as a subprocess; {options.turns:,} chat turns one at a time from a keep-alive client, each a new "
        f"conversation or a continued one (half and half, seeded), model `{MODEL}` (50 tokens, no delays). "
        f"{result.conversations:,} conversations at the end. RSS is VmRSS of the dev server's whole process tree.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| RSS of app + emulator after {options.turns:,} turns < {TARGET_RSS_MB:.0f} MB | {split(result.rss_end)} "
        f"| {met(total_end < TARGET_RSS_MB)} |",
        f"| median request time, last {WINDOW} turns <= {TARGET_SLOWDOWN}x the first {WINDOW} | {last:.1f} ms vs "
        f"{first:.1f} ms ({last / first:.2f}x) | {met(last <= TARGET_SLOWDOWN * first)} |",
        f"| {result.streams_started} concurrent streams all complete | {result.streams_completed} of "
        f"{result.streams_started} in {result.streams_seconds:.1f} s | "
        f"{met(result.streams_completed == result.streams_started)} |",
        "",
        "| after turn | RSS, app + emulator | median request time since the previous row |",
        "|---:|---:|---:|",
        f"| 0 | {sum(result.rss_start.values()):.0f} MB | |",
        *(f"| {turn:,} | {mb:.0f} MB | {ms:.1f} ms |" for turn, mb, ms in result.checkpoints),
        "",
        f"After the {result.streams_started} concurrent streams (`{STREAM_MODEL}`, one second each): "
        f"{split(result.rss_after_streams)}.",
        "",
    ]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """The sustained-use section of docs/benchmarks.md."""
    options = Options.quick() if quick else Options()
    return report(measure(options), options)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.sustained", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--turns", type=int)
    args = parser.parse_args()
    chosen = Options.quick() if args.quick else Options()
    if args.turns:
        chosen = Options(turns=args.turns, concurrent_streams=chosen.concurrent_streams,
                         checkpoint_every=max(args.turns // 5, 1))
    print(report(measure(chosen), chosen))

