"""The chat service: one chat turn, from a verified caller and a domain request to typed events.

Every entry point (the AI SDK endpoint, plain SSE, the OpenAI-compatible API) parses its own wire
format into a `ChatRequest`, authenticates the caller and hands both here; what comes back is the
one internal event stream plus the response headers it implies, for the entry point to encode.

A turn: bound the request, build the system prompt, resolve the model (400 for an unknown one,
before anything is stored or charged), admit it against the caller's limits while the
conversation's history is read, look the turn up in the opt-in response cache (`service.cache`:
a hit replays a stored answer instead of routing), then stream the answer through the memory
(which stores the user message while the model is called and the answer in every outcome) and the
limits' settlement. Failures before the first event are raised (the entry point answers them as HTTP
errors); after it they are `ErrorEvent`s, so a stream never ends silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from chatcore import errors
from chatcore.attachments.service import Attachments
from chatcore.conversations.memory import Memory, StatelessMemory
from chatcore.conversations.store import message_bytes
from chatcore.events import Event, Start
from chatcore.limits import Limiter, NoLimits
from chatcore.memories.recall import Recall
from chatcore.messages import ChatRequest
from chatcore.principal import Principal
from chatcore.routing.access import ModelAccess
from chatcore.routing.router import Router
from chatcore.routing.turn import ChatTurn
from chatcore.service.cache import Cache, NoCache
from chatcore.service.steps import StepLoop, sent_tokens
from chatcore.service.tools import ToolRegistry
from chatcore.settings import Settings
from chatcore.streams import primed
from chatcore.tokens import estimate_messages_tokens
from chatcore.tool_parts import approvals, continued_message


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A started answer: its events (the first one already received), that first event, and its
    response headers."""

    events: AsyncIterator[Event]  # all of them, `first` included
    first: Event
    headers: dict[str, str] = field(default_factory=dict)


def check_request_bounds(request: ChatRequest, settings: Settings) -> None:
    """Enforce `MAX_MESSAGES` (400), `MAX_MESSAGE_CHARS` and, for the caller's own (user) messages,
    `MAX_STORED_MESSAGE_BYTES` per part and per message (413), before anything is stored."""
    if len(request.messages) > settings.max_messages:
        raise errors.RequestError(f"Too many messages: {len(request.messages)} (at most {settings.max_messages}).")
    for index, message in enumerate(request.messages):
        if len(message.text) > settings.max_message_chars:
            raise errors.PayloadTooLargeError(
                f"Message {index} is longer than {settings.max_message_chars} characters.")
        if message.role == "user":
            check_stored_size(index, message.text, message.parts, settings.max_stored_message_bytes)
    if request.system is not None and len(request.system) > settings.max_message_chars:
        raise errors.PayloadTooLargeError(f"The system prompt is longer than {settings.max_message_chars} characters.")


def check_stored_size(index: int, text: str, parts: tuple[dict[str, Any], ...] | None, max_bytes: int) -> None:
    """413 when one part, or the message, is larger than a stored message can be. A file part's
    `data:` URL does not count: its bytes go to the file store (bounded by ATTACHMENTS_MAX_INLINE_BYTES)."""
    stored = [_without_inline_data(part) for part in parts or ()]
    for number, part in enumerate(stored):
        size = message_bytes("", [part]) - 2  # the part alone, without the list's brackets
        if size > max_bytes:
            raise errors.PayloadTooLargeError(
                f"Part {number} of message {index} is {size} bytes; a part can be at most {max_bytes} bytes.")
    size = message_bytes(text, stored if parts is not None else None)
    if size > max_bytes:
        raise errors.PayloadTooLargeError(
            f"Message {index} is {size} bytes; a message can be at most {max_bytes} bytes.")


def _without_inline_data(part: dict[str, Any]) -> dict[str, Any]:
    url = part.get("url")
    if part.get("type") == "file" and isinstance(url, str) and url.startswith("data:"):
        return {k: v for k, v in part.items() if k != "url"}
    return part


def system_prompt(request: ChatRequest, settings: Settings) -> str | None:
    """The operator's system prompt, plus the client's only where the operator allows it."""
    client = request.client_system_prompts()
    if client and not settings.allow_client_system_prompt:
        raise errors.RequestError("A client-supplied system prompt is not allowed.")
    parts = [p for p in (settings.system_prompt, *client) if p]
    return "\n\n".join(parts) or None


def routing_headers(first: Event) -> dict[str, str]:
    """Response headers known when the stream starts: who answers, and who failed before."""
    if not isinstance(first, Start):
        return {}
    headers = {"x-chat-deployment": first.deployment or f"{first.provider}/{first.model}"}
    if first.fallbacks:
        headers["x-chat-fallbacks"] = ",".join(first.fallbacks)
    return headers


