"""The opt-in response cache through every entry point, against DynamoDB (moto, server mode).

A provider that counts its calls (`counted/...`) shows whether a model was asked; the answers
come back through the AI SDK UI message stream, plain SSE and the OpenAI SDK.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from chatcore.api.app import Components, create_app
from chatcore.conversations.memory import DynamoMemory
from chatcore.conversations.store import ConversationStore
from chatcore.limits import NoLimits
from chatcore.limits.limiter import DynamoDBLimiter
from chatcore.limits.policy import LimitPolicy, TierLimits
from chatcore.providers import ProviderRegistry
from chatcore.service.cache import DynamoCacheStore, ResponseCache

from tests.conftest import settings_for_tests
from tests.moto_dynamodb import Table

from .conftest import CountingProvider, HeaderAuthenticator

CACHE_ON = {"x-chat-cache": "true"}


def user_headers(user: str, **extra: str) -> dict[str, str]:
    return {"x-test-user": user, **extra}


def ui_chat(url: str, text: str, user: str = "alice", headers: dict[str, str] | None = None,
            temperature: float | None = 0, **body: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """POST /api/chat (temperature 0 unless given; None: unset); the response and its UI message stream chunks."""
    payload = {"messages": [{"role": "user", "content": text}], "model": "counted/echo", **body}
    if temperature is not None:
        payload["temperature"] = temperature
    response = httpx.post(f"{url}/api/chat", json=payload, headers=user_headers(user, **(headers or {})), timeout=60)
    assert response.status_code == 200, response.text
    chunks = [json.loads(line[len("data: "):]) for line in response.text.split("\n\n")
              if line.startswith("data: {")]
    return response, chunks


def ui_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


def finish_metadata(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    finish = [c for c in chunks if c["type"] == "finish"]
    assert len(finish) == 1
    metadata: dict[str, Any] = finish[0]["messageMetadata"]
    return metadata


def sdk(url: str, user: str = "alice", cache: bool = True) -> openai.OpenAI:
    headers = user_headers(user, **(CACHE_ON if cache else {}))
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60, default_headers=headers)


def cache_items(table: Table) -> list[dict[str, Any]]:
    items = table.client.scan(TableName=table.name)["Items"]
    return [item for item in items if item["pk"]["S"].startswith("CACHE#")]


def test_ui_message_stream_miss_then_hit(cached_app: Callable[..., str], counted: CountingProvider) -> None:
    url = cached_app()
    first, first_chunks = ui_chat(url, "What is a cache?", headers=CACHE_ON)
    assert first.headers["x-chat-cache"] == "miss" and counted.calls == 1
    assert finish_metadata(first_chunks)["cache"] == "miss"

    second, chunks = ui_chat(url, "What is a cache?", headers=CACHE_ON)
    assert second.headers["x-chat-cache"] == "hit"
    assert counted.calls == 1, "a hit must not call the model"
    assert ui_text(chunks) == ui_text(first_chunks) == "You said: What is a cache?"
    metadata = finish_metadata(chunks)
    assert metadata["cache"] == "hit" and metadata["costUsd"] == 0.0
    assert metadata["usage"]["cachedInputTokens"] == metadata["usage"]["inputTokens"] >= 1
    assert metadata["usage"]["outputTokens"] == finish_metadata(first_chunks)["usage"]["outputTokens"]
    assert second.headers["x-chat-deployment"] == first.headers["x-chat-deployment"]
    assert [c["type"] for c in chunks][:2] == ["start", "start-step"] and chunks[-1]["type"] == "finish"


def test_body_field_turns_the_cache_on_for_api_chat(cached_app: Callable[..., str], counted: CountingProvider) -> None:
    url = cached_app()
    ui_chat(url, "body flag", cache=True)
    second, _ = ui_chat(url, "body flag", cache=True)
    assert second.headers["x-chat-cache"] == "hit" and counted.calls == 1


def test_plain_sse_miss_then_hit(cached_app: Callable[..., str], counted: CountingProvider,
                                 sse_data: Callable[[bytes], list[str]]) -> None:
    url = cached_app()
    payload = {"messages": [{"role": "user", "content": "sse please"}], "model": "counted/echo", "temperature": 0}
    bodies = []
    for expected in ("miss", "hit"):
        response = httpx.post(f"{url}/api/chat/sse", json=payload, headers=user_headers("alice", **CACHE_ON))
        assert response.headers["x-chat-cache"] == expected
        bodies.append(sse_data(response.content))
    assert counted.calls == 1
    text = "".join(json.loads(item)["content"] for item in bodies[1][:-1])
    assert text == "You said: sse please" and bodies[1][-1] == "[DONE]"


def test_openai_streaming_and_non_streaming_miss_then_hit(cached_app: Callable[..., str],
                                                          counted: CountingProvider) -> None:
    client = sdk(cached_app())
    messages = [{"role": "user", "content": "openai please"}]
    miss = client.chat.completions.with_raw_response.create(model="counted/echo", messages=messages, temperature=0)
    assert miss.headers["x-chat-cache"] == "miss"
    stream = client.chat.completions.with_raw_response.create(
        model="counted/echo", messages=messages, temperature=0, stream=True, stream_options={"include_usage": True})
    assert stream.headers["x-chat-cache"] == "hit"
    chunks = list(stream.parse())
    assert counted.calls == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: openai please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens >= 1
    completion = client.chat.completions.create(model="counted/echo", messages=messages, temperature=0)
    assert (completion.model_extra or {})["x_chat"]["cache"] == "hit"
    assert (completion.model_extra or {})["x_chat"]["cost_usd"] == 0.0
    assert completion.choices[0].message.content == "You said: openai please" and counted.calls == 1


def test_one_entry_serves_every_endpoint(cached_app: Callable[..., str], counted: CountingProvider) -> None:
    """The key is the request as the model sees it, not the wire format it came in."""
    url = cached_app()
    sdk(url).chat.completions.create(model="counted/echo", messages=[{"role": "user", "content": "shared"}],
                                     temperature=0)
    response, chunks = ui_chat(url, "shared", headers=CACHE_ON)
    assert response.headers["x-chat-cache"] == "hit" and counted.calls == 1
    assert ui_text(chunks) == "You said: shared"


def test_no_hits_across_users(cached_app: Callable[..., str], counted: CountingProvider) -> None:
    url = cached_app()
    messages = [{"role": "user", "content": "private question"}]
    sdk(url, "alice").chat.completions.create(model="counted/echo", messages=messages, temperature=0)
    bob = sdk(url, "bob").chat.completions.with_raw_response.create(model="counted/echo", messages=messages,
                                                                     temperature=0)
    assert bob.headers["x-chat-cache"] == "miss" and counted.calls == 2
    again = sdk(url, "alice").chat.completions.with_raw_response.create(model="counted/echo", messages=messages,
                                                                         temperature=0)
    assert again.headers["x-chat-cache"] == "hit" and counted.calls == 2


def test_a_named_tenant_shares_entries(cached_app: Callable[..., str], counted: CountingProvider,
                                       table: Table) -> None:
    url = cached_app(cache_scope="tenant:faq-bot")
    messages = [{"role": "user", "content": "opening hours?"}]
    sdk(url, "alice").chat.completions.create(model="counted/echo", messages=messages, temperature=0)
    bob = sdk(url, "bob").chat.completions.with_raw_response.create(model="counted/echo", messages=messages,
                                                                     temperature=0)
    assert bob.headers["x-chat-cache"] == "hit" and counted.calls == 1
    assert [item["pk"]["S"].split("#")[1] for item in cache_items(table)] == ["tenant:faq-bot"]


def test_the_stored_item(cached_app: Callable[..., str], table: Table) -> None:
    url = cached_app(cache_ttl_s=600)
    before = int(time.time())
    ui_chat(url, "store me", headers=CACHE_ON)
    [item] = cache_items(table)
    scope, digest = item["pk"]["S"].split("#")[1:]
    assert scope == "user:alice" and len(digest) == 64 and item["sk"]["S"] == "ANSWER"
    assert before + 600 <= int(item["expires_at"]["N"]) <= int(time.time()) + 600
    answer = json.loads(item["answer"]["S"])
    assert answer["parts"] == [["text", "You said: store me"]] and answer["finish"] == "stop"


@pytest.mark.parametrize("model", ["counted/fail-after-3", "counted/fail-429", "counted/truncate-after-2"])
def test_errors_are_never_cached(cached_app: Callable[..., str], counted: CountingProvider, table: Table,
                                 model: str) -> None:
    client = sdk(cached_app())
    messages = [{"role": "user", "content": "one two three four five"}]
    calls = []
    for _ in range(2):
        with pytest.raises(openai.APIError):
            for _chunk in client.chat.completions.create(model=model, messages=messages, temperature=0, stream=True):
                pass
        calls.append(counted.calls)
    assert calls[1] > calls[0]  # the second request went to the model again
    assert cache_items(table) == []


def test_requests_that_sample_bypass_the_cache_unless_the_operator_opts_in(
        cached_app: Callable[..., str], counted: CountingProvider, table: Table) -> None:
    url = cached_app()
    for temperature in (None, 0.7):
        for _ in range(2):
            response, _ = ui_chat(url, "sampled", headers=CACHE_ON, temperature=temperature)
            assert response.headers["x-chat-cache"] == "bypass"
    assert counted.calls == 4 and cache_items(table) == []

    url = cached_app(cache_nondeterministic=True)
    ui_chat(url, "sampled", headers=CACHE_ON, temperature=0.7)
    response, _ = ui_chat(url, "sampled", headers=CACHE_ON, temperature=0.7)
    assert response.headers["x-chat-cache"] == "hit" and counted.calls == 5


def test_sampling_parameters_are_part_of_the_key(cached_app: Callable[..., str], counted: CountingProvider) -> None:
    client = sdk(cached_app())
    messages = [{"role": "user", "content": "same words"}]
    for options in ({}, {"max_tokens": 50}, {"stop": ["x"]}, {"seed": 3}, {"top_p": 0.5}, {"model": "mock/echo"}):
        kwargs: dict[str, Any] = {"model": "counted/echo", "messages": messages, "temperature": 0, **options}
        raw = client.chat.completions.with_raw_response.create(**kwargs)
        assert raw.headers["x-chat-cache"] == "miss", options
    assert counted.calls == 5  # the last one went to the mock provider itself


class Digests:
    """The long-term memory block of each user: whatever `blocks` holds now."""

    def __init__(self, blocks: dict[str, str]) -> None:
        self.blocks = blocks

    async def recall(self, principal: Any, request: Any) -> str | None:
        return self.blocks.get(principal.user_id)


class LongTermMemoryStub:
    """Long-term memory as the chat path uses it: only its `recall`."""

    def __init__(self, blocks: dict[str, str]) -> None:
        self.recall = Digests(blocks)


def test_the_users_memories_are_part_of_the_key(cached_app: Callable[..., str], counted: CountingProvider) -> None:
    """The memory block is in the prompt: an answer given with other memories is never replayed."""
    blocks = {"alice": "<memories>\n- Alice is vegetarian.\n</memories>",
              "bob": "<memories>\n- Bob eats everything.\n</memories>"}
    url = cached_app(cache_scope="tenant:shared", memories=LongTermMemoryStub(blocks))
    question = "What should I cook tonight?"
    assert ui_chat(url, question, "alice", headers=CACHE_ON)[0].headers["x-chat-cache"] == "miss"
    # Same tenant, same request, other memories: a miss, not Alice's answer.
    assert ui_chat(url, question, "bob", headers=CACHE_ON)[0].headers["x-chat-cache"] == "miss"
    assert counted.calls == 2
    # Same memories: a hit, whoever asks.
    assert ui_chat(url, question, "alice", headers=CACHE_ON)[0].headers["x-chat-cache"] == "hit"
    blocks["carol"] = blocks["bob"]
    assert ui_chat(url, question, "carol", headers=CACHE_ON)[0].headers["x-chat-cache"] == "hit"
    assert counted.calls == 2
    # Alice asks to remember something: her next identical request is answered anew.
    blocks["alice"] = "<memories>\n- Alice is vegetarian.\n- Alice is allergic to nuts.\n</memories>"
    assert ui_chat(url, question, "alice", headers=CACHE_ON)[0].headers["x-chat-cache"] == "miss"
    assert counted.calls == 3


def test_a_deployment_can_turn_the_cache_on_and_a_request_off(cached_app: Callable[..., str],
                                                              counted: CountingProvider) -> None:
    registry = {"deployments": {
        "faq": {"provider": "counted", "model": "echo", "cache": True},
        "live": {"provider": "counted", "model": "echo", "tier": "premium"},
    }}
    url = cached_app(model_registry_json=json.dumps(registry))
    plain = sdk(url, cache=False)
    messages = [{"role": "user", "content": "faq"}]
    plain.chat.completions.create(model="faq", messages=messages, temperature=0)
    hit = plain.chat.completions.with_raw_response.create(model="faq", messages=messages, temperature=0)
    assert hit.headers["x-chat-cache"] == "hit" and counted.calls == 1
    refused = plain.chat.completions.with_raw_response.create(
        model="faq", messages=messages, temperature=0, extra_headers={"x-chat-cache": "false"})
    assert "x-chat-cache" not in refused.headers and counted.calls == 2
    live = plain.chat.completions.with_raw_response.create(model="live", messages=messages, temperature=0)
    assert "x-chat-cache" not in live.headers and counted.calls == 3


def test_answers_larger_than_the_limit_are_not_cached(cached_app: Callable[..., str], counted: CountingProvider,
                                                     table: Table) -> None:
    url = cached_app(cache_max_bytes=500)
    for _ in range(2):
        response, chunks = ui_chat(url, "long", headers=CACHE_ON, model="counted/lorem?tokens=200")
        assert response.headers["x-chat-cache"] == "miss" and len(ui_text(chunks)) > 500
    assert counted.calls == 2 and cache_items(table) == []


def test_limits_count_a_hit_like_any_request(cached_app: Callable[..., str], counted: CountingProvider,
                                            table: Table) -> None:
    limits = TierLimits(requests_per_minute=2, tokens_per_minute=10**6, tokens_per_day=10**6, concurrent_streams=5)
    limiter = DynamoDBLimiter(table.name, LimitPolicy({"free": limits}), lambda: table.client)
    client = sdk(cached_app(limiter=limiter))
    messages = [{"role": "user", "content": "limited"}]
    client.chat.completions.create(model="counted/echo", messages=messages, temperature=0)
    hit = client.chat.completions.with_raw_response.create(model="counted/echo", messages=messages, temperature=0)
    assert hit.headers["x-chat-cache"] == "hit" and hit.headers["x-ratelimit-remaining"] == "0"
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="counted/echo", messages=messages, temperature=0)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert counted.calls == 1


def test_a_bad_cache_header_is_a_400(cached_app: Callable[..., str]) -> None:
    url = cached_app()
    response = httpx.post(f"{url}/v1/chat/completions", headers=user_headers("alice", **{"x-chat-cache": "maybe"}),
                          json={"model": "counted/echo", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and "x-chat-cache" in response.json()["error"]["message"]


def test_a_hit_on_a_stored_conversation_is_stored_like_a_live_answer(
        serve_asgi: Callable[..., str], table: Table, counted: CountingProvider) -> None:
    settings = settings_for_tests(table_name=table.name, dynamodb_endpoint_url=table.endpoint, memory="dynamodb",
                                  cache_store="dynamodb", summary_trigger_tokens=0)
    store = ConversationStore(settings, client=table.client)
    url = serve_asgi(create_app(components=Components(
        settings=settings, providers=ProviderRegistry(settings, overrides={"counted": counted}),
        authenticator=HeaderAuthenticator(), limiter=NoLimits(), memory=DynamoMemory(settings, store),
        conversations=store, cache=ResponseCache(settings, DynamoCacheStore(settings, client=table.client)))))
    for conversation, expected in (("first-chat", "miss"), ("second-chat", "hit")):
        response, _ = ui_chat(url, "Hi!", headers=CACHE_ON, id=conversation,
                              messages=[{"id": f"{conversation}-m1", "role": "user", "content": "Hi!"}])
        assert response.headers["x-chat-cache"] == expected
    assert counted.calls == 1
    stored = httpx.get(f"{url}/api/conversations/second-chat", headers=user_headers("alice")).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    answer = stored["messages"][1]
    assert "".join(p.get("text", "") for p in answer["parts"] if p["type"] == "text") == "You said: Hi!"


def test_openai_requests_with_tools_or_tool_history_bypass_the_cache(cached_app: Callable[..., str],
                                                                     counted: CountingProvider) -> None:
    client = sdk(cached_app())
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    history: Any = [{"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    for kwargs in ({"messages": [{"role": "user", "content": "weather?"}], "tools": tools}, {"messages": history}):
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(model="counted/echo", temperature=0, **kwargs)
            assert raw.headers["x-chat-cache"] == "bypass"
    assert counted.calls == 4


def test_an_answer_with_a_generated_file_is_not_cached(cached_app: Callable[..., str], counted: CountingProvider) -> None:
    url = cached_app()
    for _ in range(2):
        _, chunks = ui_chat(url, "Draw a dot", headers=CACHE_ON, model="counted/image")
        assert [c["mediaType"] for c in chunks if c["type"] == "file"] == ["image/png"]  # no bucket: a data URL
    assert counted.calls == 2, "a replay would lack the image: such answers are not cached"


def test_the_app_builds_the_dynamodb_cache_the_other_tests_use(table: Table) -> None:
    """The tests above inject a cache on the test table; the app's own wiring must build the same kind."""
    from chatcore.api.app import default_components
    from chatcore.service.cache import DynamoCacheStore

    from tests.conftest import settings_for_tests

    settings = settings_for_tests(cache_store="dynamodb", table_name=table.name, dynamodb_endpoint_url=table.endpoint)
    cache = default_components(settings).cache
    assert isinstance(cache, ResponseCache) and isinstance(cache.store, DynamoCacheStore)
    assert default_components(settings_for_tests()).cache is None  # CACHE_STORE=none: no caching
