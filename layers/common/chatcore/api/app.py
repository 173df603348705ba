"""The chat app: `POST /api/chat` (AI SDK UI message stream), `POST /api/chat/sse`, `GET /healthz`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from chatcore import errors
from chatcore.api.errors import install_error_handlers
from chatcore.api.schemas import ChatRequestBody
from chatcore.chat import ChatService, ChatTurn
from chatcore.events import ErrorEvent, Event, Finish, Start, TextDelta
from chatcore.messages import Message
from chatcore.protocols import sse, ui_message_stream
from chatcore.providers import ProviderRegistry
from chatcore.settings import Settings, get_settings

Encoder = Callable[[AsyncIterator[Event]], AsyncIterator[bytes]]


def lambda_deadline_s(request: Request) -> float | None:
    """Seconds left in this Lambda invocation, from the Web Adapter's context header."""
    raw = request.headers.get("x-amzn-lambda-context")
    if not raw:
        return None
    try:
        deadline_ms = float(json.loads(raw)["deadline"])
    except (ValueError, KeyError, TypeError):
        return None
    return max(deadline_ms / 1000.0 - time.time(), 0.0)


def turn_from_body(body: ChatRequestBody, settings: Settings, deadline_s: float | None) -> ChatTurn:
    system = settings.system_prompt
    messages: list[Message] = []
    for message in body.messages:
        text = message.text()
        if message.role == "system":
            if not settings.allow_client_system_prompt:
                raise errors.RequestError("System messages from the client are not allowed.")
            system = f"{system}\n\n{text}" if system else text
            continue
        messages.append(Message(role=message.role, content=text))
    if body.system is not None:
        if not settings.allow_client_system_prompt:
            raise errors.RequestError("A client-supplied system prompt is not allowed.")
        system = body.system
    if not messages:
        raise errors.RequestError("The request has no user message.")
    return ChatTurn(
        model=body.model or settings.default_model,
        messages=tuple(messages),
        system=system,
        temperature=body.temperature,
        max_output_tokens=min(body.maxOutputTokens or settings.max_output_tokens, settings.max_output_tokens),
        deadline_s=deadline_s,
    )


async def primed(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """Wait for the first event so failures before it become HTTP errors, then stream the rest."""
    iterator = aiter(events)
    first = await anext(iterator)

    async def rest() -> AsyncIterator[Event]:
        yield first
        async for event in iterator:
            yield event

    return rest()


def create_app(settings: Settings | None = None, providers: ProviderRegistry | None = None) -> FastAPI:
    settings = settings or get_settings()
    providers = providers or ProviderRegistry(settings)
    service = ChatService(settings, providers)

    app = FastAPI(title="Streaming chat backend", version="0.1.0", docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.providers = providers
    app.state.chat = service
    install_error_handlers(app)

    if settings.cors_in_app:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["content-type", "authorization", "x-api-key"],
            expose_headers=["x-request-id", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining",
                            "x-ratelimit-reset"],
            max_age=600,
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Readiness for the Web Adapter: no provider or database calls."""
        return JSONResponse({"status": "ok"})

    async def respond(request: Request, body: ChatRequestBody, encode: Encoder,
                      headers: dict[str, str]) -> StreamingResponse:
        turn = turn_from_body(body, settings, lambda_deadline_s(request))
        events = await primed(service.stream(turn))
        return StreamingResponse(encode(events), headers=headers)

    @app.post("/api/chat")
    async def chat(request: Request, body: ChatRequestBody) -> StreamingResponse:
        """Stream the answer in the AI SDK UI message stream protocol (what `useChat` reads)."""
        return await respond(request, body, ui_message_stream.encode_ui_message_stream, ui_message_stream.HEADERS)

    @app.post("/api/chat/sse")
    async def chat_sse(request: Request, body: ChatRequestBody) -> StreamingResponse:
        """Stream the answer as classic SSE: `{"content"}` per delta, `{"error"}`, then `[DONE]`."""
        return await respond(request, body, sse.encode_sse, sse.HEADERS)

    return app


__all__ = ["ErrorEvent", "Finish", "Start", "TextDelta", "create_app"]
