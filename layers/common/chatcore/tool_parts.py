"""Tool calls as the AI SDK's UI message parts, both ways.

A `useChat` assistant message holds its tool calls as parts typed `tool-<name>` (or `dynamic-tool`
with a `toolName`): `toolCallId`, `state` (`input-streaming`, `input-available`,
`approval-requested`, `approval-responded`, `output-available`, `output-error`, `output-denied`),
`input`, `output`, `errorText`, `approval {id, approved?, reason?}` and `callProviderMetadata`
(what a provider needs back with the call, `ToolCall.metadata`). Its `step-start` parts separate
the model calls of one turn.

`to_messages` turns such a message into provider turns (each step's assistant turn with its calls,
then a `tool` turn with the results the parts hold); `PartsBuilder` builds the parts from the
event stream, the way the client assembles them, so a stored answer reads back exactly as `useChat`
restores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatcore.events import (
    Event,
    ReasoningDelta,
    StepStart,
    TextDelta,
    ToolApprovalRequest,
    ToolDenied,
    ToolInputReady,
    ToolInputStart,
    ToolOutput,
    ToolOutputError,
)
from chatcore.messages import Attachment, ChatMessage, ChatRequest, Message, ToolCall, ToolResult

DENIED_TEXT = "The user denied this tool call; it was not run."
# States whose result the client supplies (`addToolOutput`, a denial) or the server recorded.
RESOLVED_STATES = frozenset({"output-available", "output-error", "output-denied"})
# States of a call still waiting for something: the client's output, or the user's approval.
PENDING_STATES = frozenset({"input-available", "approval-requested", "approval-responded"})


def is_tool_part(part: dict[str, Any]) -> bool:
    kind = part.get("type")
    return isinstance(kind, str) and (kind.startswith("tool-") or kind == "dynamic-tool")


def part_tool_name(part: dict[str, Any]) -> str:
    kind = str(part.get("type", ""))
    return str(part.get("toolName") or "") if kind == "dynamic-tool" else kind[len("tool-"):]


def has_tool_parts(parts: Sequence[dict[str, Any]] | None) -> bool:
    return bool(parts) and any(is_tool_part(p) for p in parts or ())


def continued_message(request: ChatRequest) -> ChatMessage | None:
    """The assistant message a request continues (after a client tool's output or an approval
    answer): the last message, when it is an assistant message with tool parts."""
    if request.trigger != "submit-message" or not request.messages:
        return None
    last = request.messages[-1]
    if last.role == "assistant" and last.id and has_tool_parts(last.parts):
        return last
    return None


def result_of(part: dict[str, Any]) -> ToolResult | None:
    """The result a tool part holds, or None while the call waits (for an output or an approval)."""
    call_id, name, state = str(part.get("toolCallId")), part_tool_name(part), part.get("state")
    if state == "output-available":
        return ToolResult(call_id, name, part.get("output"))
    if state == "output-error":
        return ToolResult(call_id, name, str(part.get("errorText") or "The tool failed."), is_error=True)
    if state == "output-denied":
        return ToolResult(call_id, name, DENIED_TEXT, is_error=True)
    return None


def to_messages(role: str, text: str, parts: Sequence[dict[str, Any]] | None,
                attachments: tuple[Attachment, ...] = ()) -> list[Message]:
    """A client message as provider turns: one per role, or an assistant message's steps."""
    if role != "assistant" or not has_tool_parts(parts):
        return [Message(role=role, content=text, attachments=attachments)]  # type: ignore[arg-type]
    messages: list[Message] = []
    step_text: list[str] = []
    calls: list[ToolCall] = []
    results: list[ToolResult] = []

    def flush() -> None:
        if step_text or calls:
            messages.append(Message(role="assistant", content="".join(step_text), tool_calls=tuple(calls)))
        if results:
            messages.append(Message(role="tool", content="", tool_results=tuple(results)))
        step_text.clear()
        calls.clear()
        results.clear()

    for part in parts or ():
        kind = part.get("type")
        if kind == "step-start" and calls:
            flush()
        elif kind == "text":
            step_text.append(str(part.get("text") or ""))
        elif is_tool_part(part) and part.get("toolCallId") and part.get("state") != "input-streaming":
            raw_input = part.get("input")
            metadata = part.get("callProviderMetadata")
            calls.append(ToolCall(str(part["toolCallId"]), part_tool_name(part),
                                  raw_input if raw_input is not None else {},
                                  metadata if isinstance(metadata, dict) else {}))
            result = result_of(part)
            if result is not None:
                results.append(result)
    flush()
    return messages


