"""Resumable streams (`RESUMABLE_STREAMS`) and the stop endpoint, through the AI SDK's own client
(tests/aisdk/resume.mjs: it destroys the real socket mid-answer, resumes, and stops) and raw HTTP.

The app runs with DynamoDB memory in the emulator and `HeaderAuthenticator` (`x-test-user`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatcore.conversations.store import ConversationStore
from chatcore.conversations.stream_log import StreamLog
from chatcore.providers.mock import tokenize

HARNESS = Path(__file__).resolve().parents[1] / "aisdk"
NODE = shutil.which("node")
SUBPROCESS_TIMEOUT_S = 120
TIMEOUT = httpx.Timeout(60.0)
SLOW = "mock/lorem?tokens=200&pace_ms=20"  # about 4 s of answer: plenty of time to drop, resume or stop

def needs_node(test: Callable[..., None]) -> Callable[..., None]:
    """Marks for the tests that run the AI SDK client under Node."""
    test = pytest.mark.skipif(not (HARNESS / "node_modules" / "ai").is_dir(),
                              reason="tests/aisdk/node_modules is missing: run `make setup`")(test)
    test = pytest.mark.skipif(NODE is None, reason="node is not installed (needed to run the AI SDK client)")(test)
    return pytest.mark.node(test)

StartServer = Callable[..., tuple[str, ConversationStore]]


def sdk(url: str, scenario: str, chat_id: str, user: str, model: str = SLOW, after: int = 5) -> dict[str, Any]:
    args = [NODE or "node", str(HARNESS / "resume.mjs"), "--api", f"{url}/api/chat", "--model", model,
            "--scenario", scenario, "--chat-id", chat_id, "--user", user, "--after", str(after),
            "--timeout-ms", str((SUBPROCESS_TIMEOUT_S - 10) * 1000)]
    done = subprocess.run(args, cwd=HARNESS, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, f"resume.mjs failed ({done.returncode}): {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def text_of(chat: dict[str, Any]) -> str:
    message = chat["messages"][-1]
    assert message["role"] == "assistant"
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def stored_answer(store: ConversationStore, user: str, chat_id: str, poll: Callable[..., Any],
                  status: str | None = None) -> Any:
    """The conversation's last message once it is an assistant message (with `status`, when given)."""
    def check() -> Any:
        messages = list(store.iter_messages(user, chat_id))
        last = messages[-1] if messages else None
        ok = last is not None and last.role == "assistant" and (status is None or last.status == status)
        return last if ok else None
    return poll(check)


def chat_body(chat_id: str, model: str = SLOW) -> dict[str, Any]:
    return {"id": chat_id, "model": model,
            "messages": [{"id": f"u-{uuid.uuid4().hex[:8]}", "role": "user", "parts": [{"type": "text", "text": "go"}]}]}


