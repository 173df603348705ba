"""`GET /api/chat/{id}/stream` (resume) and `POST /api/chat/{id}/stop`.

Both authenticate like every endpoint and see only the caller's own conversations: the user is in
every key, so another user's conversation answers 404 exactly like a missing one.

Resume (`useChat({resume: true})` calls it on mount): with `RESUMABLE_STREAMS` and an answer being
generated, 200 with the UI message stream, replayed from its `start` chunk out of the `StreamLog`
and then followed live (polling every `POLL_S`) until its `finish`/`error` and `[DONE]`; any
number of readers may follow one answer. 204 when nothing is being generated (or resumability is
off); 404 when the caller has no such conversation.

The generator retries the last batch (`finish` and `[DONE]`) a few times; if it still fails, the log
never ends although the answer was stored. So once the log has not grown for `STALL_S` (plus the
flush interval), a follower looks whether the answer's message is stored (`StreamLog.answer_stored`)
and, if so, ends with an `error` chunk asking for a reload, then `[DONE]`. Not a `finish`: the
follower has replayed only the batches that were written, so the client's message lacks the end of
the answer, and a `finish` would present that partial text as complete; after an `error` the AI SDK
keeps the partial text with `status: "error"`, and a reload shows the stored answer whole. Without a
stored answer, it goes on polling (a long tool call also writes nothing for a while) until the
answer's deadline.

Stop: ends the caller's answer in this conversation wherever it runs: in this process at once
(`chatcore.generations`), in another invocation through a stop marker in the log, which the
generator notices within about 1 s: its batch writes (every `STREAM_FLUSH_MS`, 2 s by default)
fail on the marker, and between them it reads the marker's key once a second has passed since it
last called DynamoDB (`StreamLog.stop_requested`). 202 when a stop was asked, 204 when nothing is
being generated, 404 when the caller has no such conversation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from chatcore import errors, generations
from chatcore.api.encoders import ui_message_stream
from chatcore.api.encoders.wire_json import json_bytes
from chatcore.conversations.store import ConversationStore, validate_conversation_id
from chatcore.conversations.stream_log import LoggedAnswer, StreamLog
from chatcore.principal import Principal

POLL_S = 0.2  # how often a follower reads the log while the answer is generated
STOP_GRACE_S = 5.0  # after a stop marker, how long a follower waits for the generator's last batch
# The log has not grown for this long (plus the flush interval): look, at most this often, whether the
# answer was stored meanwhile. Past the last batch's retries (stream_tee.FINAL_ATTEMPTS, about 2 s).
STALL_S = 5.0
RELOAD_TEXT = "The answer is complete, but its end could not be replayed; reload the conversation to see it."

router = APIRouter(tags=["chat"])


async def _caller(request: Request, chat_id: str) -> Principal:
    principal: Principal = await request.app.state.components.authenticator.authenticate(request)
    validate_conversation_id(chat_id)
    return principal


async def _exists(request: Request, log: StreamLog | None, user_id: str, chat_id: str) -> bool:
    """Whether the caller has this conversation (without stored history, nothing can be known: no)."""
    if log is not None:
        return await asyncio.to_thread(log.conversation_exists, user_id, chat_id)
    store: ConversationStore | None = request.app.state.components.conversations
    if store is None:
        return False
    return await asyncio.to_thread(store.get_meta, user_id, chat_id) is not None


def _end(payload: dict[str, object]) -> bytes:
    return b"data: " + json_bytes(payload) + b"\n\n" + ui_message_stream.DONE


async def follow(log: StreamLog, user_id: str, chat_id: str, answer: LoggedAnswer, *,
                 stall_s: float = STALL_S) -> AsyncIterator[bytes]:
    """The logged answer from its first batch, then live until its last (or its deadline); ends early,
    asking for a reload, when the log stalls although the answer was stored (see the module docstring)."""
    seq = 0
    stop_seen: float | None = None
    progress = checked = time.monotonic()
    while True:
        for batch in await asyncio.to_thread(log.read, user_id, chat_id, answer.prefix, seq):
            seq = batch.seq + 1
            progress = time.monotonic()
            if batch.data:
                yield batch.data
            if batch.end:
                return
            if batch.stop and stop_seen is None:
                stop_seen = time.monotonic()
        now = time.monotonic()
        if stop_seen is not None and now - stop_seen > STOP_GRACE_S:
            # Stopped, and its generator wrote nothing more: end as a stopped answer would.
            yield _end({"type": "finish", "finishReason": "stop", "messageMetadata": {"stopped": True}})
            return
        if now - progress > stall_s and now - checked > stall_s:
            checked = now
            if await asyncio.to_thread(log.answer_stored, user_id, chat_id, answer):
                yield _end({"type": "error", "errorText": RELOAD_TEXT})
                return
        if time.time() > answer.deadline:  # its invocation ended without finishing it
            yield _end({"type": "error", "errorText": "The answer was interrupted; reload the conversation."})
            return
        await asyncio.sleep(POLL_S)


@router.get("/api/chat/{chat_id}/stream")
async def resume(request: Request, chat_id: str) -> Response:
    """Resume the answer being generated in conversation `chat_id` (see the module docstring)."""
    principal = await _caller(request, chat_id)
    log: StreamLog | None = request.app.state.stream_log
    if log is None:
        return Response(status_code=204)  # streams are not resumable: the stored history has the answer
    answer = await asyncio.to_thread(log.latest, principal.user_id, chat_id)
    if answer is not None and answer.streaming:
        stall_s = STALL_S + request.app.state.components.settings.stream_flush_ms / 1000
        return StreamingResponse(follow(log, principal.user_id, chat_id, answer, stall_s=stall_s),
                                 headers=ui_message_stream.HEADERS)
    if answer is None and not await _exists(request, log, principal.user_id, chat_id):
        raise errors.NotFoundError("Conversation not found.")
    return Response(status_code=204)


@router.post("/api/chat/{chat_id}/stop")
async def stop(request: Request, chat_id: str) -> Response:
    """Stop the answer being generated in conversation `chat_id` (see the module docstring)."""
    principal = await _caller(request, chat_id)
    local = generations.find(principal.user_id, chat_id)
    if local is not None:
        local.stop()
        return JSONResponse({"status": "stopping", "messageId": local.message_id}, status_code=202)
    log: StreamLog | None = request.app.state.stream_log
    if log is not None:
        answer = await asyncio.to_thread(log.request_stop, principal.user_id, chat_id)
        if answer is not None:
            return JSONResponse({"status": "stopping", "messageId": answer.message_id}, status_code=202)
    if not await _exists(request, log, principal.user_id, chat_id):
        raise errors.NotFoundError("Conversation not found.")
    return Response(status_code=204)
