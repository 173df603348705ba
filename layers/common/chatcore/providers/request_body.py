"""Pieces every adapter's request body shares: alternating turns and tool values as JSON.

The provider-specific shapes stay in each adapter; what is written once lives here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from chatcore import errors
from chatcore.messages import Attachment, ModelRequest

TOOL_CHOICES = ("auto", "none", "required")


def alternate(turns: Iterable[dict[str, Any]], *, parts: str = "content",
              first: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """Turns with consecutive same-role ones merged into one (Anthropic, Bedrock and Gemini require
    alternating roles): their `parts` lists are concatenated in order.

    `first` picks the parts that must lead their turn after a merge (tool results before text,
    as Anthropic requires); the order is otherwise kept.
    """
    merged: list[dict[str, Any]] = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1][parts].extend(turn[parts])
        else:
            merged.append({**turn, parts: list(turn[parts])})
    if first is not None:
        for turn in merged:
            turn[parts].sort(key=lambda part: not first(part))  # stable: only the leaders move
    return merged


def json_text(value: Any) -> str:
    """A JSON value as compact text (tool arguments, tool outputs); text stays as it is."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def input_object(value: Any) -> dict[str, Any]:
    """A tool call's input as the JSON object providers require.

    Input the model sent as invalid JSON (kept as raw text) or as a non-object cannot be sent
    back as it was; an object-shaped string is parsed, anything else becomes `{}`.
    """
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def tool_choice(request: ModelRequest) -> str | None:
    """`request.tool_choice` checked: "auto", "none", "required", an offered tool's name, or None."""
    choice = request.tool_choice
    if choice is None or not request.tools:
        return None
    if choice in TOOL_CHOICES or any(tool.name == choice for tool in request.tools):
        return choice
    raise errors.RequestError(
        f"toolChoice must be auto, none, required or the name of an offered tool; got {choice!r}.")


def base64_data(attachment: Attachment) -> str:
    """The attachment's bytes in base64 (what every JSON API takes)."""
    if not attachment.data:
        raise errors.ChatError(f"Attachment {attachment.filename or attachment.file_id!r} was not loaded.")
    return base64.b64encode(attachment.data).decode("ascii")


def data_url(attachment: Attachment) -> str:
    """The attachment as a `data:` URL (OpenAI's image_url and file_data)."""
    return f"data:{attachment.media_type};base64,{base64_data(attachment)}"


def attachment_name(attachment: Attachment, default: str = "document") -> str:
    """A file name safe for every provider (Bedrock: letters, digits, single spaces, hyphens,
    parentheses and square brackets), without its extension."""
    stem = (attachment.filename or default).rsplit(".", 1)[0]
    cleaned = " ".join(re.sub(r"[^A-Za-z0-9\-\(\)\[\] ]", " ", stem).split())
    return cleaned[:100] or default
