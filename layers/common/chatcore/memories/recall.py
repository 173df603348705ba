"""Memories on the chat path: a digest read with the history, vector search only when needed.

`Recall.recall` runs inside the chat service's `asyncio.gather` with the limits check and the history
read, so a user whose memories fit in the digest pays no extra round trip. With more memories than
that, the new message is embedded and the vector index searched, time-boxed by
`MEMORY_SEARCH_TIMEOUT_MS` (on timeout or failure the digest alone is used). The result is one
delimited block for the system prompt, capped at `MEMORY_PROMPT_TOKENS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from chatcore.memories.embedders import Embedder
from chatcore.memories.store import MemoryItem, MemoryStore
from chatcore.memories.vector_index import MemoryIndex
from chatcore.messages import ChatRequest
from chatcore.observability import emit_metrics, get_logger
from chatcore.principal import Principal
from chatcore.settings import Settings
from chatcore.tokens import estimate_text_tokens

BLOCK_OPEN = "<user_memories>"
BLOCK_CLOSE = "</user_memories>"
BLOCK_INTRO = ("What you know about the user from earlier conversations (may be outdated; what the user "
               "says now takes precedence):")


def memory_block(memories: Sequence[MemoryItem], max_tokens: int) -> str | None:
    """The delimited block, most relevant first, with as many memories as fit in `max_tokens`."""
    lines: list[str] = []
    used = estimate_text_tokens(f"{BLOCK_OPEN}\n{BLOCK_INTRO}\n{BLOCK_CLOSE}")
    for memory in memories:
        line = "- " + memory.text.replace(BLOCK_CLOSE, "")
        cost = estimate_text_tokens(line) + 1
        if used + cost > max_tokens:
            break
        lines.append(line)
        used += cost
    if not lines:
        return None
    return "\n".join([BLOCK_OPEN, BLOCK_INTRO, *lines, BLOCK_CLOSE])


class Recall:
    """Reads what to tell the model about the user, for one chat turn."""

    def __init__(self, settings: Settings, store: MemoryStore, index: MemoryIndex, embedder: Embedder) -> None:
        self.settings = settings
        self.store = store
        self.index = index
        self.embedder = embedder

    async def recall(self, principal: Principal, request: ChatRequest) -> str | None:
        """The memory block for the system prompt, or None. Never raises: memory must not break a turn."""
        if request.temporary:
            return None
        try:
            return await self._recall(principal.user_id, request)
        except Exception as exc:
            get_logger().warning("memories not read", extra={"error": type(exc).__name__})
            emit_metrics("chat", {}, {"MemoryReadFailures": (1, "Count")})
            return None

    async def _recall(self, user_id: str, request: ChatRequest) -> str | None:
        # Eventually consistent: half the read units; memories change after turns, not within them.
        digest = await asyncio.to_thread(self.store.digest, user_id, self.settings.memory_digest_size,
                                         consistent=False)
        if not digest.enabled or not digest.memories:
            return None
        chosen: list[MemoryItem] = []
        query = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        if digest.has_more and query:
            try:
                async with asyncio.timeout(self.settings.memory_search_timeout_ms / 1000):
                    chosen = await self._search(user_id, query)
            except TimeoutError:
                emit_metrics("chat", {}, {"MemorySearchTimeouts": (1, "Count")})
            except Exception as exc:
                get_logger().warning("memory search failed", extra={"error": type(exc).__name__})
        seen = {m.id for m in chosen}
        chosen += [m for m in digest.memories if m.id not in seen]
        return memory_block(chosen, self.settings.memory_prompt_tokens)

    async def _search(self, user_id: str, query: str) -> list[MemoryItem]:
        vector = (await self.embedder.embed([query[-4_000:]]))[0]
        top_k = min(max(self.settings.memory_search_top_k, 1), 100)
        hits = await asyncio.to_thread(self.index.search, user_id, vector, top_k)
        return [hit.memory for hit in hits]
