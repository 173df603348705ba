"""The long-term memory privacy API: see, edit and delete what is remembered, or turn it off.

`GET /api/memories` (paginated), `PATCH /api/memories/{id}` (edit: embedded again),
`DELETE /api/memories/{id}`, `DELETE /api/memories` (all), `GET|PUT /api/memories/settings`.
The user id comes only from the authenticated caller; a memory of another user answers 404 exactly
like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatcore import errors
from chatcore.api.conversations import caller
from chatcore.api.schemas import clean_text
from chatcore.memories import LongTermMemory
from chatcore.memories.store import MAX_MEMORY_CHARS
from chatcore.principal import Principal

router = APIRouter(prefix="/api/memories", tags=["memories"])


def long_term_memory(request: Request) -> LongTermMemory:
    memories: LongTermMemory | None = getattr(request.app.state.components, "memories", None)
    if memories is None:
        raise errors.NotFoundError("Long-term memory is not enabled on this server (LONG_TERM_MEMORY).")
    return memories


Caller = Annotated[Principal, Depends(caller)]
Memories = Annotated[LongTermMemory, Depends(long_term_memory)]


class EditBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)
    kind: Literal["fact", "preference"] | None = None

    _clean = field_validator("text")(clean_text)


class SettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


@router.get("")
async def list_memories(principal: Caller, memories: Memories,
                        limit: Annotated[int, Query(ge=1, le=100)] = 50,
                        cursor: Annotated[str | None, Query(max_length=2048)] = None) -> dict[str, Any]:
    """The caller's memories, newest first, with their source conversation and dates."""
    page, next_cursor, enabled = await memories.list(principal.user_id, limit, cursor)
    return {"memories": [m.as_json() for m in page], "nextCursor": next_cursor, "enabled": enabled}


@router.get("/settings")
async def get_settings(principal: Caller, memories: Memories) -> dict[str, Any]:
    return {"enabled": await memories.enabled(principal.user_id)}


@router.put("/settings")
async def put_settings(body: SettingsBody, principal: Caller, memories: Memories) -> dict[str, Any]:
    """Turn memory on or off: off, nothing new is remembered and nothing is recalled (memories are kept)."""
    await memories.set_enabled(principal.user_id, body.enabled)
    return {"enabled": body.enabled}


@router.patch("/{memory_id}")
async def edit_memory(memory_id: str, body: EditBody, principal: Caller, memories: Memories) -> dict[str, Any]:
    memory = await memories.edit(principal.user_id, memory_id, body.text, body.kind)
    return memory.as_json()


@router.delete("/{memory_id}", status_code=204)
async def delete_memory(memory_id: str, principal: Caller, memories: Memories) -> Response:
    await memories.delete(principal.user_id, memory_id)
    return Response(status_code=204)


@router.delete("")
async def delete_all_memories(principal: Caller, memories: Memories) -> dict[str, Any]:
    return {"deleted": await memories.delete_all(principal.user_id)}
