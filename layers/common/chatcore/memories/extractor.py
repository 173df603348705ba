"""Memory extraction, off the response path: after a turn, facts and preferences the user stated
become memories (add), correct older ones (update), retract them (delete), or change nothing.

Run by the summarize function (or in-process locally) after each non-temporary turn
(`conversations.summarizer.TurnObserver`). Only the user's messages are read. The model sees the
user's most similar existing memories under short temporary ids (`"1"`, `"2"`...), never real ones,
and answers JSON.

A turn costs one read when it changes no memory: the digest Query, which also returns the setting
and the turn log (`MemoryStore.digest`); the search, the model's actions and the turn log's write come
only when needed. Idempotence: a turn that changed memories is recorded in the user's turn log, so a
redelivered event (a Lambda retry) is `already_done` without calling the model; a turn that changed
nothing is not recorded, and run again it changes nothing either: an add whose text is already
remembered is skipped (which also keeps a run retried halfway from duplicating what it stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from chatcore import errors
from chatcore.events import ErrorEvent, Event, TextDelta
from chatcore.memories.embedders import Embedder
from chatcore.memories.store import KINDS, MAX_MEMORY_CHARS, Digest, MemoryItem, MemoryStore
from chatcore.memories.vector_index import MemoryIndex
from chatcore.messages import Message
from chatcore.observability import emit_metrics, get_logger
from chatcore.routing.router import Router
from chatcore.routing.turn import ChatTurn
from chatcore.settings import Settings

EXTRACTION_TASK = "extract_memories"
EXTRACTION_TIMEOUT_S = 60.0
EXTRACTION_OUTPUT_TOKENS = 1_024
MAX_INPUT_CHARS = 8_000
MAX_CANDIDATES = 20
EXTRACTION_INSTRUCTIONS = (
    "You maintain a user's long-term memory for an AI assistant. From the user's new messages, extract "
    "durable facts about the user and their preferences (not questions, not the assistant's words, not "
    "one-off requests). Compare each with the existing memories (given with temporary ids) and decide: "
    '"add" a new memory, "update" an existing one whose fact changed (give its id and the new text), '
    '"delete" an existing one the user retracted or asked to forget (give its id), or "none". '
    "Write memories as short third-person-free statements of at most 200 characters, in the user's language. "
    'Answer only JSON: {"actions": [{"op": "add"|"update"|"delete"|"none", "id": "<temporary id>", '
    '"text": "...", "kind": "fact"|"preference"}]}.'
)


@dataclass(frozen=True, slots=True)
class ExtractionResult:
    outcome: str  # extracted | already_done | disabled | nothing
    added: int = 0
    updated: int = 0
    deleted: int = 0


def extraction_prompt(existing: Sequence[MemoryItem], user_messages: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The user turn of the extraction call (JSON) and the temporary ids' real ids."""
    temporary = {str(index + 1): memory.id for index, memory in enumerate(existing)}
    payload = {
        "task": EXTRACTION_TASK,
        "existing": [{"id": str(index + 1), "text": m.text, "kind": m.kind} for index, m in enumerate(existing)],
        "user_messages": list(user_messages),
    }
    return json.dumps(payload, ensure_ascii=False), temporary


