"""Long-term memory through the app: extraction after a turn (mock/summarize), recall into the system
prompt, the privacy API, the off switch, temporary conversations and per-user scoping."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from chatcore import background
from chatcore.conversations.summarizer import ConversationSummarizer
from chatcore.memories import LongTermMemory
from chatcore.memories.embedders import LocalHashEmbedder
from chatcore.memories.extractor import extraction_prompt
from chatcore.memories.recall import BLOCK_OPEN, memory_block
from chatcore.memories.store import MAX_CHANGED_TURNS, MemoryItem, TurnLog
from chatcore.messages import ChatMessage, ChatRequest, Message
from chatcore.principal import Principal
from chatcore.prompt import fit_prompt


def chat(base: str, user: str, conversation: str, text: str, message_id: str, **extra: Any) -> httpx.Response:
    body = {"id": conversation, "messages": [{"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}],
            **extra}
    response = httpx.post(f"{base}/api/chat", json=body, headers={"x-test-user": user}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def memories(base: str, user: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{base}/api/memories", params=params, headers={"x-test-user": user}, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def texts(base: str, user: str) -> list[str]:
    return [m["text"] for m in memories(base, user)["memories"]]


def test_remember_and_forget_through_chat_turns(memory_app: Callable[..., Any], new_user: Callable[[], str],
                                                poll: Callable[..., Any]) -> None:
    base, _ = memory_app()
    user = new_user()
    chat(base, user, "c1", "Hi there. Remember: I am vegetarian. Remember: my dog is called Rex", "u1")
    listed = poll(lambda: memories(base, user)["memories"] if len(texts(base, user)) == 2 else None)
    assert sorted(m["text"] for m in listed) == ["I am vegetarian", "my dog is called Rex"]
    assert all(m["sourceConversation"] == "c1" and m["createdAt"] for m in listed)
    chat(base, user, "c2", "Forget: my dog is called Rex", "u2")
    poll(lambda: texts(base, user) == ["I am vegetarian"])


def test_the_same_turn_is_extracted_once(ltm: LongTermMemory, new_user: Callable[[], str]) -> None:
    user = new_user()

    async def run() -> list[str]:
        first = await ltm.extractor.extract(user, "c1", "turn-1", ["Remember: I speak Portuguese"])
        again = await ltm.extractor.extract(user, "c1", "turn-1", ["Remember: I speak Portuguese"])
        assert (first.outcome, first.added, again.outcome) == ("extracted", 1, "already_done")
        retried = await ltm.extractor.extract(user, "c1", "turn-2", ["Remember: I speak Portuguese"])
        assert retried.added == 0  # already remembered: not added twice
        page, _, _ = await ltm.list(user, 50, None)
        return [m.text for m in page]

    assert asyncio.run(run()) == ["I speak Portuguese"]


class DynamoCalls:
    """The operations a boto3 client sends while the block runs (a botocore event hook)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.operations: list[str] = []

    def _record(self, model: Any, **_: Any) -> None:
        self.operations.append(model.name)

    def __enter__(self) -> list[str]:
        self.client.meta.events.register("before-call.dynamodb", self._record)
        return self.operations

    def __exit__(self, *_: Any) -> None:
        self.client.meta.events.unregister("before-call.dynamodb", self._record)


def test_a_turn_that_changes_no_memory_costs_the_digest_query_alone(ltm: LongTermMemory,
                                                                    new_user: Callable[[], str]) -> None:
    user = new_user()

    async def run() -> None:
        # The user already has a memory, a turn log and a setting: the digest returns all three.
        assert (await ltm.extractor.extract(user, "c1", "turn-1", ["Remember: I live in Lyon"])).added == 1
        await ltm.set_enabled(user, True)
        for turn in ("turn-2", "turn-2", "turn-3"):  # a duplicate delivery of an unchanged turn re-runs
            with DynamoCalls(ltm.store.client) as calls:
                result = await ltm.extractor.extract(user, "c1", turn, ["What is the weather like?",
                                                                        "Remember: I live in Lyon"])
            assert (result.outcome, result.added, result.updated, result.deleted) == ("extracted", 0, 0, 0)
            assert calls == ["Query"]  # the digest; no setting or marker read, no write
        digest = ltm.store.digest(user, 20)
        assert digest.turn_log.turns == ("turn-1",) and [m.text for m in digest.memories] == ["I live in Lyon"]

    asyncio.run(run())


