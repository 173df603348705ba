"""The chat relay: time to first token it adds, relay throughput, cold import time.

Three processes, like production: the OpenAI-format upstream (`bench.upstream`), the chat app
under uvicorn with `OPENAI_BASE_URL` pointing at it (the same command as functions/chat/run.sh),
and this process as the client. The client is a bare asyncio HTTP/1.1 client on keep-alive
connections, so its own cost is small and identical on both paths.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHAT_DIR = ROOT / "functions" / "chat"
LAYER_DIR = ROOT / "layers" / "common"

TARGET_TTFT_P50_MS = 2.0
TARGET_TTFT_P99_MS = 10.0
TARGET_TOKENS_PER_S = 20_000
TARGET_IMPORT_MS = 300.0

STARTUP_TIMEOUT_S = 60.0
_END_OF_CHUNKED = b"\r\n0\r\n\r\n"
_OPENAI_FIRST_CONTENT = re.compile(rb'"delta":\{"content":"[^"]')
_UI_TEXT_DELTA = b'"type":"text-delta"'


@dataclass(frozen=True)
class Options:
    ttft_requests: int = 300
    warmup_requests: int = 30
    throughput_requests: int = 8
    throughput_tokens: int = 5_000
    concurrency: int = 4
    import_runs: int = 9
    server: str = "lambda"  # "lambda": uvloop + httptools as functions/chat/run.sh; "pure": asyncio + h11

    @classmethod
    def quick(cls, server: str = "lambda") -> Options:
        return cls(ttft_requests=40, warmup_requests=5, throughput_requests=2, throughput_tokens=2_000,
                   concurrency=2, import_runs=3, server=server)


# --- processes ---------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    """A clean environment: no credentials or settings leak in from the shell."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(CHAT_DIR), str(LAYER_DIR)])
    env.update(extra)
    return env


@contextmanager
def upstream_process() -> Iterator[str]:
    """Run `bench.upstream` in a subprocess; yield its OpenAI base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", "0"], cwd=ROOT,
                            env=_env(PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r"http://\S+", line)
        if match is None:
            raise RuntimeError(f"the upstream did not start: {line!r}")
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def app_process(openai_base_url: str, server: str) -> Iterator[str]:
    """Run the chat app as functions/chat/run.sh does; yield its base URL once /healthz answers."""
    port = _free_port()
    loop_http = ["--loop", "uvloop", "--http", "httptools"] if server == "lambda" else ["--loop", "asyncio",
                                                                                         "--http", "h11"]
    command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
               "--timeout-keep-alive", "75", "--log-level", "warning", *loop_http, "main:app"]
    # As deployed: CORS is the Function URL's job in Lambda, and no table means no storage calls.
    env = _env(OPENAI_BASE_URL=openai_base_url, OPENAI_API_KEY="bench", DEFAULT_MODEL="openai/bench",
               CORS_IN_APP="false")
    proc = subprocess.Popen(command, cwd=CHAT_DIR, env=env, stdout=subprocess.DEVNULL)  # EMF and JSON logs
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the chat app did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# --- client ------------------------------------------------------------------------------


class KeepAliveClient:
    """One keep-alive HTTP/1.1 connection; POSTs JSON (with `headers`) and reads a chunked streaming response."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
        return self._reader, self._writer

    async def post(self, path: str, body: bytes, marker: re.Pattern[bytes] | bytes) -> tuple[float, float, bytes]:
        """Send; return (seconds to the first body byte matching `marker`, seconds to the end, body)."""
        reader, writer = await self._connect()
        request = (f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-type: application/json\r\n"
                   f"{self.extra}content-length: {len(body)}\r\n\r\n").encode() + body
        started = time.perf_counter()
        writer.write(request)
        buffer = b""
        first = 0.0
        while not buffer.endswith(_END_OF_CHUNKED):
            data = await reader.read(1 << 20)
            if not data:
                raise ConnectionError("the server closed the connection mid-response")
            buffer += data
            if not first and (marker.search(buffer) if isinstance(marker, re.Pattern) else marker in buffer):
                first = time.perf_counter() - started
        if not buffer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {buffer[:300]!r}")
        return first, time.perf_counter() - started, buffer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _chat_body(model: str) -> bytes:
    import json

    return json.dumps({"model": model, "messages": [{"role": "user", "content": "Benchmark prompt, please."}]}).encode()