def parse_actions(text: str) -> list[dict[str, Any]]:
    """The model's actions; anything malformed is dropped (a bad answer changes nothing)."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    start, end = text.find("{"), text.rfind("}")
    try:
        data = json.loads(text[start:end + 1]) if start >= 0 else None
    except ValueError:
        return []
    actions = data.get("actions") if isinstance(data, dict) else None
    return [a for a in actions if isinstance(a, dict)] if isinstance(actions, list) else []


async def _collect(events: AsyncIterator[Event]) -> str:
    parts: list[str] = []
    async with contextlib.aclosing(events) as stream:  # type: ignore[type-var]
        async for event in stream:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, ErrorEvent):
                raise errors.ServiceUnavailableError(f"The model failed: {event.message}")
    return "".join(parts)


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).rstrip(".") == " ".join(b.lower().split()).rstrip(".")


class MemoryExtractor:
    """Implements `conversations.summarizer.TurnObserver` for long-term memory."""

    def __init__(self, settings: Settings, store: MemoryStore, index: MemoryIndex, embedder: Embedder,
                 router: Router) -> None:
        self.settings = settings
        self.store = store
        self.index = index
        self.embedder = embedder
        self.router = router

    async def observe_turn(self, user_id: str, conversation_id: str, turn_id: str,
                           user_messages: Sequence[str]) -> None:
        result = await self.extract(user_id, conversation_id, turn_id, user_messages)
        emit_metrics("memories", {"Outcome": result.outcome},
                     {"MemoriesAdded": (result.added, "Count"), "MemoriesUpdated": (result.updated, "Count"),
                      "MemoriesDeleted": (result.deleted, "Count")})

    async def extract(self, user_id: str, conversation_id: str, turn_id: str,
                      user_messages: Sequence[str]) -> ExtractionResult:
        texts = [t for t in user_messages if t.strip()]
        if not texts:
            return ExtractionResult("nothing")
        digest = await asyncio.to_thread(self.store.digest, user_id, self.settings.memory_digest_size)
        if not digest.enabled:
            return ExtractionResult("disabled")
        if turn_id in digest.turn_log.turns:
            return ExtractionResult("already_done")
        joined = "\n".join(texts)[-MAX_INPUT_CHARS:]
        candidates = await self._similar(user_id, joined, digest)
        prompt, temporary = extraction_prompt(candidates, [joined])
        answer = await self._generate(prompt, user_id, conversation_id)
        by_id = {m.id: m for m in candidates}
        added = updated = deleted = 0
        for action in parse_actions(answer):
            op, text = action.get("op"), action.get("text")
            kind = str(action["kind"]) if action.get("kind") in KINDS else "fact"
            real = temporary.get(str(action.get("id", "")))
            if op == "add" and isinstance(text, str) and text.strip():
                if any(_same(text, m.text) for m in candidates):
                    continue  # already remembered (or stored by an earlier, interrupted run)
                vector = (await self.embedder.embed([text[:MAX_MEMORY_CHARS]]))[0]
                memory = await asyncio.to_thread(self.store.put, user_id, text, kind, vector, self.embedder.name,
                                                 conversation_id)
                candidates.append(memory)
                added += 1
            elif op == "update" and real and isinstance(text, str) and text.strip():
                vector = (await self.embedder.embed([text[:MAX_MEMORY_CHARS]]))[0]
                with contextlib.suppress(errors.NotFoundError):  # deleted meanwhile: nothing to update
                    await asyncio.to_thread(self.store.update, user_id, real, text, vector, self.embedder.name, kind)
                    updated += 1
            elif op == "delete" and real and real in by_id and await asyncio.to_thread(self.store.delete, user_id,
                                                                                        real):
                deleted += 1
        if added + updated + deleted and not await asyncio.to_thread(self.store.record_turn, user_id, turn_id,
                                                                     digest.turn_log):
            get_logger().warning("memory turn not recorded (concurrent runs)",
                                 extra={"conversation_id": conversation_id})
        get_logger().info("memories extracted", extra={"conversation_id": conversation_id, "added": added,
                                                       "updated": updated, "deleted": deleted})
        return ExtractionResult("extracted", added, updated, deleted)

    async def _similar(self, user_id: str, text: str, digest: Digest) -> list[MemoryItem]:
        """The newest memories, plus the nearest ones when the user has more than the digest holds."""
        found = {m.id: m for m in digest.memories}
        if digest.has_more:
            vector = (await self.embedder.embed([text]))[0]
            top_k = min(max(self.settings.memory_search_top_k, 1), MAX_CANDIDATES)
            for hit in await asyncio.to_thread(self.index.search, user_id, vector, top_k):
                found.setdefault(hit.memory.id, hit.memory)
        return list(found.values())[:MAX_CANDIDATES + self.settings.memory_digest_size]

    async def _generate(self, prompt: str, user_id: str, conversation_id: str) -> str:
        turn = ChatTurn(model=self.settings.summary_model, system=EXTRACTION_INSTRUCTIONS,
                        messages=(Message(role="user", content=prompt),), temperature=0.0,
                        max_output_tokens=EXTRACTION_OUTPUT_TOKENS, user_id=user_id,
                        conversation_id=conversation_id, deadline_s=EXTRACTION_TIMEOUT_S,
                        response_format={"type": "json_object"})
        async with asyncio.timeout(EXTRACTION_TIMEOUT_S):
            return await _collect(self.router.stream(turn))
