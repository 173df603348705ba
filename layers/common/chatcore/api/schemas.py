"""Request bodies: exactly what `useChat` (AI SDK 5-7, DefaultChatTransport) sends, plus the simple form."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chatcore.errors import RequestError
from chatcore.messages import MAX_JSON_DEPTH, ChatMessage, ChatRequest, ToolSpec, too_deep

# C0 controls other than tab, newline and carriage return, and lone UTF-16 surrogates (which
# JSON escapes can smuggle in and which cannot be encoded to UTF-8 for a provider).
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
# Ids end up in storage keys: a conservative alphabet keeps them from breaking key structure.
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,200}$"
# A whole request body: the envelope (body, messages, a message, parts...) above the values that
# `MAX_JSON_DEPTH` bounds.
MAX_BODY_DEPTH = MAX_JSON_DEPTH + 8


def check_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`value` unchanged, or `ValueError` naming where it nests deeper than `max_depth` levels."""
    path = too_deep(value, max_depth)
    if path is not None:
        where = f" at {path[:100]}{'...' if len(path) > 100 else ''}" if path else ""
        raise ValueError(f"JSON nesting depth over {max_depth} levels{where}")
    return value


def clean_text(value: str | None) -> str | None:
    """`value` unchanged, or `ValueError` if it holds NUL, other C0 controls or lone surrogates."""
    if value is not None and _FORBIDDEN_CHARS.search(value):
        raise ValueError("text must not contain control characters (other than tab and newlines) "
                         "or invalid Unicode")
    return value


def _depth_bounded(value: Any) -> Any:
    return check_depth(value)


class UIPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=200)
    text: str | None = None

    _clean_text = field_validator("text")(clean_text)

    @model_validator(mode="before")
    @classmethod
    def _bounded_part(cls, part: Any) -> Any:
        """The part with every extra field (`data`, a tool part's `input` and `output`...)."""
        return check_depth(part)


class UIMessage(BaseModel):
    """A UIMessage (`parts`) or a simple `{role, content}` message."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    role: Literal["user", "assistant", "system"]
    parts: list[UIPart] | None = None
    content: str | None = None
    metadata: dict[str, Any] | None = None

    _clean_content = field_validator("content")(clean_text)
    _bounded_metadata = field_validator("metadata", mode="before")(_depth_bounded)

    def text(self) -> str:
        """The message's visible text: its text parts joined, or its `content`."""
        if self.parts is not None:
            return "".join(part.text or "" for part in self.parts if part.type == "text")
        return self.content or ""


class ClientTool(BaseModel):
    """A client tool (`useChat` runs it in the browser): what the model is told about it."""

    model_config = ConfigDict(extra="allow")

    description: str | None = Field(default=None, max_length=10_000)
    inputSchema: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bounded_tool(cls, tool: Any) -> Any:
        """Forwarded to the model (`inputSchema` as a JSON Schema)."""
        return check_depth(tool)


TOOL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"


class ChatRequestBody(BaseModel):
    """`POST /api/chat` and `POST /api/chat/sse`. Extra top-level keys (the transport's `body`) are allowed."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    messages: list[UIMessage] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(default=None, pattern=ID_PATTERN)
    model: str | None = Field(default=None, max_length=300)
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    maxOutputTokens: int | None = Field(default=None, ge=1, le=1_000_000)
    complexity: Literal["simple", "medium", "complex"] | None = None  # picks a tier when `model` is absent
    provider: str | None = Field(default=None, max_length=40, pattern=r"^[a-z][a-z0-9_-]*$")  # preferred provider
    # Per-provider options, keyed by provider name, as the AI SDK sends them (checked by each adapter).
    providerOptions: dict[str, dict[str, Any]] | None = Field(default=None, max_length=10)
    cache: bool | None = None  # the response cache (docs/cache.md); the `x-chat-cache` header wins
    temporary: bool = False  # neither remembered nor reading long-term memory (README "Long-term memory")
    # Client tools: name -> {description, inputSchema (JSON Schema)}; never run on the server.
    tools: dict[str, ClientTool] | None = Field(default=None, max_length=128)
    toolChoice: str | None = Field(default=None, max_length=64)  # auto | none | required | a tool's name

    _clean_system = field_validator("system")(clean_text)
    _bounded_options = field_validator("providerOptions", mode="before")(_depth_bounded)

    @model_validator(mode="before")
    @classmethod
    def _bounded_body(cls, body: Any) -> Any:
        """The whole body (extra keys included), before any field is validated."""
        return check_depth(body, MAX_BODY_DEPTH)

    @field_validator("messages")
    @classmethod
    def _user_messages_have_text(cls, messages: list[UIMessage]) -> list[UIMessage]:
        if messages and messages[-1].role == "user" and not messages[-1].text().strip():
            raise ValueError("the last user message is empty")
        if not any(message.role == "user" for message in messages):
            raise ValueError("there is no user message")
        if any(message.role == "user" and not message.text().strip() for message in messages):
            raise ValueError("a user message is empty or only whitespace")
        return messages

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, tools: dict[str, ClientTool] | None) -> dict[str, ClientTool] | None:
        for name in tools or {}:
            if not re.match(TOOL_NAME_PATTERN, name):
                raise ValueError(f"tool name {name[:80]!r} must be 1-64 letters, digits, '_' or '-'")
        return tools


def _stored_parts(message: UIMessage) -> tuple[dict[str, Any], ...] | None:
    """The message's parts worth storing apart from its text (None when they are only text)."""
    if message.parts is None:
        return None
    parts = [part.model_dump(exclude_none=True) for part in message.parts]
    if all(part.get("type") == "text" and set(part) <= {"type", "text", "state"} for part in parts):
        return None
    return tuple(parts)


CACHE_HEADER = "x-chat-cache"


def cache_preference(header: str | None, body_value: bool | None = None) -> bool | None:
    """The caller's say on the response cache: the `x-chat-cache` header (true/false), else the body's."""
    if header is not None:
        value = header.strip().lower()
        if value in ("true", "1", "yes", "on"):
            return True
        if value in ("false", "0", "no", "off"):
            return False
        raise RequestError(f"{CACHE_HEADER} must be true or false, got {header!r}.")
    return body_value


def to_chat_request(body: ChatRequestBody, cache: bool | None = None) -> ChatRequest:
    """The body in the chat service's terms (`cache`: the caller's choice, see `cache_preference`)."""
    return ChatRequest(
        messages=tuple(ChatMessage(role=m.role, text=m.text(), id=m.id, parts=_stored_parts(m))
                       for m in body.messages),
        conversation_id=body.id, trigger=body.trigger, message_id=body.messageId, model=body.model,
        complexity=body.complexity, provider=body.provider, system=body.system, temperature=body.temperature,
        max_output_tokens=body.maxOutputTokens, provider_options=body.providerOptions or {},
        cache=cache if cache is not None else body.cache, temporary=body.temporary,
        tools=tuple(ToolSpec(name, tool.description or "", tool.inputSchema or {"type": "object", "properties": {}})
                    for name, tool in (body.tools or {}).items()),
        tool_choice=body.toolChoice,
    )