class Reader(threading.Thread):
    """Reads one chat response in the background; `deltas` counts text deltas as they arrive."""

    def __init__(self, url: str, user: str, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.user, self.body = url, user, body
        self.chunks: list[str] = []
        self.first_delta = threading.Event()
        self.status = 0

    def run(self) -> None:
        with httpx.stream("POST", f"{self.url}/api/chat", json=self.body, headers={"x-test-user": self.user},
                          timeout=TIMEOUT) as response:
            self.status = response.status_code
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.chunks.append(line[6:])
                    if '"text-delta"' in line:
                        self.first_delta.set()

    def events(self) -> list[Any]:
        return [json.loads(c) for c in self.chunks if c != "[DONE]"]


@needs_node
def test_sdk_resume_after_a_dropped_connection_rebuilds_the_whole_answer(
        stored_app_server: StartServer, user: str, poll: Callable[..., Any]) -> None:
    url, store = stored_app_server(resumable_streams=True, stream_flush_ms=200)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    result = sdk(url, "drop", chat_id, user)

    assert result["sent"]["dropped"] is True
    assert result["sent"]["finishes"][0]["isDisconnect"] is True  # the SDK saw a network failure
    resumed = result["resumed"][0]
    assert resumed["status"] == "ready" and resumed["error"] is None, resumed["error"]
    # The answer went on without a reader and was stored whole; the resume rebuilt exactly it.
    stored = stored_answer(store, user, chat_id, poll, "complete")
    assert len(tokenize(stored.text)) == 200
    assert text_of(resumed) == stored.text
    assert resumed["messages"][-1]["id"] == stored.id
    assert [m["role"] for m in resumed["messages"]] == ["user", "assistant"]  # replaced, not appended
    assert resumed["finishes"][-1]["finishReason"] == "stop"
    # After completion there is nothing to resume.
    response = httpx.get(f"{url}/api/chat/{chat_id}/stream", headers={"x-test-user": user}, timeout=TIMEOUT)
    assert response.status_code == 204


@needs_node
def test_sdk_two_readers_follow_one_answer(stored_app_server: StartServer, user: str,
                                           poll: Callable[..., Any]) -> None:
    url, store = stored_app_server(resumable_streams=True, stream_flush_ms=200)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    result = sdk(url, "readers", chat_id, user)

    first, second = result["resumed"]
    assert first["status"] == second["status"] == "ready", (first["error"], second["error"])
    stored = stored_answer(store, user, chat_id, poll, "complete")
    assert text_of(first) == text_of(second) == stored.text


@needs_node
@pytest.mark.parametrize("resumable", [True, False], ids=["resumable", "in-process"])
def test_sdk_stop_ends_the_answer_cleanly_and_stores_the_partial_text(
        stored_app_server: StartServer, user: str, poll: Callable[..., Any], resumable: bool) -> None:
    url, store = stored_app_server(resumable_streams=resumable, stream_flush_ms=200)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    result = sdk(url, "stop", chat_id, user, after=10)

    assert result["stop"]["status"] == 202
    sent = result["sent"]
    assert sent["status"] == "ready" and sent["error"] is None, sent["error"]
    assert sent["finishes"] == [{"finishReason": "stop", "isError": False, "isAbort": False, "isDisconnect": False}]
    assert sent["messages"][-1]["metadata"]["stopped"] is True
    stored = stored_answer(store, user, chat_id, poll, "stopped")
    full = " ".join(tokenize(stored.text))  # the stored text is a strict, non-empty prefix of the whole answer
    assert 10 <= len(tokenize(stored.text)) < 200, full
    assert text_of(sent) == stored.text
    history = httpx.get(f"{url}/api/conversations/{chat_id}", headers={"x-test-user": user}, timeout=TIMEOUT).json()
    assert history["messages"][-1]["metadata"]["status"] == "stopped"


def test_stop_from_another_invocation_is_noticed_through_the_log(
        stored_app_server: StartServer, store_settings: Callable[..., Any], dynamodb: Any, user: str,
        poll: Callable[..., Any]) -> None:
    """A stop marker in the log (what a stop request handled by another Lambda instance writes) ends it."""
    url, store = stored_app_server(resumable_streams=True, stream_flush_ms=100)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    stopped_by_marker(url, store, StreamLog(store_settings(), client=dynamodb), user, chat_id, SLOW, 200, poll)


def stopped_by_marker(url: str, store: Any, log: StreamLog, user: str, chat_id: str, model: str, tokens: int,
                      poll: Callable[..., Any]) -> Any:
    """Start an answer, write a stop marker into its log as another instance would, and check that the
    live stream ends as a stopped answer and the stored message holds exactly what was streamed."""
    reader = Reader(url, user, chat_body(chat_id, model))
    reader.start()
    assert reader.first_delta.wait(30)
    stopped = poll(lambda: log.request_stop(user, chat_id))  # the first batch may not be written yet
    reader.join(60)

    events = reader.events()
    assert events[-1]["type"] == "finish" and events[-1]["finishReason"] == "stop"
    assert events[-1]["messageMetadata"]["stopped"] is True
    assert reader.chunks[-1] == "[DONE]"
    stored = stored_answer(store, user, chat_id, poll, "stopped")
    assert stored.id == stopped.message_id
    assert 0 < len(tokenize(stored.text)) < tokens
    assert "".join(e["delta"] for e in events if e["type"] == "text-delta") == stored.text
    return stored


def logged(log: StreamLog, user: str, chat_id: str) -> list[Any]:
    """The newest answer's log items, in order."""
    answer = log.latest(user, chat_id)
    assert answer is not None
    return log.read(user, chat_id, answer.prefix, 0)


def sse_chunks(data: bytes) -> list[Any]:
    events = [e.removeprefix(b"data: ") for e in data.split(b"\n\n") if e]
    return [json.loads(e) for e in events if e != b"[DONE]"]


@needs_node
def test_sdk_resume_rebuilds_the_answer_from_compacted_batches(
        stored_app_server: StartServer, store_settings: Callable[..., Any], dynamodb: Any, user: str,
        poll: Callable[..., Any]) -> None:
    """At the default interval (2 s) each batch holds one merged delta; the AI SDK rebuilds the same text."""
    url, store = stored_app_server(resumable_streams=True)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    result = sdk(url, "drop", chat_id, user)

    resumed = result["resumed"][0]
    assert resumed["status"] == "ready" and resumed["error"] is None, resumed["error"]
    stored = stored_answer(store, user, chat_id, poll, "complete")
    assert len(tokenize(stored.text)) == 200
    assert text_of(resumed) == stored.text
    batches = logged(StreamLog(store_settings(), client=dynamodb), user, chat_id)
    deltas = [[c["delta"] for c in sse_chunks(b.data) if c["type"] == "text-delta"] for b in batches]
    assert all(len(d) <= 1 for d in deltas), deltas  # 200 tokens, one merged delta per batch
    assert 2 <= len(batches) < 20
    assert "".join(d for batch in deltas for d in batch) == stored.text


def test_a_stop_marker_is_found_between_batch_writes(
        stored_app_server: StartServer, store_settings: Callable[..., Any], dynamodb: Any, user: str,
        poll: Callable[..., Any]) -> None:
    """With writes far apart, the writer's stop check (not a failed write) ends the answer: the log holds
    the first batch, the marker, and the last batch, nothing between."""
    url, store = stored_app_server(resumable_streams=True, stream_flush_ms=30_000)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    log = StreamLog(store_settings(), client=dynamodb)
    model = "mock/lorem?tokens=400&pace_ms=20"  # 8 s of answer if nothing stops it
    stored = stopped_by_marker(url, store, log, user, chat_id, model, 400, poll)
    batches = logged(log, user, chat_id)
    assert [(b.seq, b.stop, b.end) for b in batches] == [(0, False, False), (1, True, False), (2, False, True)]
    replayed = [c for b in batches for c in sse_chunks(b.data)]
    assert "".join(c["delta"] for c in replayed if c["type"] == "text-delta") == stored.text


def test_another_user_cannot_resume_or_stop_and_the_owner_is_unaffected(
        stored_app_server: StartServer, user: str, poll: Callable[..., Any]) -> None:
    url, store = stored_app_server(resumable_streams=True, stream_flush_ms=100)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    reader = Reader(url, user, chat_body(chat_id))
    reader.start()
    assert reader.first_delta.wait(30)
    # The owner can resume it meanwhile (200, the UI message stream), and so proves it is live.
    with httpx.stream("GET", f"{url}/api/chat/{chat_id}/stream", headers={"x-test-user": user},
                      timeout=TIMEOUT) as owner:
        assert owner.status_code == 200
        assert owner.headers["x-vercel-ai-ui-message-stream"] == "v1"
        intruder = {"x-test-user": f"other-{uuid.uuid4().hex[:6]}"}
        assert httpx.get(f"{url}/api/chat/{chat_id}/stream", headers=intruder, timeout=TIMEOUT).status_code == 404
        assert httpx.post(f"{url}/api/chat/{chat_id}/stop", headers=intruder, timeout=TIMEOUT).status_code == 404
        replay = [line[6:] for line in owner.iter_lines() if line.startswith("data: ")]
    reader.join(60)
    assert json.loads(replay[0])["type"] == "start" and replay[-1] == "[DONE]"
    stored = stored_answer(store, user, chat_id, poll, "complete")
    assert len(tokenize(stored.text)) == 200
    replayed = "".join(json.loads(c).get("delta", "") for c in replay[:-1])
    assert replayed == stored.text


def test_resume_and_stop_answer_404_for_a_missing_conversation_and_204_when_idle(
        stored_app_server: StartServer, user: str) -> None:
    url, _ = stored_app_server(resumable_streams=True)
    headers = {"x-test-user": user}
    missing = f"c-{uuid.uuid4().hex[:8]}"
    assert httpx.get(f"{url}/api/chat/{missing}/stream", headers=headers, timeout=TIMEOUT).status_code == 404
    assert httpx.post(f"{url}/api/chat/{missing}/stop", headers=headers, timeout=TIMEOUT).status_code == 404
    assert httpx.get(f"{url}/api/chat/{missing}/stream", timeout=TIMEOUT).status_code == 401  # authenticated
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    done = httpx.post(f"{url}/api/chat", json=chat_body(chat_id, "mock/echo"), headers=headers, timeout=TIMEOUT)
    assert done.status_code == 200 and done.text.endswith("data: [DONE]\n\n")
    assert httpx.get(f"{url}/api/chat/{chat_id}/stream", headers=headers, timeout=TIMEOUT).status_code == 204
    assert httpx.post(f"{url}/api/chat/{chat_id}/stop", headers=headers, timeout=TIMEOUT).status_code == 204


def test_without_resumable_streams_a_disconnect_still_cancels_the_answer(
        stored_app_server: StartServer, user: str, poll: Callable[..., Any]) -> None:
    url, store = stored_app_server()  # RESUMABLE_STREAMS off (the default)
    chat_id = f"c-{uuid.uuid4().hex[:8]}"
    with httpx.stream("POST", f"{url}/api/chat", json=chat_body(chat_id), headers={"x-test-user": user},
                      timeout=TIMEOUT) as response:
        for line in response.iter_lines():
            if '"text-delta"' in line:
                break
    stored = stored_answer(store, user, chat_id, poll, "aborted")
    assert len(tokenize(stored.text)) < 200
    response = httpx.get(f"{url}/api/chat/{chat_id}/stream", headers={"x-test-user": user}, timeout=TIMEOUT)
    assert response.status_code == 204  # nothing is resumable
