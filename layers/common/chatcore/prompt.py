"""Fit a conversation into one deployment's context window.

The prompt is: the system prompt, then the user's long-term memories (a delimited block, already capped
in tokens), then the rolling summary (both appended to the system prompt, so every provider accepts
them), then as many of the most recent messages as fit, so that the estimated input
plus the reserved output stays inside the window. Estimates use the conversation's calibrated
characters-per-token ratio and keep a safety margin, because they are estimates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from chatcore import errors
from chatcore.messages import Attachment, Message
from chatcore.tokens import DEFAULT_CHARS_PER_TOKEN, PER_MESSAGE_OVERHEAD, estimate_text_tokens

SUMMARY_HEADING = "Summary of the earlier part of this conversation:"
SAFETY_MARGIN = 0.05  # of the window, for the error of an estimate made without the real tokenizer


@dataclass(frozen=True, slots=True)
class FittedPrompt:
    """What to send: the system text (with the summary, if any) and the messages, oldest first."""

    system: str | None
    messages: tuple[Message, ...]
    estimated_input_tokens: int
    dropped_messages: int  # older messages left out for lack of room
    summary_included: bool
    memories_included: bool = False


def _tool_text(message: Message) -> str:
    """What a message's tool calls and results add to the prompt (their inputs and outputs as JSON)."""
    if not message.tool_calls and not message.tool_results:
        return ""
    pieces = [c.name + json.dumps(c.input, ensure_ascii=False, default=str) for c in message.tool_calls]
    pieces += [r.output if isinstance(r.output, str) else json.dumps(r.output, ensure_ascii=False, default=str)
               for r in message.tool_results]
    return "".join(pieces)


# Attachments, per provider: tokens for one image (the provider's cost of a large image after its own
# downscaling) and for one PDF page (text plus the page image, where the provider sends both).
IMAGE_TOKENS = {"openai": 1105, "anthropic": 1600, "gemini": 1290, "bedrock": 1600, "ollama": 800}
PDF_PAGE_TOKENS = {"openai": 1500, "anthropic": 2300, "gemini": 560, "bedrock": 2300, "ollama": 1500}
DEFAULT_IMAGE_TOKENS = 1600
DEFAULT_PDF_PAGE_TOKENS = 2300
UNKNOWN_PDF_PAGES = 10  # a PDF whose page count could not be estimated


def attachment_tokens(attachment: Attachment, provider: str | None = None) -> int:
    """The estimated input tokens of one attachment at `provider` (the largest known when None)."""
    if attachment.is_image:
        return IMAGE_TOKENS.get(provider or "", DEFAULT_IMAGE_TOKENS)
    pages = attachment.pages or UNKNOWN_PDF_PAGES
    return pages * PDF_PAGE_TOKENS.get(provider or "", DEFAULT_PDF_PAGE_TOKENS)


def _message_tokens(message: Message, chars_per_token: float, provider: str | None = None) -> int:
    tool_text = _tool_text(message)
    tools = estimate_text_tokens(tool_text, chars_per_token) + PER_MESSAGE_OVERHEAD * len(message.tool_results) \
        if tool_text else 0
    files = sum(attachment_tokens(a, provider) for a in message.attachments)
    return estimate_text_tokens(message.content, chars_per_token) + PER_MESSAGE_OVERHEAD + tools + files


def _groups(messages: Sequence[Message]) -> list[list[Message]]:
    """Messages in units that are kept or dropped together: an assistant turn with tool calls and
    the `tool` turn with their results are never separated."""
    groups: list[list[Message]] = []
    for message in messages:
        if message.role == "tool" and groups and groups[-1][-1].role == "assistant" and groups[-1][-1].tool_calls:
            groups[-1].append(message)
        else:
            groups.append([message])
    return groups


def _group_tokens(group: Sequence[Message], chars_per_token: float, provider: str | None = None) -> int:
    return sum(_message_tokens(m, chars_per_token, provider) for m in group)


