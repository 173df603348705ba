"""Resumable streams when the log's last batch (the one with `finish` and `[DONE]`) cannot be
written: the generator retries it, and a follower of an answer whose log never ends still ends once
the answer is stored, long before the answer's deadline.

The app runs with DynamoDB memory in the emulator; the `StreamLog` fails the last batch's writes as
each test scripts. The answer's deadline is an hour away (`MAX_STREAM_S`), so a follower that waited
for it would hit the client's read timeout (`FOLLOW_TIMEOUT`) instead of ending.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
from chatcore.api.app import Components, create_app
from chatcore.api.resume_routes import RELOAD_TEXT
from chatcore.api.stream_tee import FINAL_ATTEMPTS
from chatcore.conversations.memory import DynamoMemory
from chatcore.conversations.store import ConversationStore, StoredMessage
from chatcore.conversations.stream_log import StreamLog, new_prefix
from chatcore.limits import NoLimits
from chatcore.providers import ProviderRegistry
from chatcore.settings import Settings

from tests.conversations.conftest import HeaderAuthenticator

MODEL = "mock/lorem?tokens=150&pace_ms=20"  # about 3 s of answer: time to start following it
FOLLOW_TIMEOUT = httpx.Timeout(60.0, read=20.0)  # far below the deadline, far above the stall check


class FailingLastBatch(StreamLog):
    """The log, except that the first `failures` writes of an answer's last batch raise."""

    def __init__(self, settings: Settings, client: Any, failures: int) -> None:
        super().__init__(settings, client=client)
        self.failures = failures
        self.final_writes = 0

    def append(self, user_id: str, conversation_id: str, prefix: str, seq: int, data: bytes, *,
               end: bool, deadline: float) -> bool:
        if end:
            self.final_writes += 1
            if self.final_writes <= self.failures:
                raise ConnectionError("injected: the last batch is lost")
        return super().append(user_id, conversation_id, prefix, seq, data, end=end, deadline=deadline)


def start(serve_asgi: Callable[..., str], dynamodb: Any, store_settings: Callable[..., Settings],
          failures: int) -> tuple[str, ConversationStore, FailingLastBatch]:
    settings = store_settings(resumable_streams=True, stream_flush_ms=200, max_stream_s=3600)
    store = ConversationStore(settings, client=dynamodb)
    log = FailingLastBatch(settings, dynamodb, failures)
    components = Components(settings=settings, providers=ProviderRegistry(settings),
                            authenticator=HeaderAuthenticator(), limiter=NoLimits(),
                            memory=DynamoMemory(settings, store), conversations=store, stream_log=log)
    return serve_asgi(create_app(components=components)), store, log


def answer_and_follow(url: str, user: str) -> tuple[list[str], list[str], str]:
    """Post a chat turn; once it streams, follow it through `GET /stream`. Both bodies' `data`
    payloads (the post's and the follower's) and the conversation id."""
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    body = {"id": chat_id, "model": MODEL,
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "go"}]}]}
    posted: list[str] = []
    streaming = threading.Event()

    def post() -> None:
        with httpx.stream("POST", f"{url}/api/chat", json=body, headers={"x-test-user": user},
                          timeout=httpx.Timeout(60.0)) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    posted.append(line[6:])
                    if '"text-delta"' in line:
                        streaming.set()

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    assert streaming.wait(30)
    with httpx.stream("GET", f"{url}/api/chat/{chat_id}/stream", headers={"x-test-user": user},
                      timeout=FOLLOW_TIMEOUT) as response:
        assert response.status_code == 200
        followed = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    poster.join(60)
    assert not poster.is_alive()
    return posted, followed, chat_id


def chunks(payloads: list[str]) -> list[dict[str, Any]]:
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def text(payloads: list[str]) -> str:
    return "".join(c.get("delta", "") for c in chunks(payloads) if c["type"] == "text-delta")


