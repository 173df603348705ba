"""Summarize function entry point: extends one conversation's rolling summary.

Invoked asynchronously by the chat function with `{"user_id": "...", "conversation_id": "..."}`, plus
`"turn"` (the answer's message id), `"summarize"` and, when small, `"texts"` (the user messages the
turn answered) after every turn when long-term memory is on: the turn's facts are extracted into
the user's memories (chatcore.memories). The event is validated by `handle_summarize_event`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from chatcore.conversations.store import ConversationStore
from chatcore.conversations.summarizer import ConversationSummarizer, handle_summarize_event
from chatcore.memories import build_long_term_memory
from chatcore.observability import get_logger
from chatcore.providers import ProviderRegistry
from chatcore.routing.router import Router
from chatcore.settings import get_settings


@lru_cache(maxsize=1)
def summarizer() -> ConversationSummarizer:
    """Built on the first invocation and reused while the instance lives (no AWS call at import)."""
    settings = get_settings()
    router = Router(settings, ProviderRegistry(settings))
    observers = [build_long_term_memory(settings, router).extractor] if settings.long_term_memory else []
    return ConversationSummarizer(settings, ConversationStore(settings), router, observers)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point."""
    get_logger("summarize").append_keys(request_id=getattr(context, "aws_request_id", None),
                                        conversation_id=event.get("conversation_id") if isinstance(event, dict) else None)
    return handle_summarize_event(event, summarizer())
