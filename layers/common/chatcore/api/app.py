"""The chat app: `POST /api/chat` (AI SDK UI message stream), `POST /api/chat/sse`, `GET /healthz`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from chatcore import errors
from chatcore.api.body_limit import BodySizeLimit
from chatcore.api.conversations import router as conversations_router
from chatcore.api.errors import install_error_handlers
from chatcore.api.models import router as models_router
from chatcore.api.schemas import ChatRequestBody, check_request_size
from chatcore.auth import Authenticator, build_authenticator
from chatcore.chat import ChatService, ChatTurn
from chatcore.events import Event
from chatcore.limits import Limiter, build_limiter
from chatcore.memory import Memory, StatelessMemory, client_messages
from chatcore.protocols import sse, ui_message_stream
from chatcore.protocols.coalesce import coalesce_ready
from chatcore.providers import ProviderRegistry
from chatcore.routing.router import model_selector, routing_headers
from chatcore.settings import Settings, get_settings
from chatcore.store import dynamo_memory
from chatcore.store.conversations import ConversationStore
from chatcore.streams import close_stream
from chatcore.tokens import estimate_messages_tokens

Encoder = Callable[[AsyncIterator[Event]], AsyncIterator[bytes]]


def lambda_context(request: Request) -> dict[str, object]:
    """The Lambda context the Web Adapter forwards as a JSON header (empty outside Lambda)."""
    raw = request.headers.get("x-amzn-lambda-context")
    if not raw:
        return {}
    try:
        context = json.loads(raw)
    except ValueError:
        return {}
    return context if isinstance(context, dict) else {}


def lambda_deadline_s(request: Request) -> float | None:
    """Seconds left in this Lambda invocation, from the Web Adapter's context header."""
    try:
        deadline_ms = float(lambda_context(request)["deadline"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None
    return max(deadline_ms / 1000.0 - time.time(), 0.0)


def request_id(request: Request) -> str:
    """The Lambda request id when there is one, else a fresh id: it names the request in logs."""
    value = lambda_context(request).get("request_id")
    return value if isinstance(value, str) and value else uuid.uuid4().hex


def system_prompt(body: ChatRequestBody, settings: Settings) -> str | None:
    """The operator's system prompt, plus the client's only where the operator allows it."""
    client = [m.text() for m in body.messages if m.role == "system"]
    if body.system is not None:
        client.append(body.system)
    if client and not settings.allow_client_system_prompt:
        raise errors.RequestError("A client-supplied system prompt is not allowed.")
    parts = [p for p in (settings.system_prompt, *client) if p]
    return "\n\n".join(parts) or None


async def primed(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """Wait for the first event so failures before it become HTTP errors, then stream the rest."""
    return (await primed_with_first(events))[1]


async def primed_with_first(events: AsyncIterator[Event]) -> tuple[Event, AsyncIterator[Event]]:
    """`primed`, also returning the first event (the router's `Start`, for response headers)."""
    iterator = aiter(events)
    first = await anext(iterator)

    async def rest() -> AsyncIterator[Event]:
        try:
            yield first
            async for event in iterator:
                yield event
        finally:
            # Close the chain now (not at garbage collection), so every wrapper's cleanup
            # (storing the answer, settling limits) runs when the stream ends or the client leaves.
            await close_stream(iterator)

    return first, rest()


@dataclass
class Components:
    """What the chat endpoint is wired from; each has a no-storage default for local use and tests."""

    settings: Settings
    providers: ProviderRegistry
    authenticator: Authenticator
    limiter: Limiter
    memory: Memory
    conversations: ConversationStore | None = None  # the history API's store; None when MEMORY=none


def default_components(settings: Settings, providers: ProviderRegistry | None = None) -> Components:
    providers = providers or ProviderRegistry(settings)
    # MEMORY=dynamodb (the default when a table is configured) keeps history server-side.
    stored = dynamo_memory(settings, providers) if settings.memory == "dynamodb" else None
    return Components(
        settings=settings,
        providers=providers,
        authenticator=build_authenticator(settings),  # AUTH_MODE; refuses `none` inside Lambda
        limiter=build_limiter(settings),  # LIMITS_ENABLED
        memory=stored or StatelessMemory(),
        conversations=stored.store if stored else None,
    )


def create_app(settings: Settings | None = None, providers: ProviderRegistry | None = None,
               components: Components | None = None) -> FastAPI:
    settings = settings or (components.settings if components else get_settings())
    parts = components or default_components(settings, providers)
    service = ChatService(settings, parts.providers)

    app = FastAPI(title="Streaming chat backend", version="0.1.0", docs_url="/docs", redoc_url=None)
    app.state.components = parts
    app.state.chat = service
    install_error_handlers(app)
    app.include_router(conversations_router)
    app.include_router(models_router)

    # Added before CORS, so CORS stays outermost and even a 413 carries its headers.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    if settings.cors_in_app:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["content-type", "authorization", "x-api-key"],
            expose_headers=["x-request-id", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining",
                            "x-ratelimit-reset", "x-chat-deployment", "x-chat-fallbacks",
                            "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens"],
            max_age=600,
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Readiness for the Web Adapter: no provider or database calls."""
        return JSONResponse({"status": "ok"})

    async def respond(request: Request, body: ChatRequestBody, encode: Encoder,
                      headers: dict[str, str]) -> StreamingResponse:
        rid = request_id(request)
        principal = await parts.authenticator.authenticate(request)
        check_request_size(body, settings)
        system = system_prompt(body, settings)
        max_output = min(body.maxOutputTokens or settings.max_output_tokens, settings.max_output_tokens)
        estimate = estimate_messages_tokens(client_messages(body), system) + max_output
        # The limit check and the history read are independent: overlap their round trips.
        admitted, loaded = await asyncio.gather(
            parts.limiter.admit(principal, estimate),
            parts.memory.begin(principal, body, settings.allow_client_system_prompt),
            return_exceptions=True,
        )
        if isinstance(admitted, BaseException) or isinstance(loaded, BaseException):
            if not isinstance(admitted, BaseException):
                await admitted.release()
            raise admitted if isinstance(admitted, BaseException) else loaded  # type: ignore[misc]
        turn = ChatTurn(
            model=model_selector(body.model, body.complexity, settings.default_model),
            complexity=body.complexity,
            provider=body.provider,
            messages=loaded.messages,
            system=system,
            summary=loaded.summary,
            chars_per_token=loaded.chars_per_token,
            temperature=body.temperature,
            max_output_tokens=max_output,
            message_id=loaded.message_id,
            conversation_id=loaded.conversation_id,
            user_id=principal.user_id,
            request_id=rid,
            deadline_s=lambda_deadline_s(request),
        )
        try:
            first, events = await primed_with_first(admitted.settle(loaded.record(service.stream(turn))))
        except BaseException:
            await admitted.release()
            raise
        # Tokens that arrive together leave in one write (see protocols/coalesce.py).
        return StreamingResponse(coalesce_ready(encode(events)),
                                 headers={**headers, **admitted.headers, **routing_headers(first),
                                          "x-request-id": rid})

    @app.post("/api/chat")
    async def chat(request: Request, body: ChatRequestBody) -> StreamingResponse:
        """Stream the answer in the AI SDK UI message stream protocol (what `useChat` reads)."""
        return await respond(request, body, ui_message_stream.encode_ui_message_stream, ui_message_stream.HEADERS)

    @app.get("/api/chat/{chat_id}/stream")
    async def resume(chat_id: str) -> Response:
        """`useChat({resume: true})` asks to resume an interrupted stream on mount. Streams are not
        resumable here (a Lambda stream dies with its invocation; the stored history has the answer),
        so the answer is always 204: nothing to resume, and the client stays ready without an error."""
        return Response(status_code=204)

    @app.post("/api/chat/sse")
    async def chat_sse(request: Request, body: ChatRequestBody) -> StreamingResponse:
        """Stream the answer as classic SSE: `{"content"}` per delta, `{"error"}`, then `[DONE]`."""
        return await respond(request, body, sse.encode_sse, sse.HEADERS)

    return app
