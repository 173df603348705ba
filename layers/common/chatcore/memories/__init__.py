"""Long-term memory per user: what a user tells the assistant in one conversation, remembered in the next.

- `store.MemoryStore`: memory items, the per-user setting and extraction markers in the one table;
- `embedders`: the embedding adapters (local hashing, Bedrock Titan V2, OpenAI, Gemini, Ollama);
- `vector_index`: the one search builder, DynamoDB's vector index or the local exact engine;
- `extractor.MemoryExtractor`: add / update / delete after a turn, off the response path;
- `recall.Recall`: the digest and time-boxed search on the chat path, as a system prompt block.

`LongTermMemory` wires them and serves the privacy API (`api/memories_routes.py`). Independent of
`conversations` (the summarizer calls the extractor through its `TurnObserver` protocol).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatcore import errors
from chatcore.memories.embedders import Embedder, build_embedder
from chatcore.memories.extractor import MemoryExtractor
from chatcore.memories.recall import Recall
from chatcore.memories.store import MemoryItem, MemoryStore, clean_memory_text, validate_memory_id
from chatcore.memories.vector_index import LocalVectorEngine, MemoryIndex

if TYPE_CHECKING:
    from chatcore.routing.router import Router
    from chatcore.settings import Settings


@dataclass
class LongTermMemory:
    """The memory components of one process, and the user-facing operations on them."""

    store: MemoryStore
    embedder: Embedder
    index: MemoryIndex
    recall: Recall
    extractor: MemoryExtractor

    async def list(self, user_id: str, limit: int, cursor: str | None) -> tuple[list[MemoryItem], str | None, bool]:
        (page, next_cursor), enabled = await asyncio.gather(
            asyncio.to_thread(self.store.list, user_id, limit, cursor),
            asyncio.to_thread(self.store.enabled, user_id))
        return [memory for memory, _ in page], next_cursor, enabled

    async def edit(self, user_id: str, memory_id: str, text: str, kind: str | None = None) -> MemoryItem:
        """Change a memory's text; it is embedded again so search finds it by its new meaning."""
        validate_memory_id(memory_id)
        text = clean_memory_text(text)
        vector = (await self.embedder.embed([text]))[0]
        return await asyncio.to_thread(self.store.update, user_id, memory_id, text, vector, self.embedder.name, kind)

    async def delete(self, user_id: str, memory_id: str) -> None:
        validate_memory_id(memory_id)
        if not await asyncio.to_thread(self.store.delete, user_id, memory_id):
            raise errors.NotFoundError("Memory not found.")

    async def delete_all(self, user_id: str) -> int:
        return await asyncio.to_thread(self.store.delete_all, user_id)

    async def erase_user(self, user_id: str) -> int:
        """Everything memory keeps about the user: memories, the setting and the extraction markers."""
        return await asyncio.to_thread(self.store.delete_all, user_id, everything=True)

    async def set_enabled(self, user_id: str, enabled: bool) -> None:
        await asyncio.to_thread(self.store.set_enabled, user_id, enabled)

    async def enabled(self, user_id: str) -> bool:
        return await asyncio.to_thread(self.store.enabled, user_id)


def build_long_term_memory(settings: Settings, router: Router, *, client: Any | None = None,
                           search_client: Any | None = None, embedder: Embedder | None = None) -> LongTermMemory:
    """The memory components for `settings` (no AWS call happens here).

    `MEMORY_VECTOR_INDEX=dynamodb` searches the table's vector index (`SearchVectors`); `local` runs the
    exact engine over the same items (the emulator has no vector search).
    """
    store = MemoryStore(settings, client)
    embedder = embedder or build_embedder(settings)
    if embedder.dimensions != settings.embedding_dimensions:
        raise ValueError("the embedder's dimensions differ from EMBEDDING_DIMENSIONS")
    production = settings.memory_vector_index == "dynamodb"
    if search_client is None:
        search_client = _LazyClient(store) if production else _LazyLocalEngine(store)
    index = MemoryIndex(store, search_client, embedder.name, embedder.dimensions, confirm=production)
    return LongTermMemory(store=store, embedder=embedder, index=index,
                          recall=Recall(settings, store, index, embedder),
                          extractor=MemoryExtractor(settings, store, index, embedder, router))


class _LazyClient:
    """The store's DynamoDB client, created on the first search (never at import or cold start)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def search_vectors(self, **request: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.store.client.search_vectors(**request)
        return result


class _LazyLocalEngine:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def search_vectors(self, **request: Any) -> dict[str, Any]:
        engine = LocalVectorEngine(self.store.client, self.store.table, self.store.settings.embedding_dimensions)
        return engine.search_vectors(**request)


__all__ = ["LongTermMemory", "MemoryItem", "MemoryStore", "build_long_term_memory"]
