"""Rolling summaries: racing runs, the summarize function's handler, and the trigger from chat."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatcore.conversations import summarizer as summarizer_module
from chatcore.conversations.store import ConversationStore, StoredMessage
from chatcore.conversations.summarizer import (
    MAX_TURN_TEXT_BYTES,
    MAX_TURN_TEXTS,
    ConversationSummarizer,
    SummaryTrigger,
    handle_summarize_event,
)
from chatcore.events import Finish, ProviderEvent, TextDelta
from chatcore.messages import ModelRequest
from chatcore.prompt import SUMMARY_HEADING
from chatcore.providers import ProviderRegistry
from chatcore.providers.base import ProbeResult
from chatcore.routing.router import Router

from tests.moto_dynamodb import Table

REPO = Path(__file__).resolve().parents[2]


class RecordingProvider:
    """Keeps every request it answers, so the test can see the prompt that was sent."""

    name = "rec"

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append(request)
        yield TextDelta("noted")
        yield Finish(reason="stop")

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        return ProbeResult("up", 0.0)


class GatedSummaryProvider:
    """Answers `summary #n` once both runs have read the conversation (so both extend the same
    summary); the second answers only after the first run's write is done. That orders the two
    writes: DynamoDB makes a conditional write atomic, but moto's server does not when two arrive
    at the same instant, and this test is about the stale run being refused, not about moto."""

    name = "gate"

    def __init__(self) -> None:
        self.both_read = asyncio.Barrier(2)
        self.first_written = asyncio.Event()
        self.calls = 0
        self.prompts: list[str] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        self.calls += 1
        number = self.calls
        self.prompts.append(request.messages[-1].content)
        await self.both_read.wait()
        if number == 2:
            await self.first_written.wait()
        yield TextDelta(f"summary #{number}")
        yield Finish(reason="stop")

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        return ProbeResult("up", 0.0)


def seed(store: ConversationStore, user: str, conversation: str, count: int) -> list[StoredMessage]:
    messages = [StoredMessage(id=f"m{n}", role="user" if n % 2 == 0 else "assistant", text=f"message {n}")
                for n in range(count)]
    return [store.append_message(user, conversation, m).message for m in messages]  # type: ignore[arg-type]


async def test_two_racing_summarizations_leave_one_consistent_summary(store: ConversationStore, user: str,
                                                                      store_settings: Any) -> None:
    written = seed(store, user, "race", 10)
    settings = store_settings(summary_model="gate/cheap", summary_keep_recent=4)
    provider = GatedSummaryProvider()
    registry = ProviderRegistry(settings, overrides={"gate": provider})
    loop = asyncio.get_running_loop()

    class SignallingStore(ConversationStore):
        def write_summary(self, *args: Any) -> bool:
            try:
                return super().write_summary(*args)
            finally:
                loop.call_soon_threadsafe(provider.first_written.set)

    signalling = SignallingStore(settings, client=store.client)
    runs = [ConversationSummarizer(settings, signalling, Router(settings, registry)) for _ in range(2)]
    results = await asyncio.gather(*(run.summarize(user, "race") for run in runs))

    assert sorted(r.outcome for r in results) == ["raced", "written"]
    winner = next(r for r in results if r.outcome == "written")
    meta = store.get_meta(user, "race")
    assert meta is not None and meta.summary == "summary #1"  # the stale second run changed nothing
    assert meta.summary_through == winner.through == written[5].position  # all but the 4 newest
    assert winner.covered_messages == 6 and "message 0" in provider.prompts[0] and "message 6" not in provider.prompts[0]

    # The next run extends the summary with nothing new (the newest 4 stay verbatim).
    again = await ConversationSummarizer(settings, store, Router(settings, registry)).summarize(user, "race")
    assert again.outcome == "up_to_date"
    # The chat read now starts after the summary.
    history = store.load_recent(user, "race")
    assert [m.id for m in history.messages] == ["m6", "m7", "m8", "m9"]


def _load_summarize_handler() -> Any:
    spec = importlib.util.spec_from_file_location("summarize_app", REPO / "functions" / "summarize" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_summarize_function_handles_its_event(store: ConversationStore, user: str, table: Table,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seed(store, user, "demo", 12)
    for name, value in {"TABLE_NAME": table.name, "DYNAMODB_ENDPOINT_URL": table.endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "SUMMARY_MODEL": "mock/echo",
                        "SUMMARY_KEEP_RECENT": "2", "MOCK_TTFT_MS": "0", "MOCK_PACE_MS": "0"}.items():
        monkeypatch.setenv(name, value)
    from chatcore.settings import get_settings

    get_settings.cache_clear()
    try:
        module = _load_summarize_handler()
        result = module.handler({"user_id": user, "conversation_id": "demo"}, None)
        assert result["status"] == "written" and result["covered_messages"] == 10
        meta = store.get_meta(user, "demo")
        assert meta is not None and meta.summary and meta.summary.startswith("You said: Previous summary:")
        assert module.handler({"user_id": user, "conversation_id": "demo"}, None)["status"] == "up_to_date"
        assert module.handler({"user_id": user, "conversation_id": "nope"}, None)["status"] == "missing"
        assert module.handler({"conversation_id": "demo"}, None)["status"] == "invalid"
        assert module.handler({"user_id": user, "conversation_id": "a#b"}, None)["status"] == "invalid"
    finally:
        get_settings.cache_clear()


def test_chat_triggers_a_summary_that_later_prompts_use(stored_app_server: Any, user: str, poll: Any) -> None:
    recorder = RecordingProvider()
    base, store = stored_app_server(summary_trigger_tokens=20, summary_keep_recent=2, summary_model="mock/echo",
                                    providers={"rec": recorder})

    def send(n: int, model: str = "mock/echo") -> None:
        body = {"id": "grow", "model": model,
                "messages": [{"id": f"u{n}", "role": "user", "parts": [{"type": "text", "text": f"point {n} " * 8}]}]}
        assert httpx.post(f"{base}/api/chat", json=body, headers={"x-test-user": user}, timeout=60).status_code == 200

    send(0)
    send(1)
    meta = poll(lambda: (m := store.get_meta(user, "grow")) and m.summary and m)
    history = store.load_recent(user, "grow")
    assert meta.summary_through is not None and len(history.messages) < 4
    assert all(m.position > meta.summary_through for m in history.messages)
    # The next turn sends the summary (in the system prompt) and only the messages after it.
    send(2, model="rec/x")
    request = recorder.requests[-1]
    assert request.system is not None and f"{SUMMARY_HEADING}\n{meta.summary}" in request.system
    assert [m.content for m in request.messages] == [m.text for m in history.messages] + ["point 2 " * 8]


def test_a_failing_summarization_raises_for_lambda_to_retry_and_counts_the_failure(
        store: ConversationStore, user: str, table: Table, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    seed(store, user, "doomed", 12)
    for name, value in {"TABLE_NAME": table.name, "DYNAMODB_ENDPOINT_URL": table.endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                        "SUMMARY_MODEL": "mock/fail-500", "SUMMARY_KEEP_RECENT": "2"}.items():
        monkeypatch.setenv(name, value)
    from chatcore.settings import get_settings

    get_settings.cache_clear()
    try:
        module = _load_summarize_handler()
        with pytest.raises(Exception) as failure:
            module.handler({"user_id": user, "conversation_id": "doomed"}, None)
        assert "500" in str(failure.value)
        meta = store.get_meta(user, "doomed")
        assert meta is not None and not meta.summary  # nothing half-written
        metrics = [line for line in capfd.readouterr().out.splitlines() if '"SummaryErrors"' in line]
        assert metrics and '"Outcome":"failed"' in metrics[0].replace(" ", "")
    finally:
        get_settings.cache_clear()


def template_environment(function: str) -> dict[str, str]:
    """The environment `template.yaml` gives `function` with every parameter at its default
    (`!Ref` to a parameter resolves to its default; other intrinsics are left out)."""
    from devtools.template_tables import CloudFormationTag, load_template

    template = load_template()
    parameters = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    variables = {**template["Globals"]["Function"]["Environment"]["Variables"],
                 **template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})}
    resolved: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, CloudFormationTag):
            if value.tag != "Ref" or value.value not in parameters:
                continue
            value = parameters[value.value]
        if value != "":
            resolved[name] = str(value)
    return resolved


def test_summaries_work_in_the_deployed_configuration(store: ConversationStore, user: str, table: Table,
                                                      llmock: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The template sets OPENAI_BASE_URL and no SUMMARY_MODEL, so summaries use the default chain."""
    environment = template_environment("SummarizeFunction")
    assert "SUMMARY_MODEL" not in environment and "OPENAI_BASE_URL" in environment
    seed(store, user, "deployed", 12)
    for name in ("SUMMARY_MODEL", "DEFAULT_MODEL", "MOCK_PROVIDER", "MEMORY", "BREAKER_STORE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**environment, "OPENAI_BASE_URL": llmock.openai_base, "OPENAI_API_KEY": "sk-test",
                        "TABLE_NAME": table.name, "DYNAMODB_ENDPOINT_URL": table.endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                        "SUMMARY_TRIGGER_TOKENS": "10"}.items():
        monkeypatch.setenv(name, value)
    from chatcore.settings import get_settings

    get_settings.cache_clear()
    try:
        result = _load_summarize_handler().handler({"user_id": user, "conversation_id": "deployed"}, None)
    finally:
        get_settings.cache_clear()
    assert result["status"] == "written", result
    meta = store.get_meta(user, "deployed")
    assert meta is not None and meta.summary
    calls = llmock.requests("/chat/completions")
    assert calls and calls[0]["body"]["model"] == "gpt-4o"  # the registry's `default` chain, through the router


