"""The chat endpoints: `POST /api/chat` (AI SDK UI message stream) and `POST /api/chat/sse` (plain SSE).
Each parses, authenticates, calls the chat service and picks an encoder; the turn itself is
`chatcore.service.chat`. Resume and stop are in `resume_routes`; the answer's path to the response
(stoppable, and logged for resume with `RESUMABLE_STREAMS`) is `stream_tee`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from chatcore import background
from chatcore.api.encoders import sse, ui_message_stream
from chatcore.api.encoders.coalesce import coalesce_ready
from chatcore.api.lambda_context import lambda_deadline_s, request_id
from chatcore.api.schemas import CACHE_HEADER, ChatRequestBody, cache_preference, to_chat_request
from chatcore.api.stream_tee import answer_chunks
from chatcore.events import Event
from chatcore.streams import closing

Encoder = Callable[[AsyncIterator[Event]], AsyncIterator[bytes]]

# How long the end of a response waits for work that must not be frozen with the process.
DRAIN_TIMEOUT_S = 10.0

router = APIRouter(tags=["chat"])


async def response_body(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The response body: the encoded chunks, then (before the response completes, after which
    Lambda may freeze the process) the background work they left behind."""
    async with closing(chunks) as source:
        async for chunk in source:
            yield chunk
    await background.drain(DRAIN_TIMEOUT_S)


async def respond(request: Request, body: ChatRequestBody, encode: Encoder, headers: dict[str, str],
                  failure: bytes, *, resumable: bool = False) -> StreamingResponse:
    """Answer one chat request in the protocol `encode` speaks."""
    parts = request.app.state.components
    rid = request_id(request)
    principal = await parts.authenticator.authenticate(request)
    chat_request = to_chat_request(body, cache_preference(request.headers.get(CACHE_HEADER)))
    answer = await request.app.state.chat.stream(principal, chat_request, request_id=rid,
                                                 deadline_s=lambda_deadline_s(request))
    # Stoppable; with RESUMABLE_STREAMS also logged and generated to its end (see stream_tee.py).
    chunks = answer_chunks(answer.first, answer.events, encode, user_id=principal.user_id,
                           conversation_id=chat_request.conversation_id, settings=parts.settings,
                           log=request.app.state.stream_log if resumable else None)
    # Tokens that arrive together leave in one write (see encoders/coalesce.py).
    keepalive_s = request.app.state.chat.settings.keepalive_s
    return StreamingResponse(response_body(coalesce_ready(chunks, failure=failure, keepalive_s=keepalive_s)),
                             headers={**headers, **answer.headers, "x-request-id": rid})


@router.post("/api/chat")
async def chat(request: Request, body: ChatRequestBody) -> StreamingResponse:
    """Stream the answer in the AI SDK UI message stream protocol (what `useChat` reads)."""
    return await respond(request, body, ui_message_stream.encode_ui_message_stream, ui_message_stream.HEADERS,
                         ui_message_stream.FAILURE, resumable=True)


@router.post("/api/chat/sse")
async def chat_sse(request: Request, body: ChatRequestBody) -> StreamingResponse:
    """Stream the answer as classic SSE: `{"content"}` per delta, `{"error"}`, then `[DONE]`."""
    return await respond(request, body, sse.encode_sse, sse.HEADERS, sse.FAILURE)