def test_a_turn_that_changed_memories_is_done_once_without_the_model(ltm: LongTermMemory,
                                                                     new_user: Callable[[], str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    user = new_user()

    async def run() -> None:
        first = await ltm.extractor.extract(user, "c1", "turn-1", ["Remember: I speak Portuguese"])
        assert (first.outcome, first.added) == ("extracted", 1)
        assert ltm.store.digest(user, 20).turn_log.turns == ("turn-1",)

        async def no_model(*_: Any) -> str:
            raise AssertionError("a redelivered turn must not call the model")

        monkeypatch.setattr(ltm.extractor, "_generate", no_model)
        with DynamoCalls(ltm.store.client) as calls:
            again = await ltm.extractor.extract(user, "c2", "turn-1", ["Remember: I speak Portuguese"])
        assert again.outcome == "already_done" and calls == ["Query"]

    asyncio.run(run())


def test_the_turn_log_is_bounded_and_keeps_concurrent_writers(ltm: LongTermMemory,
                                                              new_user: Callable[[], str]) -> None:
    user, store = new_user(), ltm.store
    assert store.record_turn(user, "a", TurnLog())
    # A stale view (no item yet): the conditional write fails, the log is re-read and both are kept.
    assert store.record_turn(user, "b", TurnLog())
    assert store.turn_log(user).turns == ("a", "b")
    assert store.record_turn(user, "a", store.turn_log(user))  # already there: unchanged
    for n in range(MAX_CHANGED_TURNS + 5):
        assert store.record_turn(user, f"t{n}", store.turn_log(user))
    log = store.turn_log(user)
    assert log.turns == tuple(f"t{n}" for n in range(5, MAX_CHANGED_TURNS + 5))
    digest = store.digest(user, 20)  # the log sorts inside the digest's range, and is no memory
    assert digest.turn_log == log and digest.memories == () and not digest.has_more


def test_memory_turned_off_is_read_from_the_digest(ltm: LongTermMemory, new_user: Callable[[], str]) -> None:
    user = new_user()

    async def run() -> None:
        await ltm.set_enabled(user, False)
        with DynamoCalls(ltm.store.client) as calls:
            result = await ltm.extractor.extract(user, "c1", "turn-1", ["Remember: I am left-handed"])
        assert result.outcome == "disabled" and calls == ["Query"]
        assert ltm.store.digest(user, 20).enabled is False and not await ltm.enabled(user)
        await ltm.set_enabled(user, True)
        assert (await ltm.extractor.extract(user, "c1", "turn-1", ["Remember: I am left-handed"])).added == 1

    asyncio.run(run())


def test_chat_turns_hand_their_texts_to_the_observer_without_a_history_read(
        memory_app: Callable[..., Any], new_user: Callable[[], str], poll: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_read(*_: Any) -> None:
        raise AssertionError("the turn's texts come with the trigger")

    monkeypatch.setattr(ConversationSummarizer, "_turn_texts", no_read)
    base, _ = memory_app()
    user = new_user()
    chat(base, user, "c1", "Remember: I cycle to work", "u1")
    poll(lambda: texts(base, user) == ["I cycle to work"])


def test_the_extraction_prompt_uses_temporary_ids_and_user_messages_only() -> None:
    existing = [MemoryItem(id="m00000000000000001abcdef", user_id="u", text="I like tea")]
    prompt, ids = extraction_prompt(existing, ["Remember: x"])
    data = json.loads(prompt)
    assert data["existing"] == [{"id": "1", "text": "I like tea", "kind": "fact"}] and ids == {"1": existing[0].id}
    assert "m00000000000000001abcdef" not in prompt and data["user_messages"] == ["Remember: x"]


def test_memory_off_and_temporary_conversations_remember_nothing(memory_app: Callable[..., Any],
                                                                 new_user: Callable[[], str],
                                                                 poll: Callable[..., Any]) -> None:
    base, _ = memory_app()
    off, temporary = new_user(), new_user()
    response = httpx.put(f"{base}/api/memories/settings", json={"enabled": False}, headers={"x-test-user": off})
    assert response.json() == {"enabled": False}
    chat(base, off, "c1", "Remember: I am left-handed", "u1")
    chat(base, temporary, "c1", "Remember: I am left-handed", "u1", temporary=True)
    # A marker turn after each: once its memory shows up, the earlier turn's extraction is over too.
    httpx.put(f"{base}/api/memories/settings", json={"enabled": True}, headers={"x-test-user": off})
    chat(base, off, "c1", "Remember: marker", "u2")
    chat(base, temporary, "c1", "Remember: marker", "u2")
    poll(lambda: texts(base, off) == ["marker"] and texts(base, temporary) == ["marker"])
    assert memories(base, off)["enabled"] is True


def test_recall_puts_memories_in_the_system_prompt_and_deleted_ones_never_return(
        memory_app: Callable[..., Any], new_user: Callable[[], str], ltm: LongTermMemory) -> None:
    _, components = memory_app()
    service_recall = components.memories.recall
    user, other = new_user(), new_user()
    embedder = LocalHashEmbedder(256)

    async def run() -> None:
        for owner in (user, other):  # identical text for two users
            vector = (await embedder.embed(["my favourite colour is teal"]))[0]
            await asyncio.to_thread(ltm.store.put, owner, "my favourite colour is teal", "fact", vector,
                                    embedder.name, "c0")
        request = ChatRequest(messages=(ChatMessage(role="user", text="which colour do I like?"),))
        block = await service_recall.recall(Principal(user), request)
        assert block and BLOCK_OPEN in block and "favourite colour is teal" in block
        page, _, _ = await ltm.list(user, 10, None)
        await ltm.delete(user, page[0].id)
        assert await service_recall.recall(Principal(user), request) is None
        assert "teal" in (await service_recall.recall(Principal(other), request) or "")  # B's own is untouched
        temporary = ChatRequest(messages=request.messages, temporary=True)
        assert await service_recall.recall(Principal(other), temporary) is None

    asyncio.run(run())


def test_search_runs_when_the_digest_is_not_enough_and_never_crosses_users(
        memory_settings: Callable[..., Any], dynamodb: Any, new_user: Callable[[], str]) -> None:
    from chatcore.memories import build_long_term_memory
    from chatcore.providers import ProviderRegistry
    from chatcore.routing.router import Router

    settings = memory_settings(memory_digest_size=2, memory_search_timeout_ms=30_000.0)
    ltm = build_long_term_memory(settings, Router(settings, ProviderRegistry(settings)), client=dynamodb)
    alice, bob = new_user(), new_user()
    embedder = ltm.embedder

    async def run() -> tuple[str | None, str | None]:
        for text in ["I was born in Porto", "I work as a nurse", "I have two sisters", "I like hiking"]:
            await asyncio.to_thread(ltm.store.put, alice, text, "fact", (await embedder.embed([text]))[0],
                                    embedder.name, "c")
        secret = "my bank is Example Bank"
        await asyncio.to_thread(ltm.store.put, bob, secret, "fact", (await embedder.embed([secret]))[0],
                                embedder.name, "c")
        request = ChatRequest(messages=(ChatMessage(role="user", text="where was I born? my bank is Example Bank"),))
        return (await ltm.recall.recall(Principal(alice), request),
                await ltm.recall.recall(Principal(bob), request))

    alice_block, bob_block = asyncio.run(run())
    assert alice_block and "born in Porto" in alice_block  # older than the 2-memory digest: found by search
    assert "Example Bank" not in alice_block
    assert bob_block and "Example Bank" in bob_block and "Porto" not in bob_block


def test_privacy_api_pages_edits_and_deletes(memory_app: Callable[..., Any], new_user: Callable[[], str],
                                             ltm: LongTermMemory) -> None:
    base, _ = memory_app()
    user, other = new_user(), new_user()
    embedder = LocalHashEmbedder(256)

    async def seed() -> None:
        for n in range(5):
            text = f"fact {n}"
            await asyncio.to_thread(ltm.store.put, user, text, "fact", (await embedder.embed([text]))[0],
                                    embedder.name, "c9")

    asyncio.run(seed())
    first = memories(base, user, limit=3)
    second = memories(base, user, limit=3, cursor=first["nextCursor"])
    listed = first["memories"] + second["memories"]
    assert [m["text"] for m in listed] == [f"fact {n}" for n in (4, 3, 2, 1, 0)] and second["nextCursor"] is None
    target = listed[0]["id"]
    headers = {"x-test-user": user}
    # Another user can neither see, edit nor delete it.
    assert httpx.patch(f"{base}/api/memories/{target}", json={"text": "hijack"},
                       headers={"x-test-user": other}).status_code == 404
    assert httpx.delete(f"{base}/api/memories/{target}", headers={"x-test-user": other}).status_code == 404
    assert memories(base, other)["memories"] == []
    bad_cursor = httpx.get(f"{base}/api/memories", params={"cursor": first["nextCursor"]},
                           headers={"x-test-user": other})
    assert bad_cursor.status_code == 400
    edited = httpx.patch(f"{base}/api/memories/{target}", json={"text": "I prefer tea", "kind": "preference"},
                         headers=headers)
    assert edited.status_code == 200 and edited.json()["text"] == "I prefer tea"
    hits = ltm.index.search(user, asyncio.run(embedder.embed(["I prefer tea"]))[0], 1)
    assert hits[0].memory.id == target and hits[0].distance < 1e-4  # re-embedded with the new text
    assert httpx.delete(f"{base}/api/memories/{target}", headers=headers).status_code == 204
    assert httpx.delete(f"{base}/api/memories/{target}", headers=headers).status_code == 404
    assert httpx.delete(f"{base}/api/memories", headers=headers).json() == {"deleted": 4}
    assert memories(base, user)["memories"] == []


def test_erasing_a_user_removes_every_memory_item(ltm: LongTermMemory, new_user: Callable[[], str],
                                                  dynamodb: Any) -> None:
    user = new_user()

    async def run() -> None:
        await ltm.extractor.extract(user, "c1", "t1", ["Remember: I am a night owl"])
        await ltm.set_enabled(user, True)
        await ltm.erase_user(user)

    asyncio.run(run())
    left = dynamodb.query(TableName=ltm.store.table, KeyConditionExpression="pk = :p",
                          ExpressionAttributeValues={":p": {"S": f"USER#{user}#MEM"}})
    assert left["Items"] == []


def test_prompt_fitting_counts_the_memory_block() -> None:
    block = memory_block([MemoryItem(id="m1", user_id="u", text="likes teal " * 10)], max_tokens=300)
    assert block is not None
    messages = (Message(role="user", content="hi"),)
    roomy = fit_prompt(messages, "sys", None, 8_000, 100, memories=block)
    assert roomy.memories_included and block in (roomy.system or "")
    assert roomy.estimated_input_tokens > fit_prompt(messages, "sys", None, 8_000, 100).estimated_input_tokens
    tight = fit_prompt(messages, "sys", None, 140, 100, memories=block)  # no room: dropped, the turn still fits
    assert not tight.memories_included and tight.system == "sys"
    assert memory_block([MemoryItem(id="m1", user_id="u", text="x" * 400)], max_tokens=50) is None


def test_the_local_embedder_is_stable_across_processes() -> None:
    code = ("import asyncio; from chatcore.memories.embedders import LocalHashEmbedder as E; "
            "print(asyncio.run(E(256).embed(['my favourite colour is teal']))[0][:8])")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1
    here = asyncio.run(LocalHashEmbedder(256).embed(["my favourite colour is teal"]))[0][:8]
    assert outputs.pop().strip() == str(here)


@pytest.fixture(autouse=True)
def _drain() -> Any:
    yield
    asyncio.run(background.drain(5))


def test_the_chat_turns_digest_is_eventually_consistent_and_the_extractions_is_not(
        ltm: LongTermMemory, new_user: Callable[[], str]) -> None:
    """The chat path's digest costs half a read: memories change after turns, off the chat path. The
    extraction reads consistently, since it decides what to add next to what is there."""
    from chatcore.auth import Principal
    from chatcore.messages import ChatMessage, ChatRequest

    user = new_user()
    seen: list[bool] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(bool(params.get("ConsistentRead")))

    clients = {id(c): c for c in (ltm.store.client, ltm.store.critical_client)}.values()
    for client in clients:
        client.meta.events.register("provide-client-params.dynamodb.Query", record, unique_id="consistency")
    try:
        request = ChatRequest(messages=(ChatMessage(role="user", text="hello"),))
        asyncio.run(ltm.recall.recall(Principal(user_id=user, method="test"), request))
        assert seen == [False]
        asyncio.run(ltm.extractor.extract(user, "c1", "turn-1", ["What time is it?"]))
        assert seen == [False, True]
    finally:
        for client in clients:
            client.meta.events.unregister("provide-client-params.dynamodb.Query", unique_id="consistency")