def _system_tokens(text: str | None, chars_per_token: float) -> int:
    return estimate_text_tokens(text, chars_per_token) + PER_MESSAGE_OVERHEAD if text else 0


def with_summary(system: str | None, summary: str | None) -> str | None:
    """The system text with the summary appended under a heading."""
    if not summary:
        return system
    block = f"{SUMMARY_HEADING}\n{summary}"
    return f"{system}\n\n{block}" if system else block


def with_memories(system: str | None, memories: str | None) -> str | None:
    """The system text with the long-term memory block appended."""
    if not memories:
        return system
    return f"{system}\n\n{memories}" if system else memories


def prompt_tokens(messages: Sequence[Message], system: str | None, summary: str | None = None,
                  memories: str | None = None, calibration: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    """The estimated input tokens of the whole prompt before fitting, as `fit_prompt` counts them: the
    system text with the memory block and the summary, and every message with its tool calls and
    results and its files (at the largest per-provider figure)."""
    chars_per_token = calibration if calibration > 0 else DEFAULT_CHARS_PER_TOKEN
    preamble = with_summary(with_memories(system, memories), summary)
    return _system_tokens(preamble, chars_per_token) + sum(_message_tokens(m, chars_per_token) for m in messages)


def fit_prompt(messages: Sequence[Message], system: str | None, summary: str | None, context_window: int,
               max_output_tokens: int, calibration: float = DEFAULT_CHARS_PER_TOKEN,
               provider: str | None = None, memories: str | None = None) -> FittedPrompt:
    """Build the prompt for a deployment with `context_window` tokens that must leave room for
    `max_output_tokens`; `calibration` is the conversation's characters per token; `provider` picks
    the token estimate of attachments (`attachment_tokens`).

    Priority when room is short: the system prompt, then the newest message, then the memory block
    (`memories`), then the summary, then older messages newest first. Empty messages are skipped and the result never starts with
    an assistant message (several providers reject that). Raises `ContextTooLongError` (413) only
    when even the system prompt and the newest message alone do not fit: a shorter prompt would not
    serve, and a deployment with a larger window might.
    """
    chars_per_token = calibration if calibration > 0 else DEFAULT_CHARS_PER_TOKEN
    budget = int(context_window * (1 - SAFETY_MARGIN)) - max_output_tokens
    usable = [m for m in messages if m.content or m.tool_calls or m.tool_results or m.attachments]
    if not usable:
        raise errors.RequestError("The conversation has no message to answer.")
    groups = _groups(usable)
    used = _system_tokens(system, chars_per_token) + _group_tokens(groups[-1], chars_per_token, provider)
    if used > budget:
        raise errors.ContextTooLongError(
            f"The message is too long for this model: about {used} tokens of input plus {max_output_tokens} "
            f"of output exceed its {context_window}-token window.")
    final_system = system
    summary_included = memories_included = False
    if memories:
        combined = with_memories(system, memories)
        extra = _system_tokens(combined, chars_per_token) - _system_tokens(system, chars_per_token)
        if used + extra <= budget:
            final_system, used, memories_included = combined, used + extra, True
    if summary:
        combined = with_summary(final_system, summary)
        extra = _system_tokens(combined, chars_per_token) - _system_tokens(final_system, chars_per_token)
        if used + extra <= budget:
            final_system, used, summary_included = combined, used + extra, True
    kept_groups = [groups[-1]]
    for group in reversed(groups[:-1]):
        cost = _group_tokens(group, chars_per_token, provider)
        if used + cost > budget:
            break
        kept_groups.append(group)
        used += cost
    kept_groups.reverse()
    # Never start with an assistant turn or a tool result (several providers reject that).
    while len(kept_groups) > 1 and kept_groups[0][0].role in ("assistant", "tool"):
        used -= _group_tokens(kept_groups.pop(0), chars_per_token, provider)
    kept = [m for group in kept_groups for m in group]
    return FittedPrompt(system=final_system, messages=tuple(kept), estimated_input_tokens=used,
                        dropped_messages=len(usable) - len(kept), summary_included=summary_included,
                        memories_included=memories_included)
