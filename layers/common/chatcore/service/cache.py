"""The opt-in response cache: a repeated identical request is answered from DynamoDB, not a model.

Asked for per request (`ChatRequest.cache`: the `x-chat-cache` header on any endpoint, or `cache`
in the `/api/chat` body) or per deployment (`"cache": true` in the registry, for chains that start
at it); `False` from the request turns it off. The key is the SHA-256 of the normalised request
as the router will send it (the resolved chain of deployments, system prompt, the user's long-term
memory block, summary, messages and sampling parameters), scoped to the caller (`CACHE_SCOPE=user`) or to a tenant the operator names
(`tenant:<name>`): one user's answers are never another's unless the operator says so.

Only deterministic requests are cached (`temperature` 0; unset means the provider's default, which
samples) unless `CACHE_NONDETERMINISTIC=true`, and only complete answers (finish `stop` or
`length`, no error, at most `CACHE_MAX_BYTES`). A hit replays the stored answer as a normal event
stream (`Start`, text chunks, `Finish` with the original usage marked cached and cost 0), so every
encoder serves it unchanged. Limits count a hit like any request. See docs/cache.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from chatcore import background
from chatcore.events import ErrorEvent, Event, FileOutput, Finish, ReasoningDelta, Start, TextDelta, Usage
from chatcore.messages import ChatRequest
from chatcore.observability import emit_metrics, get_logger
from chatcore.principal import Principal
from chatcore.routing.router import Route
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings

CacheStatus = Literal["hit", "miss", "bypass"]
HEADER = "x-chat-cache"
ITEM_SK = "ANSWER"
KEY_VERSION = 2  # bump when the normalised form changes: old entries then simply stop matching
CHUNK_CHARS = 64  # replayed text is cut into pieces of about this size, at whitespace where possible
CACHEABLE_FINISH = frozenset({"stop", "length"})


class CacheStore(Protocol):
    """Where cached answers live: the stored answer document by key, with an expiry."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, answer: dict[str, Any], expires_at: int) -> None: ...