class RecordingObserver:
    def __init__(self) -> None:
        self.turns: list[tuple[str, list[str]]] = []

    async def observe_turn(self, user_id: str, conversation_id: str, turn_id: str, user_messages: Any) -> None:
        self.turns.append((turn_id, list(user_messages)))


async def test_a_turn_is_observed_from_a_few_newest_items(store: ConversationStore, user: str,
                                                          store_settings: Any) -> None:
    # 60 messages of history, then a turn of two user messages and its answer, then a later turn.
    seed(store, user, "long", 60)
    for message in (StoredMessage(id="q1", role="user", text="I live in Lyon."),
                    StoredMessage(id="q2", role="user", text="And I like tea."),
                    StoredMessage(id="a1", role="assistant", text="Noted."),
                    StoredMessage(id="q3", role="user", text="Next question"),
                    StoredMessage(id="a2", role="assistant", text="Next answer")):
        store.append_message(user, "long", message)
    queried: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        queried.append(params.get("Limit", 0))

    store.client.meta.events.register("provide-client-params.dynamodb.Query", record)
    try:
        await _observe(store, user, store_settings(), queried)
    finally:
        store.client.meta.events.unregister("provide-client-params.dynamodb.Query", record)


async def _observe(store: ConversationStore, user: str, settings: Any, queried: list[int]) -> None:
    observer = RecordingObserver()
    summarizer = ConversationSummarizer(settings, store, Router(settings, ProviderRegistry(settings)),
                                        observers=[observer])
    assert await summarizer.observe_turn(user, "long", "a1")
    assert observer.turns == [("a1", ["I live in Lyon.", "And I like tea."])]
    assert len(queried) == 1 and 0 < queried[0] <= 8  # one small page, not a page of history
    queried.clear()
    assert await summarizer.observe_turn(user, "long", "a2")
    assert observer.turns[-1] == ("a2", ["Next question"]) and len(queried) == 1
    # An answer that is not there (regenerated or deleted) is not observed; the read stays bounded.
    assert not await summarizer.observe_turn(user, "long", "gone")
    assert not await summarizer.observe_turn(user, "long", "q1")  # a user message is no answer
    # Texts passed with the turn (the chat side knows them) are used as given: nothing is read.
    queried.clear()
    assert await summarizer.observe_turn(user, "long", "a2", ["Next question"])
    assert observer.turns[-1] == ("a2", ["Next question"]) and queried == []


