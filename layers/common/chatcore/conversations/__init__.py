"""Conversation memory in DynamoDB: the store, the chat memory over it, and rolling summaries.

See docs/data-model.md for the keys, access patterns and settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from chatcore.conversations.memory import DynamoMemory
    from chatcore.conversations.summarizer import TurnObserver
    from chatcore.routing.router import Router
    from chatcore.settings import Settings


def dynamo_memory(settings: Settings, router: Router, observers: Sequence[TurnObserver] = ()) -> DynamoMemory:
    """The chat service's DynamoDB memory, with summarization (and the turn `observers`) wired in
    (no AWS call happens here)."""
    from chatcore.conversations.memory import DynamoMemory
    from chatcore.conversations.store import ConversationStore
    from chatcore.conversations.summarizer import ConversationSummarizer, SummaryTrigger

    store = ConversationStore(settings)
    trigger = SummaryTrigger(settings, ConversationSummarizer(settings, store, router, observers))
    return DynamoMemory(settings, store, trigger)