class DynamoCacheStore:
    """Cached answers in the one table: `pk=CACHE#<scope>#<sha256>`, `sk=ANSWER`, TTL `expires_at`."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.table = settings.table_name
        self._settings = settings
        self._client = client

    def _get_client(self, *, critical: bool) -> Any:
        if self._client is not None:
            return self._client
        from chatcore.dynamodb import client_for

        return client_for(self._settings, critical=critical)

    def _get(self, key: str) -> dict[str, Any] | None:
        # Before the first token: the short-timeout profile, and a miss is the answer to any trouble.
        item = self._get_client(critical=True).get_item(
            TableName=self.table, Key={"pk": {"S": key}, "sk": {"S": ITEM_SK}}).get("Item")
        if not item:
            return None
        # DynamoDB deletes expired items lazily (within days): an expired one is a miss.
        if int(item.get("expires_at", {}).get("N", "0")) <= time.time():
            return None
        answer: dict[str, Any] = json.loads(item["answer"]["S"])
        return answer

    def _put(self, key: str, answer: dict[str, Any], expires_at: int) -> None:
        self._get_client(critical=False).put_item(TableName=self.table, Item={
            "pk": {"S": key}, "sk": {"S": ITEM_SK}, "answer": {"S": _json(answer)},
            "created_at": {"N": str(int(time.time()))}, "expires_at": {"N": str(expires_at)},
        })

    async def get(self, key: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._get, key)

    async def put(self, key: str, answer: dict[str, Any], expires_at: int) -> None:
        await asyncio.to_thread(self._put, key, answer, expires_at)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def cache_key(scope: str, route: Route, turn: ChatTurn) -> str:
    """`CACHE#<scope>#<sha256>` of everything that shapes the answer, as the router will send it."""
    normalised = {
        "v": KEY_VERSION,
        "chain": [d.name for d in route.chain],
        "system": turn.system,
        # The memory block is part of the prompt: answers given with other memories (another user's in a
        # shared tenant, or the same user's before "remember X") must not be replayed.
        "memories": turn.memories,
        "summary": turn.summary,
        "messages": [[m.role, m.content, *(hashlib.sha256(a.data).hexdigest() for a in m.attachments)]
                     for m in turn.messages],
        "temperature": turn.temperature,
        "top_p": turn.top_p,
        "seed": turn.seed,
        "stop": list(turn.stop),
        "response_format": turn.response_format,
        "max_output_tokens": turn.max_output_tokens,
        "provider_options": turn.provider_options,
        "tools": [[t.name, t.description, t.input_schema] for t in turn.tools],
        "tool_choice": turn.tool_choice,
    }
    digest = hashlib.sha256(_json(normalised).encode()).hexdigest()
    return f"CACHE#{scope}#{digest}"


def uses_tools(turn: ChatTurn) -> bool:
    return bool(turn.tools) or any(m.tool_calls or m.tool_results for m in turn.messages)


def cached_usage(usage: dict[str, Any] | None) -> Usage | None:
    """The stored usage as reported on a hit: the whole prompt counted as cached input."""
    if not usage:
        return None
    return Usage(input_tokens=usage.get("inputTokens"), output_tokens=usage.get("outputTokens"),
                 cached_input_tokens=usage.get("inputTokens"), reasoning_tokens=usage.get("reasoningTokens"))


def _pieces(text: str) -> list[str]:
    """`text` cut into chunks of about `CHUNK_CHARS`, after whitespace where there is some."""
    out: list[str] = []
    while len(text) > CHUNK_CHARS:
        cut = max(text.rfind(" ", 0, CHUNK_CHARS), text.rfind("\n", 0, CHUNK_CHARS)) + 1 or CHUNK_CHARS
        out.append(text[:cut])
        text = text[cut:]
    if text:
        out.append(text)
    return out


async def replay(answer: dict[str, Any], message_id: str) -> AsyncIterator[Event]:
    """A stored answer as the events a live one would produce, marked as a cache hit with cost 0."""
    yield Start(message_id, answer["provider"], answer["model"], deployment=answer.get("deployment", ""))
    for kind, text in answer["parts"]:
        for piece in _pieces(text):
            yield ReasoningDelta(piece) if kind == "reasoning" else TextDelta(piece)
    yield Finish(reason=answer["finish"], raw_reason=answer.get("raw_finish"), usage=cached_usage(answer.get("usage")),
                 metadata={"deployment": answer.get("deployment", ""), "fallbacks": [], "costUsd": 0.0,
                           "cache": "hit"})


@dataclass
class _Recorder:
    """What a live answer streamed, in the stored form."""

    parts: list[list[str]] = field(default_factory=list)
    start: Start | None = None
    files: bool = False  # the answer generated files: not cached (a replay would lack them)

    def add(self, kind: str, text: str) -> None:
        # Deltas are collected and joined once, in `answer` (appending to a str per token is O(n^2)).
        if self.parts and self.parts[-1][0] == kind:
            self.parts[-1].append(text)
        else:
            self.parts.append([kind, text])

    def answer(self, finish: Finish) -> dict[str, Any]:
        assert self.start is not None
        return {"provider": self.start.provider, "model": self.start.model, "deployment": self.start.deployment,
                "parts": [[kind, "".join(texts)] for kind, *texts in self.parts], "finish": finish.reason, "raw_finish": finish.raw_reason,
                "usage": finish.usage.as_dict() if finish.usage else None}


@dataclass
class CacheLookup:
    """One request's dealings with the cache: its status, and the stream to serve."""

    status: CacheStatus
    key: str | None = None
    answer: dict[str, Any] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {HEADER: self.status}


