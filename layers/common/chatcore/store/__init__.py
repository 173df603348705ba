"""Conversation memory in DynamoDB: the store, the chat memory over it, prompt fitting, summaries.

See docs/data-model.md for the keys, access patterns and settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatcore.providers import ProviderRegistry
    from chatcore.settings import Settings
    from chatcore.store.memory import DynamoMemory


def dynamo_memory(settings: Settings, providers: ProviderRegistry) -> DynamoMemory:
    """The chat endpoint's DynamoDB memory, with summarization wired in (no AWS call happens here)."""
    from chatcore.store.conversations import ConversationStore
    from chatcore.store.memory import DynamoMemory
    from chatcore.store.summarizer import ConversationSummarizer, SummaryTrigger

    store = ConversationStore(settings)
    trigger = SummaryTrigger(settings, ConversationSummarizer(settings, store, providers))
    return DynamoMemory(settings, store, trigger)
