"""Storage on the chat path: DynamoDB round trips and time before the first token and after the last.

Runs the real `DynamoMemory` against moto's server mode on 127.0.0.1 and counts every HTTP request
the DynamoDB client sends (a botocore `before-send` hook, so retries count too). Moto's latency is
not DynamoDB's (it is in-process and copies a whole table per transaction), so the times say how
the work overlaps, not what AWS will measure; the round-trip counts carry over exactly.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from typing import Any

ROUNDS = 15
HISTORY_SIZES = (0, 20, 200)


class RoundTripCounter:
    """Counts the DynamoDB requests sent and the time each took (botocore events)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, float]] = []
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()
        client.meta.events.register("before-send.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)

    def _before(self, request: Any, **_: Any) -> None:
        with self._lock:
            self._started[threading.get_ident()] = time.perf_counter()

    def _after(self, model: Any, **_: Any) -> None:
        with self._lock:
            began = self._started.pop(threading.get_ident(), time.perf_counter())
            self.calls.append((model.name, (time.perf_counter() - began) * 1000))

    def take(self) -> list[tuple[str, float]]:
        with self._lock:
            calls, self.calls = self.calls, []
            return calls


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def _measure(memory: Any, counter: RoundTripCounter, user: str, conversation: str,
                   rounds: int) -> dict[str, Any]:
    from chatcore.api.schemas import ChatRequestBody, to_chat_request
    from chatcore.events import Finish, Start, TextDelta, Usage, UsageReport

    before_ms: list[float] = []
    before_calls: list[list[tuple[str, float]]] = []
    after_ms: list[float] = []
    after_calls: list[list[tuple[str, float]]] = []
    for n in range(rounds):
        body = ChatRequestBody.model_validate({"id": conversation, "messages": [
            {"id": f"u-{uuid.uuid4().hex[:8]}", "role": "user", "parts": [{"type": "text", "text": f"question {n}"}]}]})
        counter.take()
        began = time.perf_counter()
        turn = await memory.begin(user, to_chat_request(body), None)
        before_ms.append((time.perf_counter() - began) * 1000)
        before_calls.append(counter.take())

        usage = Usage(input_tokens=40, output_tokens=5)

        async def answer(message_id: str, usage: Usage) -> Any:
            yield Start(message_id, "mock", "echo")
            yield TextDelta("an answer")
            yield UsageReport(usage)
            yield Finish(reason="stop", usage=usage)

        last_token_at = 0.0
        first = True
        async for event in turn.record(answer(turn.message_id, usage)):
            if first:  # the question's write ran with the model call; the first event waited for it
                before_calls[-1] += counter.take()
                first = False
            if isinstance(event, TextDelta):
                last_token_at = time.perf_counter()
            if isinstance(event, Finish):
                after_ms.append((time.perf_counter() - last_token_at) * 1000)
        after_calls.append(counter.take())
    return {"before_ms": before_ms, "before_calls": before_calls, "after_ms": after_ms, "after_calls": after_calls}


def run() -> str:
    """The storage section of docs/benchmarks.md."""
    import boto3
    from chatcore.conversations.memory import DynamoMemory
    from chatcore.conversations.store import ConversationStore, StoredMessage
    from chatcore.settings import Settings

    from devtools.emulator import start_emulator
    from devtools.template_tables import create_tables

    server = start_emulator()  # the emulator process of `make dev` (moto, patched, one request at a time)
    try:
        endpoint = server.endpoint
        client = boto3.session.Session().client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                                                aws_access_key_id="bench", aws_secret_access_key="bench")
        rows = []
        for size in HISTORY_SIZES:
            table = f"bench-{uuid.uuid4().hex[:8]}"  # one table per size
            create_tables(client, table_name=table)
            settings = Settings(table_name=table, dynamodb_endpoint_url=endpoint, memory="dynamodb",
                                summary_trigger_tokens=0)
            store = ConversationStore(settings, client=client)
            if size:
                store.import_messages("bench-user", "conv", [
                    StoredMessage(id=f"h{n}", role="user" if n % 2 == 0 else "assistant", text="lorem ipsum " * 20)
                    for n in range(size)])
            counter = RoundTripCounter(client)
            result = asyncio.run(_measure(DynamoMemory(settings, store), counter, "bench-user", "conv", ROUNDS))
            before_ops = sorted({name for calls in result["before_calls"] for name, _ in calls})
            rows.append((size, result, before_ops))
            client.meta.events.unregister("before-send.dynamodb", counter._before)
            client.meta.events.unregister("after-call.dynamodb", counter._after)
            client.delete_table(TableName=table)
    finally:
        server.stop()

    lines = [
        "## Storage (DynamoDB memory)",
        "",
        f"`DynamoMemory` against the emulator process (`devtools/emulator.py`: moto, patched) on 127.0.0.1, {ROUNDS} turns per row (medians). "
        "Round trips are counted with a botocore `before-send`/`after-call` hook on the client; "
        "\"sum of calls\" adds each call's own duration, so when it exceeds the wall time the calls overlapped.",
        "",
        "| stored messages | before first token: requests | operations | history read ms | sum of calls ms "
        "| after last token: requests | wall ms |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for size, result, before_ops in rows:
        before_trips = _median([float(len(c)) for c in result["before_calls"]])
        before_sum = _median([sum(ms for _, ms in c) for c in result["before_calls"]])
        after_trips = _median([float(len(c)) for c in result["after_calls"]])
        lines.append(f"| {size} | {before_trips:.0f} | {', '.join(before_ops)} | {_median(result['before_ms']):.1f} "
                     f"| {before_sum:.1f} | {after_trips:.0f} | {_median(result['after_ms']):.1f} |")
    lines += [
        "",
        "Before the first token the turn makes one Query (metadata and newest messages in one descending read); "
        "then the user message's conditional PutItem, at the position that read derives, runs with the model "
        "call, and the first event waits for it (a duplicate is a 409, never streamed). After the last token, "
        "the answer's conditional PutItem in its question's slot and the metadata's UpdateItem, written before "
        "the `finish` chunk is sent (so a Lambda freeze after the response cannot lose it); no transaction on "
        "this path (docs/data-model.md, \"Positions\"). A conversation whose unsummarized history exceeds one Query page "
        "(100 items, or 1 MB) needs more reads: the summary keeps that rare. The emulator evaluates one "
        "request at a time and spends a few ms of Python per request, so its times overstate DynamoDB's.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
