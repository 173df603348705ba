"""`LogWriter` between batch writes: its stop-check reads, against a recording stand-in for `StreamLog`
(the real log and a real stop marker are in tests/conversations/test_resumable_streams.py)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from chatcore.api.encoders.ui_message_stream import compact
from chatcore.api.encoders.wire_json import json_bytes
from chatcore.api.stream_tee import LogWriter
from chatcore.conversations.stream_log import StreamLog


class RecordingLog(StreamLog):
    """Appends in memory (each append waits for `released`); `stop_requested` answers from `answers`
    in turn (an exception is raised)."""

    def __init__(self, answers: list[bool | Exception]) -> None:
        self.answers = answers
        self.released = threading.Event()
        self.released.set()
        self.calls: list[tuple[str, int]] = []  # ("append" | "check", seq)
        self.appended: dict[int, bytes] = {}

    def append(self, user_id: str, conversation_id: str, prefix: str, seq: int, data: bytes, *,
               end: bool, deadline: float) -> bool:
        self.calls.append(("append", seq))
        self.released.wait(30)
        self.appended[seq] = data
        return True

    def stop_requested(self, user_id: str, conversation_id: str, prefix: str, seq: int) -> bool:
        self.calls.append(("check", seq))
        answer = self.answers.pop(0) if self.answers else False
        if isinstance(answer, Exception):
            raise answer
        return answer


def delta(text: str) -> bytes:
    return b"data: " + json_bytes({"type": "text-delta", "id": "t0", "delta": text}) + b"\n\n"


async def wait_for(condition: Any) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_failing_check_is_retried_and_a_found_marker_stops_the_answer_after_it() -> None:
    log = RecordingLog([RuntimeError("throttled"), True])
    stops: list[int] = []
    writer = LogWriter(log, "u", "c", "m", interval_s=30.0, deadline=0.0, on_stop=lambda: stops.append(1))
    writer.add(delta("a"))  # the first batch: written at once
    await wait_for(lambda: stops)
    writer.add(delta("b"))
    writer.add(delta("c"))
    await writer.close()

    # No batch write between the first and the last: the reads found the marker at seq 1 (the first
    # read failed and did not break anything), and the last batch went after it, its deltas merged.
    assert log.calls == [("append", 0), ("check", 1), ("check", 1), ("append", 2)]
    assert stops == [1] and writer.stopped
    assert log.appended[2] == delta("bc")


async def test_a_stopped_writer_makes_no_more_checks() -> None:
    log = RecordingLog([True])
    writer = LogWriter(log, "u", "c", "m", interval_s=30.0, deadline=0.0, on_stop=lambda: None)
    writer.add(delta("a"))
    await wait_for(lambda: writer.stopped)
    await asyncio.sleep(1.5)  # more than a check interval: a stopped writer asks nothing more
    await writer.close()
    assert log.calls == [("append", 0), ("check", 1), ("append", 2)]


async def test_with_an_interval_up_to_a_second_the_writes_are_the_only_checks() -> None:
    log = RecordingLog([])
    writer = LogWriter(log, "u", "c", "m", interval_s=1.0, deadline=0.0, on_stop=lambda: None)
    for i in range(150):  # tokens flowing for about 3 s: a batch at every interval
        writer.add(delta(str(i)))
        await asyncio.sleep(0.02)
    await writer.close()
    assert [kind for kind, _ in log.calls].count("append") >= 3
    assert "check" not in [kind for kind, _ in log.calls]
    logged = b"".join(log.appended[seq] for seq in sorted(log.appended))
    assert compact(logged) == delta("".join(map(str, range(150))))  # every token, in order


async def test_chunks_that_arrive_during_the_first_write_wait_for_the_interval() -> None:
    log = RecordingLog([])
    log.released.clear()
    writer = LogWriter(log, "u", "c", "m", interval_s=30.0, deadline=0.0, on_stop=lambda: None)
    writer.add(delta("a"))
    await wait_for(lambda: log.calls)  # the first write is under way
    writer.add(delta("b"))
    log.released.set()
    await asyncio.sleep(0.5)  # room for a (wrong) second write at once
    writer.add(delta("c"))
    await writer.close()
    assert log.calls == [("append", 0), ("append", 1)]
    assert log.appended[1] == delta("bc")