@dataclass(frozen=True, slots=True)
class Approval:
    approval_id: str | None
    approved: bool | None  # None: not answered yet
    reason: str | None = None


def _approval(part: dict[str, Any]) -> Approval:
    approval = part.get("approval")
    if not isinstance(approval, dict):
        return Approval(None, None)
    approved = approval.get("approved")
    return Approval(str(approval.get("id")) if approval.get("id") else None,
                    approved if isinstance(approved, bool) else None,
                    str(approval["reason"]) if approval.get("reason") else None)


def approvals(parts: Sequence[dict[str, Any]] | None) -> dict[str, Approval]:
    """The user's answers to approval requests in a message, by tool call id."""
    answers: dict[str, Approval] = {}
    for part in parts or ():
        if is_tool_part(part) and part.get("state") in ("approval-responded", "output-denied"):
            answer = _approval(part)
            if part.get("state") == "output-denied" and answer.approved is None:
                answer = Approval(answer.approval_id, False, answer.reason)
            answers[str(part.get("toolCallId"))] = answer
    return answers


def merge_client_parts(stored: Sequence[dict[str, Any]], client: Sequence[dict[str, Any]] | None
                       ) -> list[dict[str, Any]]:
    """The stored parts, with the client's answers to the calls that waited for it.

    Only a call still pending in storage takes the client's part (its output from `addToolOutput`,
    its approval answer); everything the server recorded stays as it was.
    """
    answers = {str(p.get("toolCallId")): p for p in client or () if is_tool_part(p)}
    merged = []
    for part in stored:
        update = answers.get(str(part.get("toolCallId"))) if is_tool_part(part) else None
        if (update is not None and part.get("state") in PENDING_STATES
                and update.get("state") in RESOLVED_STATES | {"approval-responded"}):
            part = {**part, **{k: v for k, v in update.items()
                               if k in ("state", "output", "errorText", "approval")}}
        merged.append(part)
    return merged


class PartsBuilder:
    """An assistant message's UI parts, built from events the way `useChat` builds them."""

    def __init__(self, initial: Sequence[dict[str, Any]] | None = None) -> None:
        self.parts: list[dict[str, Any]] = [dict(p) for p in initial or ()]
        self._open: dict[str, Any] | None = None  # the text or reasoning part deltas append to
        self._tools: dict[str, dict[str, Any]] = {str(p.get("toolCallId")): p for p in self.parts
                                                  if is_tool_part(p)}
        self.has_tools = bool(self._tools)

    def text(self) -> str:
        return "".join(str(p.get("text") or "") for p in self.parts if p.get("type") == "text")

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta | ReasoningDelta):
            kind = "text" if isinstance(event, TextDelta) else "reasoning"
            if self._open is None or self._open["type"] != kind:
                self._open = {"type": kind, "text": "", "state": "done"}
                self.parts.append(self._open)
            self._open["text"] += event.text
            return
        self._open = None
        if isinstance(event, StepStart):
            self.parts.append({"type": "step-start"})
        elif isinstance(event, ToolInputStart):
            part: dict[str, Any] | None = {"type": f"tool-{event.name}", "toolCallId": event.call_id,
                                           "state": "input-streaming"}
            assert part is not None
            self._tools[event.call_id] = part
            self.parts.append(part)
            self.has_tools = True
        elif isinstance(event, ToolInputReady):
            part = self._tools.get(event.call_id)
            if part is None:
                part = {"type": f"tool-{event.name}", "toolCallId": event.call_id}
                self._tools[event.call_id] = part
                self.parts.append(part)
                self.has_tools = True
            if event.error is not None:
                part.update(state="output-error", input=None, rawInput=event.input, errorText=event.error)
            else:
                part.update(state="input-available", input=event.input)
            if event.metadata:
                part["callProviderMetadata"] = event.metadata
        elif isinstance(event, ToolOutput):
            self._update(event.call_id, state="output-available", output=event.output)
        elif isinstance(event, ToolOutputError):
            self._update(event.call_id, state="output-error", errorText=event.message)
        elif isinstance(event, ToolApprovalRequest):
            self._update(event.call_id, state="approval-requested", approval={"id": event.approval_id})
        elif isinstance(event, ToolDenied):
            denied = self._tools.get(event.call_id)
            approval: dict[str, Any] = dict(denied.get("approval") or {}) if denied else {}
            self._update(event.call_id, state="output-denied", approval={**approval, "approved": False})

    def _update(self, call_id: str, **fields: Any) -> None:
        part = self._tools.get(call_id)
        if part is not None:
            part.update(fields)