def test_the_summarize_event_may_carry_the_turns_texts(store: ConversationStore, user: str,
                                                       store_settings: Any) -> None:
    settings = store_settings()
    observer = RecordingObserver()
    summarizer = ConversationSummarizer(settings, store, Router(settings, ProviderRegistry(settings)),
                                        observers=[observer])
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    event = {"user_id": user, "conversation_id": "c1", "turn": "a1", "summarize": False}
    store.client.meta.events.register("before-call.dynamodb", record)
    try:
        result = handle_summarize_event({**event, "texts": ["I live in Lyon.", "And I like tea."]}, summarizer)
        assert result["status"] == "observed" and calls == []  # no message Query: the event had them
        assert observer.turns == [("a1", ["I live in Lyon.", "And I like tea."])]
        for texts in ("I live in Lyon.", [1], [None], ["x"] * (MAX_TURN_TEXTS + 1), ["x" * (MAX_TURN_TEXT_BYTES + 1)],
                      {"0": "x"}):
            assert handle_summarize_event({**event, "texts": texts}, summarizer)["status"] == "invalid", texts
        without_turn = {"user_id": user, "conversation_id": "c1", "texts": ["x"]}
        assert handle_summarize_event(without_turn, summarizer)["status"] == "invalid"
        assert len(observer.turns) == 1 and calls == []
    finally:
        store.client.meta.events.unregister("before-call.dynamodb", record)


def test_the_async_invoke_carries_small_texts_only(store: ConversationStore, store_settings: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = store_settings(summarize_function_name="summarize-fn")
    sent: list[dict[str, Any]] = []

    class FakeLambda:
        def invoke(self, **request: Any) -> None:
            assert request["InvocationType"] == "Event" and request["FunctionName"] == "summarize-fn"
            sent.append(json.loads(request["Payload"]))

    monkeypatch.setattr(summarizer_module, "_lambda_client", lambda region: FakeLambda())
    trigger = SummaryTrigger(settings, ConversationSummarizer(settings, store, Router(settings,
                                                                                       ProviderRegistry(settings))))
    asyncio.run(trigger.fire("u", "c1", summarize=False, turn="a1", texts=("Remember: tea",)))
    big = "é" * (MAX_TURN_TEXT_BYTES // 2)  # 2 bytes a character: just over the limit with one more
    asyncio.run(trigger.fire("u", "c1", summarize=True, turn="a2", texts=[big, "x"]))
    asyncio.run(trigger.fire("u", "c1", turn="a3"))
    asyncio.run(trigger.fire("u", "c1"))
    assert sent == [
        {"user_id": "u", "conversation_id": "c1", "turn": "a1", "summarize": False, "texts": ["Remember: tea"]},
        {"user_id": "u", "conversation_id": "c1", "turn": "a2", "summarize": True},  # too big: read instead
        {"user_id": "u", "conversation_id": "c1", "turn": "a3", "summarize": True},
        {"user_id": "u", "conversation_id": "c1"},
    ]