def _openai_body(model: str) -> bytes:
    import json

    return json.dumps({"model": model, "messages": [{"role": "user", "content": "Benchmark prompt, please."}],
                       "stream": True, "stream_options": {"include_usage": True}}).encode()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class TTFTResult:
    direct_ms: list[float]
    app_ms: list[float]

    def added(self, q: float) -> float:
        return percentile(self.app_ms, q) - percentile(self.direct_ms, q)

    def paired_median_ms(self) -> float:
        return statistics.median(a - d for a, d in zip(self.app_ms, self.direct_ms, strict=True))


async def measure_ttft(upstream: str, app: str, options: Options) -> TTFTResult:
    """Interleaved direct/app requests (alternating order); time to the first content delta."""
    direct, through = KeepAliveClient(upstream.removesuffix("/v1")), KeepAliveClient(app)
    direct_body, app_body = _openai_body("bench?tokens=16"), _chat_body("openai/bench?tokens=16")
    direct_ms: list[float] = []
    app_ms: list[float] = []
    try:
        for index in range(options.warmup_requests + options.ttft_requests):
            pair: list[tuple[str, KeepAliveClient, str, bytes, re.Pattern[bytes] | bytes]] = [
                ("d", direct, "/v1/chat/completions", direct_body, _OPENAI_FIRST_CONTENT),
                    ("a", through, "/api/chat", app_body, _UI_TEXT_DELTA)]
            if index % 2:
                pair.reverse()
            for kind, client, path, body, marker in pair:
                first, _, _ = await client.post(path, body, marker)
                if index >= options.warmup_requests:
                    (direct_ms if kind == "d" else app_ms).append(first * 1000)
    finally:
        await direct.close()
        await through.close()
    return TTFTResult(direct_ms, app_ms)


@dataclass(frozen=True)
class ThroughputResult:
    tokens: int
    seconds: float
    direct_tokens_per_s: float
    concurrent_tokens: int
    concurrent_seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def concurrent_tokens_per_s(self) -> float:
        return self.concurrent_tokens / self.concurrent_seconds


async def measure_throughput(upstream: str, app: str, options: Options) -> ThroughputResult:
    """Long answers with no upstream delay: tokens the client received per second of wall time."""
    model = f"bench?tokens={options.throughput_tokens}"
    body = _chat_body(f"openai/{model}")

    async def one(client: KeepAliveClient) -> tuple[int, float]:
        _, total, buffer = await client.post("/api/chat", body, _UI_TEXT_DELTA)
        count = buffer.count(_UI_TEXT_DELTA)
        if count != options.throughput_tokens:
            raise RuntimeError(f"expected {options.throughput_tokens} text deltas, got {count}")
        return count, total

    client = KeepAliveClient(app)
    await one(client)  # warm-up
    tokens, seconds = 0, 0.0
    for _ in range(options.throughput_requests):
        count, total = await one(client)
        tokens, seconds = tokens + count, seconds + total
    await client.close()

    direct = KeepAliveClient(upstream.removesuffix("/v1"))
    started = time.perf_counter()
    for _ in range(options.throughput_requests):
        await direct.post("/v1/chat/completions", _openai_body(model), _OPENAI_FIRST_CONTENT)
    direct_rate = options.throughput_tokens * options.throughput_requests / (time.perf_counter() - started)
    await direct.close()

    clients = [KeepAliveClient(app) for _ in range(options.concurrency)]
    started = time.perf_counter()
    results = await asyncio.gather(*(one(c) for c in clients))
    concurrent_seconds = time.perf_counter() - started
    for c in clients:
        await c.close()
    return ThroughputResult(tokens, seconds, direct_rate, sum(r[0] for r in results), concurrent_seconds)


# --- cold import ---------------------------------------------------------------------------

_IMPORT_SNIPPET = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)$")


@dataclass(frozen=True)
class ImportResult:
    runs_ms: list[float]
    fastapi_ms: float  # median of `import fastapi` alone: the floor while the app is a FastAPI app
    interpreter_ms: float
    by_package_ms: list[tuple[str, float]]  # self time summed per top-level package
    heaviest_ms: list[tuple[str, float]]  # modules by cumulative time, below `main`

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)


