"""Token estimates before a call, when the provider's own count is not known yet.

Roughly four characters a token for English text, rounded up, plus a few tokens of framing per
message. Calibrated per conversation by the usage providers report (see `store`).
"""

from __future__ import annotations

from collections.abc import Iterable

from chatcore.messages import Message

PER_MESSAGE_OVERHEAD = 4
ATTACHMENT_TOKENS = 1600  # a rough figure per image or document (chatcore.prompt has per-provider ones)
DEFAULT_CHARS_PER_TOKEN = 4.0  # until a conversation is calibrated by reported usage


def estimate_text_tokens(text: str, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    if not text:
        return 0
    return int(len(text) / chars_per_token) + 1


def estimate_messages_tokens(messages: Iterable[Message], system: str | None = None,
                             chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    total = estimate_text_tokens(system or "", chars_per_token) + (PER_MESSAGE_OVERHEAD if system else 0)
    for message in messages:
        total += estimate_text_tokens(message.content, chars_per_token) + PER_MESSAGE_OVERHEAD
        total += ATTACHMENT_TOKENS * len(message.attachments)
    return total
