"""The OpenAI-compatible API: `POST /v1/chat/completions` (`GET /v1/models` is in `api/models.py`).

A second entry point to the same chat service as `/api/chat` (same auth, limits, routing, breaker,
metrics, cost and response cache): it parses OpenAI's request into a `ChatRequest`, calls the
service, and encodes the events as OpenAI's chunks or completion object. Stateless: the caller sends
the whole history, nothing is stored as a conversation. Errors come out in OpenAI's shape
(`api.errors`, by path), so the official SDKs raise their own exception classes.
"""

from __future__ import annotations

import json
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
from chatcore.api.schemas import (
    CACHE_HEADER,
    MAX_BODY_DEPTH,
    TOOL_NAME_PATTERN,
    cache_preference,
    check_depth,
    clean_text,
)
from chatcore.events import ErrorEvent
from chatcore.messages import ChatMessage, ChatRequest, ToolSpec
from chatcore.tokens import estimate_messages_tokens

router = APIRouter(tags=["openai"])

# --- Request schema (what the OpenAI SDKs send; unknown fields are ignored, wrong types are a 400) ---


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(max_length=100)
    text: str | None = None

    _clean_text = field_validator("text")(clean_text)


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str  # JSON text, as the model produced it (parsed in `to_chat_request`)


class AssistantToolCall(BaseModel):
    """One entry of an assistant message's `tool_calls`, as the SDKs send the model's calls back."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatCompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[AssistantToolCall] | None = Field(default=None, max_length=128)
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


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = None  # JSON Schema; OpenAI's default: an object without properties


class FunctionTool(BaseModel):
    """A client tool: `{"type": "function", "function": {name, description, parameters}}`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str = Field(max_length=64)


class NamedToolChoice(BaseModel):
    """`tool_choice` naming one function: `{"type": "function", "function": {"name"}}`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["function"]
    function: NamedFunction


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
    tools: list[FunctionTool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
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


# --- Conversion ------------------------------------------------------------------------------

ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def client_tools(body: ChatCompletionRequest) -> tuple[ToolSpec, ...]:
    """The request's `tools` as the client's tool specs (never run on the server)."""
    specs: list[ToolSpec] = []
    for index, tool in enumerate(body.tools or ()):
        if any(spec.name == tool.function.name for spec in specs):
            raise errors.RequestError(f"The tool name {tool.function.name!r} is used twice.",
                                      param=f"tools.{index}.function.name")
        specs.append(ToolSpec(tool.function.name, tool.function.description or "",
                              tool.function.parameters or {"type": "object", "properties": {}}))
    return tuple(specs)


def tool_choice(body: ChatCompletionRequest, tools: tuple[ToolSpec, ...]) -> str | None:
    """`tool_choice` in the service's terms: "auto", "none", "required" or the name of one client tool."""
    choice = body.tool_choice
    if choice is None or isinstance(choice, str):
        return choice
    if not any(spec.name == choice.function.name for spec in tools):
        raise errors.RequestError(f"tool_choice names {choice.function.name[:80]!r}, which is not in tools.",
                                  param="tool_choice")
    return choice.function.name


def _arguments(call: AssistantToolCall, param: str) -> Any:
    try:
        return json.loads(call.function.arguments or "{}")
    except ValueError:
        raise errors.RequestError(f"The arguments of tool call {call.id[:80]!r} are not valid JSON.",
                                  param=param) from None


def conversation(body: ChatCompletionRequest) -> tuple[ChatMessage, ...]:
    """OpenAI's messages as the service's: an assistant message with `tool_calls` and the `tool`
    messages answering it become one assistant message holding the equivalent UI tool parts
    (`dynamic-tool`, state `output-available`), which `ChatRequest.conversation()` turns into the
    provider's assistant turn with its calls and the tool turn with their results.

    As OpenAI does, every call must be answered by a `tool` message right after it (400 otherwise).
    """
    out: list[ChatMessage] = []
    open_parts: list[dict[str, Any]] | None = None  # the parts of the assistant message being answered
    open_index = -1
    open_text = ""

    def close() -> None:
        nonlocal open_parts
        if open_parts is None:
            return
        missing = [p["toolCallId"] for p in open_parts if p.get("type") == "dynamic-tool"
                   and p["state"] != "output-available"]
        if missing:
            raise errors.RequestError(
                f"An assistant message with tool_calls must be followed by tool messages answering each "
                f"tool_call_id; {str(missing[0])[:80]!r} has none.", param=f"messages.{open_index}.tool_calls")
        out.append(ChatMessage(role="assistant", text=open_text, parts=tuple(open_parts)))
        open_parts = None

    for index, message in enumerate(body.messages):
        if message.role == "function":
            raise errors.RequestError("The legacy 'function' role is not supported; use tools and 'tool' messages.",
                                      param=f"messages.{index}.role")
        if message.role == "tool":
            if not message.tool_call_id:
                raise errors.RequestError("A tool message needs its tool_call_id.",
                                          param=f"messages.{index}.tool_call_id")
            part = next((p for p in open_parts or () if p.get("toolCallId") == message.tool_call_id), None)
            if part is None:
                raise errors.RequestError(
                    f"The tool message answers {message.tool_call_id[:80]!r}, which is not a tool call of the "
                    f"assistant message before it.", param=f"messages.{index}.tool_call_id")
            part.update(state="output-available", output=message.text())
            continue
        close()
        text = message.text()
        if message.role == "assistant" and message.tool_calls:
            open_index, open_text = index, text
            open_parts = [{"type": "text", "text": text}] if text else []
            for number, call in enumerate(message.tool_calls):
                param = f"messages.{index}.tool_calls.{number}.function.arguments"
                open_parts.append({"type": "dynamic-tool", "toolName": call.function.name, "toolCallId": call.id,
                                   "state": "input-available", "input": _arguments(call, param)})
            continue
        out.append(ChatMessage(role=ROLES[message.role], text=text))
    close()
    return tuple(out)


def to_chat_request(body: ChatCompletionRequest, cache: bool | None = None) -> ChatRequest:
    """The OpenAI request in the chat service's terms: stateless (no conversation id), whole history sent."""
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    tools = client_tools(body)
    return ChatRequest(
        messages=conversation(body), conversation_id=None, model=body.model, temperature=body.temperature,
        max_output_tokens=body.max_completion_tokens or body.max_tokens, top_p=body.top_p, seed=body.seed,
        stop=stop, response_format=body.response_format.model_dump(exclude_none=True) if body.response_format else None,
        cache=cache, tools=tools, tool_choice=tool_choice(body, tools),
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
        created=int(time.time()), client_tools=frozenset(t.name for t in chat_request.tools),
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
