"""Long-term memory: TTFT with memory on vs off, and the DynamoDB requests memory adds per turn.

The chat app in a uvicorn thread against the emulator process (`devtools.emulator`), the mock model
(`mock/echo`, no delay) so the model adds nothing; `mock/summarize` extracts. Memory-on users have
5 memories (digest only) or 40 (digest of 20 + vector search over the local exact engine). Turns
alternate between the configurations. Run: `python -m bench.memory [turns]`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys
import time

import httpx

from devtools.emulator import running_emulator
from devtools.template_tables import create_tables


def main(turns: int = 100) -> None:
    import boto3
    from chatcore.api.app import create_app, default_components
    from chatcore.settings import Settings

    from tests.conftest import ThreadedServer

    with running_emulator() as emulator:
        client = boto3.session.Session().client("dynamodb", region_name="us-east-1", endpoint_url=emulator.endpoint,
                                                aws_access_key_id="x", aws_secret_access_key="y")
        create_tables(client, "bench-memory")
        import os
        os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_REGION="us-east-1")
        base = Settings(stage="local", default_model="mock/echo", mock_ttft_ms=0.0, mock_pace_ms=0.0,
                        memory="dynamodb", table_name="bench-memory", dynamodb_endpoint_url=emulator.endpoint,
                        summary_model="mock/summarize", summary_trigger_tokens=0, cors_in_app=False)
        urls = {}
        servers = []
        for name, on in (("off", False), ("on", True)):
            settings = dataclasses.replace(base, long_term_memory=on)
            server = ThreadedServer(create_app(components=default_components(settings)))
            servers.append(server)
            urls[name] = server.start()
        components = servers[1].server.config.app.state.components
        async def seed(first: int, count: int) -> None:
            for user in ("local",):  # AUTH_MODE=none: every request is the local user
                for n in range(first, first + count):
                    text = f"fact number {n}: I like thing {n}"
                    vector = (await components.memories.embedder.embed([text]))[0]
                    await asyncio.to_thread(components.memories.store.put, user, text, "fact", vector,
                                            components.memories.embedder.name, "seed")

        asyncio.run(seed(0, 5))
        ttft: dict[str, list[float]] = {"off": [], "on/digest": [], "on/search": []}

        def turn(url: str, user: str, conversation: str, n: int) -> float:
            body = {"id": conversation, "messages": [{"id": f"m{n}", "role": "user",
                                                       "parts": [{"type": "text", "text": f"question {n} about things"}]}]}
            started = time.perf_counter()
            elapsed = None
            with httpx.stream("POST", f"{url}/api/chat", json=body, headers={"x-user": user}, timeout=30) as r:
                for chunk in r.iter_bytes():
                    if elapsed is None and b'"text-delta"' in chunk:
                        elapsed = (time.perf_counter() - started) * 1000
            if elapsed is None:
                raise RuntimeError("no text")
            return elapsed

        for n in range(turns):
            ttft["off"].append(turn(urls["off"], "local", f"off-{n // 20}", n))
            ttft["on/digest"].append(turn(urls["on"], "local", f"dg-{n // 20}", n))
        asyncio.run(seed(5, 35))  # 40 memories: more than the digest's 20, so every turn also searches
        for n in range(turns):
            ttft["off"].append(turn(urls["off"], "local", f"off2-{n // 20}", n))
            ttft["on/search"].append(turn(urls["on"], "local", f"sr-{n // 20}", n))
        emulator.reset_stats(units=True)
        per_turn = 20
        for n in range(per_turn):
            turn(urls["on"], "local", f"stats-{n}", n)
        time.sleep(2)
        stats = emulator.stats()
        for server in servers:
            server.stop()
    print("TTFT ms p50/p90:", {k: (round(statistics.median(v), 2), round(sorted(v)[int(len(v) * 0.9)], 2))
                               for k, v in ttft.items() if v})
    print("per turn (memory on, incl. extraction):",
          {op: round(s["requests"] / per_turn, 2) for op, s in stats.items()},
          "WU", round(sum(s["write_units"] for s in stats.values()) / per_turn, 2),
          "RU", round(sum(s["read_units"] for s in stats.values()) / per_turn, 2))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
