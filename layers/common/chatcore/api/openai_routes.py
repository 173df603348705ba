"""The OpenAI-compatible API: `POST /v1/chat/completions` (`GET /v1/models` is in `api/models.py`).

A second entry point to the same chat service as `/api/chat` (same auth, limits, routing, breaker,
metrics, cost and response cache): it parses OpenAI's request into a `ChatRequest`, calls the
service, and encodes the events as OpenAI's chunks or completion object. Stateless: the caller sends
the whole history, nothing is stored as a conversation. Errors come out in OpenAI's shape
(`api.errors`, by path), so the official SDKs raise their own exception classes.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chatcore import background, errors
from chatcore.api.chat_routes import DRAIN_TIMEOUT_S, response_body
from chatcore.api.encoders import openai_chunks
from chatcore.api.encoders.coalesce import coalesce_ready
from chatcore.api.errors import stream_failure_status
from chatcore.api.lambda_context import lambda_deadline_s, request_id
from chatcore.api.schemas import CACHE_HEADER, MAX_BODY_DEPTH, cache_preference, check_depth, clean_text
from chatcore.events import ErrorEvent
from chatcore.messages import ChatMessage, ChatRequest
from chatcore.tokens import estimate_messages_tokens

router = APIRouter(tags=["openai"])

# --- Request schema (what the OpenAI SDKs send; unknown fields are ignored, wrong types are a 400) ---


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(max_length=100)
    text: str | None = None

    _clean_text = field_validator("text")(clean_text)


class ChatCompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)

    _clean_content = field_validator("content")(lambda v: clean_text(v) if isinstance(v, str) else v)

    def text(self) -> str:
        """The message's text: the string, or its text parts joined (other parts are refused)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        texts: list[str] = []
        for part in self.content:
            if part.type not in ("text", "refusal"):
                raise errors.RequestError(f"Content parts of type {part.type!r} are not supported; send text.",
                                          param="messages")
            texts.append(part.text or str(getattr(part, "refusal", "") or ""))
        return "".join(texts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`, as OpenAI defines it (the fields this backend acts on)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1, max_length=300)
    messages: list[ChatCompletionMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=1)  # one choice per request
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(default=None, max_length=256)  # the caller's end-user id: accepted, not used
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _bounded_body(cls, body: Any) -> Any:
        """Nesting depth, before any field is validated: the body (unknown keys too) at most
        `MAX_BODY_DEPTH` levels, each tool, tool choice and response format `MAX_JSON_DEPTH`."""
        check_depth(body, MAX_BODY_DEPTH)
        if isinstance(body, dict):
            for key in ("tools", "tool_choice", "response_format"):
                value = body.get(key)
                for item in value if key == "tools" and isinstance(value, list) else [value]:
                    try:
                        check_depth(item)
                    except ValueError as exc:
                        raise ValueError(f"{key}: {exc}") from None
        return body

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop


# --- TOOLS: the one place tool calling is refused (lead: wire it here after merging the tools branch) ---


def refuse_tools(body: ChatCompletionRequest) -> None:
    """`tools`, tool results and assistant `tool_calls` are accepted by the schema, not implemented yet."""
    if body.tools or any(m.role in ("tool", "function") or m.tool_calls for m in body.messages):
        raise errors.RequestError("tools are not supported yet", param="tools")


# --- Conversion ------------------------------------------------------------------------------


def to_chat_request(body: ChatCompletionRequest, cache: bool | None = None) -> ChatRequest:
    """The OpenAI request in the chat service's terms: stateless (no conversation id), whole history sent."""
    refuse_tools(body)
    roles: dict[str, Literal["system", "user", "assistant"]] = {
        "system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
    messages = tuple(ChatMessage(role=roles[m.role], text=m.text()) for m in body.messages)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return ChatRequest(
        messages=messages, conversation_id=None, model=body.model, temperature=body.temperature,
        max_output_tokens=body.max_completion_tokens or body.max_tokens, top_p=body.top_p, seed=body.seed,
        stop=stop, response_format=body.response_format.model_dump(exclude_none=True) if body.response_format else None,
        cache=cache,
    )


# --- Routes ----------------------------------------------------------------------------------


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
    """Answer as OpenAI's Chat Completions API does: streamed chunks, or one completion object."""
    parts = request.app.state.components
    rid = request_id(request)
    principal = await parts.authenticator.authenticate(request)
    chat_request = to_chat_request(body, cache_preference(request.headers.get(CACHE_HEADER)))
    completion = openai_chunks.Completion(
        created=int(time.time()),
        prompt_tokens_estimate=estimate_messages_tokens(chat_request.conversation(),
                                                        "\n".join(chat_request.client_system_prompts()) or None))
    answer = await request.app.state.chat.stream(principal, chat_request, request_id=rid,
                                                 deadline_s=lambda_deadline_s(request))
    headers = {**answer.headers, "x-request-id": rid}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = openai_chunks.encode_chat_completion_chunks(answer.events, completion, include_usage=include_usage)
        stream_body = coalesce_ready(chunks, failure=openai_chunks.FAILURE,
                                     keepalive_s=request.app.state.chat.settings.keepalive_s)
        return StreamingResponse(response_body(stream_body), headers={**openai_chunks.HEADERS, **headers})
    result = await openai_chunks.collect_chat_completion(answer.events, completion)
    await background.drain(DRAIN_TIMEOUT_S)  # as a streamed response does before it completes
    if isinstance(result, ErrorEvent):
        return JSONResponse(openai_chunks.error_payload(result), status_code=stream_failure_status(result),
                            headers=headers)
    return JSONResponse(result, headers=headers)