def measure_import(options: Options) -> ImportResult:
    """Fresh interpreters importing functions/chat/main.py (bytecode caches warm, as after a first run)."""
    env = _env(OPENAI_API_KEY="bench", OPENAI_BASE_URL="http://127.0.0.1:9/v1", DEFAULT_MODEL="openai/bench")
    subprocess.run([sys.executable, "-c", "import main"], cwd=CHAT_DIR, env=env, check=True)  # write .pyc
    def timed_import(module: str) -> float:
        done = subprocess.run([sys.executable, "-c", _IMPORT_SNIPPET.format(module=module)], cwd=CHAT_DIR, env=env,
                              check=True, capture_output=True, text=True)
        return float(done.stdout.strip()) * 1000

    runs = [timed_import("main") for _ in range(options.import_runs)]
    fastapi_ms = statistics.median(timed_import("fastapi") for _ in range(options.import_runs))
    started = time.perf_counter()
    for _ in range(3):
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    interpreter_ms = (time.perf_counter() - started) / 3 * 1000

    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import main"], cwd=CHAT_DIR, env=env,
                           check=True, capture_output=True, text=True).stderr
    entries = [(int(m[1]), int(m[2]), len(m[3]) // 2, m[4]) for m in map(_IMPORT_LINE.match, trace.splitlines())
               if m]
    # Children print before their parent: everything up to `main` at depth 0 belongs to it.
    main_at = next(i for i, e in enumerate(entries) if e[3] == "main" and e[2] == 0)
    start = max((i + 1 for i, e in enumerate(entries[:main_at]) if e[2] == 0), default=0)
    below_main = entries[start:main_at]
    by_package: dict[str, float] = defaultdict(float)
    for self_us, _, _, name in below_main:
        by_package[name.split(".")[0]] += self_us / 1000
    heaviest = sorted(((name, cumulative / 1000) for _, cumulative, depth, name in below_main if depth <= 2),
                      key=lambda item: -item[1])
    return ImportResult(runs, fastapi_ms, interpreter_ms, sorted(by_package.items(), key=lambda item: -item[1])[:10],
                        heaviest[:10])


# --- report --------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(ttft: TTFTResult, throughput: ThroughputResult, imports: ImportResult, options: Options) -> str:
    """The markdown section for docs/benchmarks.md."""
    p50, p99 = ttft.added(50), ttft.added(99)
    server = ("uvloop + httptools, as functions/chat/run.sh runs it in Lambda" if options.server == "lambda"
              else "the pure-Python asyncio loop + h11")
    lines = [
        "## Chat relay (`bench/chat.py`)",
        "",
        f"Upstream: `bench/upstream.py` (OpenAI Chat Completions wire format, `include_usage`, `[DONE]`, chunked "
        f"HTTP/1.1). App: `uvicorn main:app` from `functions/chat` with `OPENAI_BASE_URL` pointing at the upstream, "
        f"model `openai/bench`, one worker, {server}. Client: bare asyncio HTTP/1.1 on keep-alive connections.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| added TTFT p50 <= {TARGET_TTFT_P50_MS:g} ms | {p50:.2f} ms | {_met(p50 <= TARGET_TTFT_P50_MS)} |",
        f"| added TTFT p99 <= {TARGET_TTFT_P99_MS:g} ms | {p99:.2f} ms | {_met(p99 <= TARGET_TTFT_P99_MS)} |",
        f"| relay throughput >= {TARGET_TOKENS_PER_S:,} tokens/s | {throughput.tokens_per_s:,.0f} tokens/s | "
        f"{_met(throughput.tokens_per_s >= TARGET_TOKENS_PER_S)} |",
        f"| cold import of `main` <= {TARGET_IMPORT_MS:g} ms | {imports.median_ms:.0f} ms | "
        f"{_met(imports.median_ms <= TARGET_IMPORT_MS)} |",
        "",
        f"### Time to first token ({len(ttft.app_ms)} requests per path, interleaved, after "
        f"{options.warmup_requests} warm-up pairs)",
        "",
        "Time from writing the request to receiving the first content delta: `choices[0].delta.content` direct, "
        "the first `text-delta` chunk through the app. 16-token answers, no upstream delay.",
        "",
        "| path | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for name, values in (("direct to upstream", ttft.direct_ms), ("through the chat app", ttft.app_ms)):
        lines.append(f"| {name} | {percentile(values, 50):.2f} ms | {percentile(values, 90):.2f} ms | "
                     f"{percentile(values, 99):.2f} ms | {max(values):.2f} ms |")
    lines += [
        f"| **added by the app** | **{p50:.2f} ms** | {ttft.added(90):.2f} ms | **{p99:.2f} ms** | |",
        "",
        f"Median of the per-pair differences: {ttft.paired_median_ms():.2f} ms.",
        "",
        "### Relay throughput",
        "",
        f"{options.throughput_requests} sequential answers of {options.throughput_tokens:,} tokens with no upstream "
        f"delay, each token one OpenAI chunk in and one `text-delta` chunk out, counted by the client.",
        "",
        f"- one stream at a time: **{throughput.tokens_per_s:,.0f} tokens/s** "
        f"({throughput.tokens:,} tokens in {throughput.seconds:.2f} s)",
        f"- {options.concurrency} concurrent streams: {throughput.concurrent_tokens_per_s:,.0f} tokens/s in total",
        f"- the upstream alone, read directly: {throughput.direct_tokens_per_s:,.0f} tokens/s (the ceiling of this "
        "set-up)",
        "",
        "### Cold import",
        "",
        f"`python -c \"import main\"` in `functions/chat` with `PYTHONPATH` = functions/chat + layers/common, "
        f"{options.import_runs} fresh interpreters, bytecode caches warm: median **{imports.median_ms:.0f} ms** "
        f"(min {min(imports.runs_ms):.0f}, max {max(imports.runs_ms):.0f}); bare interpreter start-up "
        f"`python -c pass`: {imports.interpreter_ms:.0f} ms wall.",
        "",
        f"`import fastapi` alone, measured the same way: median **{imports.fastapi_ms:.0f} ms**. FastAPI is a fixed "
        "point of the design (the chat function is a FastAPI app under uvicorn), so on this machine the 300 ms "
        "target leaves the rest of the app (pydantic models, asyncio, the chatcore modules) about "
        f"{max(300 - imports.fastapi_ms, 0):.0f} ms; everything that is not needed to serve the first request "
        "(provider adapters and httpx, boto3 and the DynamoDB clients, Powertools, PyJWT) is imported on first use.",
        "",
        "Top offenders from `-X importtime` (self time summed per top-level package, imports caused by `main`):",
        "",
        "| package | self time |",
        "|---|---|",
        *(f"| `{name}` | {ms:.1f} ms |" for name, ms in imports.by_package_ms),
        "",
        "Heaviest modules by cumulative time (depth <= 2 below `main`):",
        "",
        "| module | cumulative |",
        "|---|---|",
        *(f"| `{name}` | {ms:.1f} ms |" for name, ms in imports.heaviest_ms),
        "",
        "### Known costs on these paths",
        "",
        "- Per token, the relay runs the OpenAI SSE parser, one `asyncio.timeout_at` (idle clock, `chatcore/clocks.py`), "
        "the router and memory wrappers and the encoder; `chatcore/protocols/coalesce.py` joins the chunks that are "
        "ready together into one socket write (a burst of tokens used to cost one ASGI message and one `send()` each).",
        "- The app's own HTTP server runs on uvloop + httptools (in the layer; `run.sh` selects them): with the "
        "pure-Python asyncio loop + h11 the same run adds about 0.6 ms more to the time to first token "
        "(`Options(server=\"pure\")`). httpx still parses the upstream response with h11.",
        "- Import: FastAPI and pydantic are most of it; FastAPI imports `pydantic.v1` while registering routes "
        "(`fastapi._compat.shared.is_pydantic_v1_model_class`), and pydantic loads its plugin entry points "
        "(`importlib.metadata`) on the first model.",
        "",
    ]
    return "\n".join(lines)


def run(options: Options | None = None) -> str:
    """Run the three chat benchmarks and return their markdown section."""
    options = options or Options()
    with upstream_process() as upstream, app_process(upstream, options.server) as app:
        ttft = asyncio.run(measure_ttft(upstream, app, options))
        throughput = asyncio.run(measure_throughput(upstream, app, options))
    imports = measure_import(options)
    return report(ttft, throughput, imports, options)


if __name__ == "__main__":
    print(run(Options.quick() if "--quick" in sys.argv else Options()))