class ResponseCache:
    """Looks requests up before they are routed, and stores complete answers after they stream."""

    def __init__(self, settings: Settings, store: CacheStore) -> None:
        self.settings = settings
        self.store = store

    def scope(self, principal: Principal) -> str:
        """Whose entries a caller may see: its own (`user:<id>`), or the operator's named tenant."""
        if self.settings.cache_scope == "user":
            return f"user:{principal.user_id}"
        return self.settings.cache_scope

    @staticmethod
    def wanted(request: ChatRequest, route: Route) -> bool:
        """The request's own choice, else the setting of the deployment its chain starts with."""
        if request.cache is not None:
            return request.cache
        return bool(route.chain) and route.chain[0].cache

    def deterministic(self, turn: ChatTurn) -> bool:
        return turn.temperature == 0 or self.settings.cache_nondeterministic

    async def lookup(self, principal: Principal, request: ChatRequest, route: Route,
                     turn: ChatTurn) -> CacheLookup | None:
        """None when the cache is not in play; else hit (with the answer), miss, or bypass. Never raises."""
        if not self.wanted(request, route):
            return None
        if not self.deterministic(turn) or uses_tools(turn):
            return CacheLookup("bypass")  # a tool's output may change: a turn that offers tools is never replayed
        key = cache_key(self.scope(principal), route, turn)
        if request.trigger == "regenerate-message":  # a new answer is asked for: store it, serve nothing old
            return CacheLookup("miss", key)
        try:
            answer = await self.store.get(key)
        except Exception as exc:  # an unreachable cache is a miss, never a failed request
            get_logger().warning("cache lookup failed", extra={"error": type(exc).__name__})
            answer = None
        if answer is None:
            return CacheLookup("miss", key)
        return CacheLookup("hit", key, answer)

    def serve(self, lookup: CacheLookup | None, turn: ChatTurn,
              live: Callable[[], AsyncIterator[Event]]) -> AsyncIterator[Event]:
        """The events to answer with: the stored answer on a hit (`live` is never called), else
        `live()`, recorded on a miss."""
        if lookup is None:
            return live()
        if lookup.status == "hit" and lookup.answer is not None:
            return self._hit(lookup.answer, turn)
        return self._record(lookup, live())

    async def _hit(self, answer: dict[str, Any], turn: ChatTurn) -> AsyncIterator[Event]:
        usage = cached_usage(answer.get("usage"))
        get_logger().info("chat request", extra={
            "request_id": turn.request_id, "user_id": turn.user_id, "message_id": turn.message_id,
            "conversation_id": turn.conversation_id, "deployment": answer.get("deployment"), "outcome": "cache_hit",
            "usage": usage.as_dict() if usage else None, "cost_usd": 0.0,
        })
        emit_metrics("chat", {}, {"ChatRequests": (1, "Count"), "CacheHits": (1, "Count")})
        async for event in replay(answer, turn.message_id):
            yield event

    async def _record(self, lookup: CacheLookup, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        recorder = _Recorder()
        if lookup.status == "miss":
            emit_metrics("chat", {}, {"CacheMisses": (1, "Count")})
        async for event in events:
            if isinstance(event, Start):
                recorder.start = event
            elif isinstance(event, TextDelta):
                recorder.add("text", event.text)
            elif isinstance(event, ReasoningDelta):
                recorder.add("reasoning", event.text)
            elif isinstance(event, FileOutput):
                recorder.files = True
            elif isinstance(event, Finish):
                if (lookup.key is not None and event.reason in CACHEABLE_FINISH and recorder.start is not None
                        and not recorder.files):
                    self._store(lookup.key, recorder.answer(event))
                event = replace(event, metadata={**event.metadata, "cache": lookup.status})
            elif isinstance(event, ErrorEvent):
                event = replace(event, metadata={**event.metadata, "cache": lookup.status})
            yield event

    def _store(self, key: str, answer: dict[str, Any]) -> None:
        """Write the answer in the background (drained before the response ends); too large: skip."""
        size = len(_json(answer).encode())
        if size > self.settings.cache_max_bytes:
            get_logger().info("answer not cached: too large", extra={"bytes": size})
            return
        expires_at = int(time.time()) + self.settings.cache_ttl_s

        async def put() -> None:
            try:
                await self.store.put(key, answer, expires_at)
            except Exception as exc:  # a lost cache write costs a later model call, nothing more
                get_logger().warning("cache write failed", extra={"error": type(exc).__name__})

        background.spawn(put())


class Cache(Protocol):
    """What the chat service asks of a response cache (`ResponseCache`, or `NoCache`)."""

    async def lookup(self, principal: Principal, request: ChatRequest, route: Route,
                     turn: ChatTurn) -> CacheLookup | None: ...

    def serve(self, lookup: CacheLookup | None, turn: ChatTurn,
              live: Callable[[], AsyncIterator[Event]]) -> AsyncIterator[Event]: ...


class NoCache:
    """No response cache: every answer is live."""

    async def lookup(self, principal: Principal, request: ChatRequest, route: Route,
                     turn: ChatTurn) -> CacheLookup | None:
        return None

    def serve(self, lookup: CacheLookup | None, turn: ChatTurn,
              live: Callable[[], AsyncIterator[Event]]) -> AsyncIterator[Event]:
        return live()


def build_cache(settings: Settings) -> ResponseCache | None:
    """The response cache when `CACHE_STORE=dynamodb` (the default with a table), else None (no AWS call here)."""
    if settings.cache_store != "dynamodb":
        return None
    return ResponseCache(settings, DynamoCacheStore(settings))