class ChatService:
    """Answers chat turns: limits, memory, routing, recording and settlement, for every entry point."""

    def __init__(self, settings: Settings, router: Router, *, memory: Memory | None = None,
                 limiter: Limiter | None = None, cache: Cache | None = None,
                 attachments: Attachments | None = None, recall: Recall | None = None,
                 tools: ToolRegistry | None = None) -> None:
        self.settings = settings
        self.router = router
        self.memory: Memory = memory or StatelessMemory()
        self.limiter: Limiter = limiter or NoLimits()
        self.access = ModelAccess.from_json(settings.model_access_json)  # a bad document fails the cold start
        self.cache: Cache = cache or NoCache()  # the opt-in response cache (service/cache.py)
        self.attachments = attachments or Attachments(settings)  # files: checked, stored in S3, loaded per turn
        self.recall = recall  # long-term memory (chatcore.memories); None: off
        self.tools = tools or ToolRegistry(settings)  # the operator's server tools; a bad document fails the cold start

    async def stream(self, principal: Principal, request: ChatRequest, *, request_id: str | None = None,
                     deadline_s: float | None = None) -> ChatResponse:
        """Start answering `request` for `principal`; raises `ChatError` for anything before the first event."""
        settings = self.settings
        check_request_bounds(request, settings)
        system = system_prompt(request, settings)
        max_output = min(request.max_output_tokens or settings.max_output_tokens, settings.max_output_tokens)
        toolset = await self.tools.toolset(request.tools)  # the server's tools and the client's
        tool_specs = toolset.specs()
        tool_choice = request.tool_choice if tool_specs else None
        draft = ChatTurn(model=request.model, complexity=request.complexity, provider=request.provider,
                         messages=(), max_output_tokens=max_output, tools=tool_specs)
        route = self.router.route(draft)  # an unknown model is refused before anything is stored or charged
        self.access.check(principal.tier, route.requested)
        # File parts: checked and stored (stored chats), the request keeps references (chatcore.attachments).
        ingested = await self.attachments.ingest(
            principal.user_id, request,
            stored=request.conversation_id is not None and not isinstance(self.memory, StatelessMemory))
        request = ingested.request
        estimate = estimate_messages_tokens(request.conversation(), system) + max_output
        # The limit check, the history read and the long-term memory digest are independent: overlap them.
        admitted, loaded, recalled = await asyncio.gather(
            self.limiter.admit(principal, estimate, output_cap=max_output),
            self.memory.begin(principal.user_id, request, system),
            self.recall.recall(principal, request) if self.recall else asyncio.sleep(0),
            return_exceptions=True,
        )
        if isinstance(admitted, BaseException) or isinstance(loaded, BaseException):
            if not isinstance(admitted, BaseException):
                await admitted.release()
            raise admitted if isinstance(admitted, BaseException) else loaded  # type: ignore[misc]
        memories = recalled if isinstance(recalled, str) else None
        # The limits item knows which conversation is first in the user's list: its turn leaves the order key.
        loaded.use_list_order(admitted.list_top, admitted.record_list_top)
        turn = ChatTurn(
            model=request.model, complexity=request.complexity, provider=request.provider,
            messages=loaded.messages, system=system, summary=loaded.summary,
            chars_per_token=loaded.chars_per_token, temperature=request.temperature, max_output_tokens=max_output,
            message_id=loaded.message_id, conversation_id=loaded.conversation_id, user_id=principal.user_id,
            request_id=request_id, deadline_s=deadline_s, provider_options=request.provider_options,
            top_p=request.top_p, seed=request.seed, stop=request.stop, response_format=request.response_format,
            memories=memories,
            tools=tool_specs, tool_choice=tool_choice,
        )
        continued = continued_message(request)
        try:
            # The budget counts what is sent: the stored history (after fitting), summary, memories and
            # system prompt, not only the request (a 2-character message can carry a long conversation).
            reserved = sent_tokens(turn, route) + max_output
            await admitted.reserve_more(reserved - estimate)
            if any(m.attachments for m in turn.messages):
                # The bytes the model reads; deployments that cannot read them are skipped (400 if none can).
                messages = await self.attachments.hydrate(principal.user_id, turn.messages, ingested.inline)
                route = self.router.for_attachments(route, self.attachments.media_types(messages))
                turn = replace(turn, messages=messages)
            # The turn's steps: model calls, and the server tools run between them (service/steps.py).
            steps = StepLoop(self.router, route, turn, toolset, settings,
                             approvals(continued.parts) if continued is not None else None,
                             reserve=admitted.reserve_more, reserved=max(reserved, estimate))
            # A cache hit replays a stored answer instead of routing; limits and memory treat it as any answer.
            cached = await self.cache.lookup(principal, request, route, turn)
            source = self.cache.serve(cached, turn, steps.events)
            # Generated files (images) go to S3; the client and the history get references (chatcore.attachments).
            source = self.attachments.outputs(principal.user_id, source)
            first, events = await primed(admitted.settle(loaded.record(source)))
        except BaseException:
            await admitted.release()
            raise
        headers = {**admitted.headers, **routing_headers(first), **(cached.headers if cached else {})}
        return ChatResponse(events=events, first=first, headers=headers)
