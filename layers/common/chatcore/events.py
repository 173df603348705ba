"""The one internal stream of typed events.

Providers yield these, the router passes them on (adding `Start` and turning failures into
`ErrorEvent`), and every wire encoder consumes them. Adding a provider or a protocol never
changes this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error", "other"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts normalised across providers. `None` means the provider did not report it."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def as_dict(self) -> dict[str, int | None]:
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": self.total_tokens,
            "cachedInputTokens": self.cached_input_tokens,
            "reasoningTokens": self.reasoning_tokens,
        }


@dataclass(frozen=True, slots=True)
class Start:
    """A deployment was chosen and the answer begins. Emitted once, before any delta."""

    message_id: str
    provider: str
    model: str
    fallbacks: tuple[str, ...] = ()  # "<deployment>:<error code>" per deployment tried before this one
    deployment: str = ""  # the registry deployment that answers (routing)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage as the provider reported it; a later report replaces an earlier one."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """The provider's own model id and response id, once known."""

    model: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """The answer ended normally. `raw_reason` is the provider's own value."""

    reason: FinishReason
    raw_reason: str | None = None
    usage: Usage | None = None
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The answer failed after streaming began. `message` is safe to show a client."""

    message: str
    code: str
    retryable: bool = False
    usage: Usage | None = None
    metadata: dict[str, object] = field(default_factory=dict)


# --- Tool calls, as providers stream them ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolInputStart:
    """The model began a tool call. `call_id` is the provider's (or a synthesized) unique id."""

    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolInputDelta:
    """A fragment of the call's input as JSON text; the fragments of one call concatenate to it."""

    call_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class ToolInputReady:
    """The call's input is complete: `input` is the parsed JSON value.

    When the model sent invalid JSON, `input` is the raw text and `error` says why it could not
    be parsed (the service answers it with a tool-input error the model sees). `metadata` is
    what the provider needs back with this call later (`ToolCall.metadata`).
    """

    call_id: str
    name: str
    input: Any
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# --- Steps and tool outcomes, added by the service ---------------------------------------


@dataclass(frozen=True, slots=True)
class StepStart:
    """One model call of a turn begins (a turn with tool calls may have several)."""


@dataclass(frozen=True, slots=True)
class StepFinish:
    """One model call of a turn ended."""


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A tool call's result (any JSON value)."""

    call_id: str
    output: Any


@dataclass(frozen=True, slots=True)
class ToolOutputError:
    """A tool call failed; `message` is safe to show a client."""

    call_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ToolApprovalRequest:
    """A tool call waits for the user's approval (answered with `approval_id`)."""

    call_id: str
    approval_id: str


@dataclass(frozen=True, slots=True)
class ToolDenied:
    """The user denied a tool call: it was not run."""

    call_id: str


# --- Generated files (images a model returns) ------------------------------------------


@dataclass(frozen=True, slots=True)
class FileOutput:
    """A file the model generated (an image), as the provider returned it: raw bytes.

    The chat service never lets these reach a client or the history: it stores the bytes
    (`chatcore.attachments`) and passes a `FilePart` on instead.
    """

    media_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class FilePart:
    """A generated file as the client sees it: `url` is a presigned GET (or, with no bucket, a small
    data URL). `reference` is the part the history keeps (`{type: "file", mediaType, filename,
    fileId, size, sha256}`), None when the file is not stored."""

    media_type: str
    url: str = field(repr=False)
    reference: dict[str, Any] | None = None


ToolInputEvent = ToolInputStart | ToolInputDelta | ToolInputReady
ProviderEvent = TextDelta | ReasoningDelta | UsageReport | ResponseInfo | Finish | ToolInputEvent | FileOutput
Event = (Start | TextDelta | ReasoningDelta | UsageReport | ResponseInfo | Finish | ErrorEvent | ToolInputEvent
         | StepStart | StepFinish | ToolOutput | ToolOutputError | ToolApprovalRequest | ToolDenied
         | FileOutput | FilePart)