def test_a_last_batch_that_fails_once_is_written_again_and_followers_finish(
        serve_asgi: Callable[..., str], dynamodb: Any, store_settings: Callable[..., Settings], user: str,
        poll: Callable[..., Any]) -> None:
    url, store, log = start(serve_asgi, dynamodb, store_settings, failures=1)
    posted, followed, chat_id = answer_and_follow(url, user)

    assert log.final_writes == 2  # the failed write, and its retry
    assert chunks(followed)[0]["type"] == "start"
    assert chunks(followed)[0]["messageId"] == chunks(posted)[0]["messageId"]
    assert chunks(followed)[-1]["type"] == "finish" and chunks(followed)[-1]["finishReason"] == "stop"
    assert followed[-1] == "[DONE]"
    assert [c["type"] for c in chunks(followed)].count("error") == 0
    stored = poll(lambda: next((m for m in store.iter_messages(user, chat_id) if m.role == "assistant"), None))
    assert text(followed) == text(posted) == stored.text
    # The log ended: nothing is resumable any more.
    again = httpx.get(f"{url}/api/chat/{chat_id}/stream", headers={"x-test-user": user}, timeout=FOLLOW_TIMEOUT)
    assert again.status_code == 204


def test_a_last_batch_never_written_still_ends_followers_once_the_answer_is_stored(
        serve_asgi: Callable[..., str], dynamodb: Any, store_settings: Callable[..., Settings], user: str,
        poll: Callable[..., Any]) -> None:
    url, store, log = start(serve_asgi, dynamodb, store_settings, failures=10**6)
    posted, followed, chat_id = answer_and_follow(url, user)

    assert log.final_writes == FINAL_ATTEMPTS  # bounded: then the generator gives up
    # The poster's own response was complete; the follower ends, without waiting for the deadline,
    # with an error asking for a reload (its replay lacks the last batch), never a `finish` that
    # would present a partial answer as complete.
    assert chunks(posted)[-1]["type"] == "finish" and posted[-1] == "[DONE]"
    assert chunks(followed)[-1] == {"type": "error", "errorText": RELOAD_TEXT}
    assert followed[-1] == "[DONE]"
    assert "finish" not in [c["type"] for c in chunks(followed)]
    stored = poll(lambda: next((m for m in store.iter_messages(user, chat_id) if m.role == "assistant"), None))
    assert stored.status == "complete" and text(posted) == stored.text
    assert stored.text.startswith(text(followed))
    # The log still looks live (no last batch, deadline far away): a new follower ends the same way.
    with httpx.stream("GET", f"{url}/api/chat/{chat_id}/stream", headers={"x-test-user": user},
                      timeout=FOLLOW_TIMEOUT) as response:
        assert response.status_code == 200
        late = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert chunks(late)[-1] == {"type": "error", "errorText": RELOAD_TEXT} and late[-1] == "[DONE]"


def test_an_answer_counts_as_stored_only_when_stored_since_it_started(
        dynamodb: Any, store_settings: Callable[..., Settings], user: str) -> None:
    """A continued turn (a client tool's output, an approval) answers under the id of a message stored
    before it started: that message alone does not end its followers, its update does."""
    settings = store_settings()
    store, log = ConversationStore(settings, client=dynamodb), StreamLog(settings, client=dynamodb)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    store.append_message(user, chat_id, StoredMessage(id="u1", role="user", text="go"))
    first = store.append_message(user, chat_id, StoredMessage(id="a1", role="assistant", text="calling a tool"),
                                 existing=True).message
    prefix = new_prefix("a1")  # the continued answer starts now
    log.append(user, chat_id, prefix, 0, b"data: {}\n\n", end=False, deadline=time.time() + 3600)
    answer = log.latest(user, chat_id)
    assert answer is not None and answer.message_id == "a1" and answer.streaming
    assert not log.answer_stored(user, chat_id, answer)
    store.update_message(user, chat_id, replace(first, text="calling a tool, and its answer"))
    assert log.answer_stored(user, chat_id, answer)
    # A new answer's id is not stored until its message is.
    log.append(user, chat_id, new_prefix("a2"), 0, b"data: {}\n\n", end=False, deadline=time.time() + 3600)
    newer = log.latest(user, chat_id)
    assert newer is not None and newer.message_id == "a2" and not log.answer_stored(user, chat_id, newer)
