"""Messages and requests in the domain's own terms (no HTTP or provider wire types).

`ChatRequest` is one chat turn as every entry point hands it to the chat service; `Message` and
`ModelRequest` are what a provider adapter is asked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]  # "tool": a message carrying tool results
ToolChoice = str  # "auto" | "none" | "required" | the name of one tool
Trigger = Literal["submit-message", "regenerate-message"]
Complexity = Literal["simple", "medium", "complex"]


# Caller-controlled JSON that is stored or forwarded (a UI part with its `data`, tool `input`/`output`,
# `metadata`, `providerOptions`, a tool's input schema) nests objects and arrays at most this deep, so
# it can always be rendered again: checked when a request is parsed and when a stored part is read.
MAX_JSON_DEPTH = 32


def too_deep(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Where `value` nests objects/arrays deeper than `max_depth` (a dotted path, "" for the value
    itself), or None. Iterative, so any depth is measured without recursion."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            children: Any = node.items()
        elif isinstance(node, list):
            children = enumerate(node)
        else:
            continue
        if depth > max_depth:
            return path
        for key, child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1, f"{path}.{key}" if path else str(key)))
    return None


def new_message_id() -> str:
    """A fresh message id (the one place ids are minted)."""
    return f"msg_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and its input as a JSON Schema object."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: the provider's call id, the tool's name and its input (parsed JSON).

    `metadata` holds what a provider needs back with the call in a later request, keyed by
    provider name (Gemini's `thoughtSignature`); adapters of other providers ignore it.
    """

    id: str
    name: str
    input: Any
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call returned (any JSON value), or its error when `is_error`."""

    call_id: str
    name: str
    output: Any
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent to the model with a message: an image or a PDF (text documents travel as text).

    `data` holds the raw bytes once loaded; a reference read from storage has `file_id` and empty
    `data` until the chat service loads it (`chatcore.attachments`). `pages` is a PDF's estimated
    page count (for prompt fitting), 0 when unknown or not a PDF.
    """

    media_type: str
    data: bytes = b""
    filename: str | None = None
    file_id: str | None = None
    size: int = 0
    pages: int = 0

    @property
    def is_image(self) -> bool:
        return self.media_type.startswith("image/")

    @property
    def kind(self) -> str:
        """"image" or "document" (the word of a stub that stands for an omitted attachment)."""
        return "image" if self.is_image else "document"


@dataclass(frozen=True, slots=True)
class Message:
    """One turn sent to a model.

    An assistant turn may carry the `tool_calls` it made (with or without text); a `tool` turn
    carries `tool_results` (its `content` is usually empty). A user turn may carry `attachments`
    (images and PDFs, in the provider's format chosen by each adapter).
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()
    attachments: tuple[Attachment, ...] = ()


def attachment_refs(parts: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None) -> tuple[Attachment, ...]:
    """The stored file references among a message's UI parts (`{type: "file", fileId, mediaType, ...}`),
    as attachments without bytes; parts without a `fileId` (not stored by the server) are ignored."""
    if not parts:
        return ()
    refs: list[Attachment] = []
    for part in parts:
        if part.get("type") == "file" and isinstance(part.get("fileId"), str) and isinstance(part.get("mediaType"), str):
            refs.append(Attachment(media_type=part["mediaType"], filename=part.get("filename"),
                                   file_id=part["fileId"], size=int(part.get("size") or 0),
                                   pages=int(part.get("pages") or 0)))
    return tuple(refs)


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One call to one model. `model` is the provider's own model id (no `provider/` prefix)."""

    model: str
    messages: tuple[Message, ...]
    system: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    stop: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)  # per-provider options, keyed by provider name
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None  # None: the provider's default ("auto" when tools are offered)
    top_p: float | None = None
    seed: int | None = None
    # OpenAI's shape: {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}; adapters
    # that cannot constrain the output to JSON refuse anything but "text" (400).
    response_format: dict[str, Any] | None = None

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A conversation message as a client sent it: its id, role, visible text and richer parts.

    `parts` holds the message's parts beyond plain text (as plain JSON objects), or None when the
    text is all there is.
    """

    role: Literal["user", "assistant", "system"]
    text: str
    id: str | None = None
    parts: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat turn, whatever the entry point: what to answer, and how."""

    messages: tuple[ChatMessage, ...]
    conversation_id: str | None = None  # stored conversations only; None means stateless
    trigger: Trigger = "submit-message"
    message_id: str | None = None  # the message a regenerate (or an edit) refers to
    model: str | None = None  # a deployment, alias, tier or `provider/model`; None: by complexity or default
    complexity: Complexity | None = None
    provider: str | None = None  # preferred provider: its deployments go first
    system: str | None = None  # the client's system prompt (allowed only where the operator says so)
    temperature: float | None = None
    max_output_tokens: int | None = None
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None  # see `ModelRequest.response_format`
    cache: bool | None = None  # the response cache: True asks for it, False refuses it, None: the deployment's setting
    temporary: bool = False  # a temporary conversation: long-term memory is neither used nor written
    tools: tuple[ToolSpec, ...] = ()  # the client's tools (never run on the server; see service/tools.py)
    tool_choice: ToolChoice | None = None

    def client_system_prompts(self) -> list[str]:
        """System text the client sent: system messages, then the `system` field."""
        texts = [m.text for m in self.messages if m.role == "system"]
        if self.system is not None:
            texts.append(self.system)
        return texts

    def conversation(self) -> tuple[Message, ...]:
        """The user and assistant messages as provider messages (system ones are handled apart).

        An assistant message with tool parts becomes its steps: the assistant turns with their
        tool calls, each followed by a `tool` turn with the results the parts hold.
        """
        from chatcore.tool_parts import to_messages  # core helper that itself builds on this module

        return tuple(message for m in self.messages if m.role != "system"
                     for message in to_messages(m.role, m.text, m.parts, attachment_refs(m.parts)))
