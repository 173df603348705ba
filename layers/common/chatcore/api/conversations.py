"""The history API: list, read, rename and delete the caller's conversations.

Every route authenticates through the app's `Components.authenticator`; the user id is part of
every key, so another user's conversation answers 404 exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import unicodedata
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatcore import errors
from chatcore.attachments.service import Attachments, file_ids
from chatcore.conversations.store import MAX_TITLE_CHARS, ConversationStore, validate_conversation_id
from chatcore.principal import Principal

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


async def caller(request: Request) -> Principal:
    """The authenticated caller (the app's authenticator raises `UnauthorizedError` otherwise)."""
    principal: Principal = await request.app.state.components.authenticator.authenticate(request)
    return principal


def conversation_store(request: Request) -> ConversationStore:
    store: ConversationStore | None = getattr(request.app.state.components, "conversations", None)
    if store is None:
        raise errors.NotFoundError("Conversation history is not enabled on this server (MEMORY=none).")
    return store


def attachments(request: Request) -> Attachments | None:
    found: Attachments | None = getattr(request.app.state.components, "attachments", None)
    return found


Caller = Annotated[Principal, Depends(caller)]
Store = Annotated[ConversationStore, Depends(conversation_store)]
Files = Annotated[Attachments | None, Depends(attachments)]


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)

    @field_validator("title")
    @classmethod
    def _printable(cls, title: str) -> str:
        title = " ".join(title.split())
        if not title:
            raise ValueError("the title is empty")
        # Control characters and lone surrogates; format characters (emoji joiners, RTL marks) are text.
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in title):
            raise ValueError("the title contains control characters")
        return title


@router.get("")
async def list_conversations(principal: Caller, store: Store,
                             limit: Annotated[int, Query(ge=1, le=100)] = 20,
                             cursor: Annotated[str | None, Query(max_length=2048)] = None) -> dict[str, Any]:
    """The caller's conversations, most recently updated first; pass `nextCursor` back as `cursor`."""
    conversations, next_cursor = await asyncio.to_thread(store.list_conversations, principal.user_id, limit, cursor)
    return {"conversations": [c.summary_json() for c in conversations], "nextCursor": next_cursor}


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, principal: Caller, store: Store, files: Files) -> dict[str, Any]:
    """The conversation and its messages as AI SDK UIMessages (restore with `useChat({messages})`)."""
    validate_conversation_id(conversation_id)

    def read() -> tuple[Any, list[Any]]:
        meta = store.get_meta(principal.user_id, conversation_id)
        if meta is None:
            return None, []
        return meta, list(store.iter_messages(principal.user_id, conversation_id))

    meta, messages = await asyncio.to_thread(read)
    if meta is None:
        raise errors.NotFoundError("Conversation not found.")
    ui_messages = [m.ui_message() for m in messages]
    if files is not None:  # file parts get a fresh download URL
        ui_messages = await asyncio.to_thread(files.present, principal.user_id, ui_messages)
    return {
        **meta.summary_json(),
        "usage": {"inputTokens": meta.input_tokens, "outputTokens": meta.output_tokens},
        "summary": meta.summary,
        "messages": ui_messages,
    }


@router.patch("/{conversation_id}")
async def rename_conversation(conversation_id: str, body: RenameBody, principal: Caller,
                              store: Store) -> dict[str, Any]:
    """Set the conversation's title."""
    validate_conversation_id(conversation_id)
    meta = await asyncio.to_thread(store.rename, principal.user_id, conversation_id, body.title)
    return meta.summary_json()


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, principal: Caller, store: Store, files: Files) -> Response:
    """Delete the conversation, every message of it and the files its messages hold."""
    validate_conversation_id(conversation_id)
    if await asyncio.to_thread(store.get_meta, principal.user_id, conversation_id) is None:
        raise errors.NotFoundError("Conversation not found.")
    held: list[str] = []
    if files is not None and files.store is not None:
        held = await asyncio.to_thread(lambda: [f for m in store.iter_messages(principal.user_id, conversation_id)
                                                for f in file_ids(m.parts)])
    await asyncio.to_thread(store.delete, principal.user_id, conversation_id)
    if files is not None:
        await files.delete_files(principal.user_id, held)
    return Response(status_code=204)
