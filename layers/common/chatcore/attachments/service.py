"""Attachments in a chat turn: files come in (data URLs or the caller's own file ids), are checked and
stored in S3, the history keeps references, and each turn loads the bytes its model needs.

- `ingest` (before the history is read): every `file` part of the request is a `data:` URL or a
  reference to one of the caller's files (`fileId`, or a download URL of this bucket naming the
  caller's key, checked in DynamoDB). Any other URL is a 400, and nothing is ever fetched (no SSRF).
  In a stored conversation a data URL is decoded, checked like an upload and stored; the message
  keeps only `{type, mediaType, filename, fileId, size, sha256}`. In a stateless chat (nothing
  stored), the checked bytes go to the model directly.
- `hydrate` (after): the turn's messages get their bytes (S3 reads in parallel). The newest user
  message's files always; older ones while `ATTACHMENTS_REPLAY_BYTES` lasts, newest first, then a
  text stub (`[image name.png omitted]`). Text files travel as text in the message.
- `present` (the history API): each stored file part gets a fresh presigned GET `url`.
- `outputs` (the answer): a file the model generates (`FileOutput`, e.g. an image) is checked like an
  upload (allow-list, magic bytes) and stored under the caller's prefix; the client gets a `FilePart`
  with a presigned GET and the assistant message keeps only the reference. Generated files are not
  charged to the daily upload quota and are not replayed to the model (later turns see a text stub).
  With no bucket, nothing is stored: a file up to `GENERATED_INLINE_MAX_BYTES` streams as a data URL
  (not kept in the history), a larger one as an in-stream note.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatcore import errors
from chatcore.attachments import media
from chatcore.attachments.store import FileRecord, FileStore, new_file_id
from chatcore.events import Event, FileOutput, FilePart, TextDelta
from chatcore.messages import Attachment, ChatMessage, ChatRequest, Message
from chatcore.observability import get_logger
from chatcore.settings import Settings
from chatcore.streams import closing

INLINE_PREFIX = "inline_"
GENERATED_INLINE_MAX_BYTES = 256 * 1024  # no bucket: a generated file up to this streams as a data URL
GENERATED_MAX_BYTES = 20_000_000  # a generated file larger than this is not kept (an in-stream note)


@dataclass
class Ingested:
    """The request with references instead of bytes, and the bytes of a stateless turn's inline files."""

    request: ChatRequest
    inline: dict[str, bytes] = field(default_factory=dict)


def _file_parts(message: ChatMessage) -> list[dict[str, Any]]:
    return [p for p in message.parts or () if p.get("type") == "file"]


def stub(attachment: Attachment, reason: str = "omitted") -> str:
    return f"[{attachment.kind} {attachment.filename or attachment.file_id or 'file'} {reason}]"


class Attachments:
    """The attachments of chat turns; `store` is None when no bucket is configured (inline files then
    work only in stateless chats)."""

    def __init__(self, settings: Settings, store: FileStore | None = None) -> None:
        self.settings = settings
        self.store = store

    def _require_store(self) -> FileStore:
        if self.store is None:
            raise errors.RequestError("File storage is not enabled on this server (ATTACHMENTS_BUCKET is not set).")
        return self.store

    # --- uploads ---------------------------------------------------------------------------

    async def create_upload(self, user_id: str, filename: str | None, media_type: str, size: int) -> dict[str, Any]:
        """Check the declared file, charge the quota, record it as pending, and sign its upload."""
        store = self._require_store()
        media_type = media.check_media_type(media_type)
        media.check_size(media_type, size)
        record = FileRecord(file_id=new_file_id(), status="pending", media_type=media_type,
                            filename=media.clean_filename(filename, media_type), size=size)
        await asyncio.to_thread(store.charge_quota, user_id, size)
        await asyncio.to_thread(store.put_pending, user_id, record)
        post = await asyncio.to_thread(store.presigned_post, user_id, record.file_id, media_type, size)
        return {"fileId": record.file_id, "url": post["url"], "fields": post["fields"],
                "expiresIn": 300, "maxBytes": size}

    async def complete(self, user_id: str, file_id: str) -> dict[str, Any]:
        """Check the uploaded object (size, magic bytes, image header) and mark the file ready."""
        store = self._require_store()
        record = await asyncio.to_thread(store.get, user_id, file_id)
        if record is None:
            raise errors.NotFoundError("File not found.")
        if record.status == "ready":
            return self._part_with_url(user_id, record.part())
        data = await asyncio.to_thread(store.read_object, user_id, file_id, media.max_bytes(record.media_type))
        if data is None:
            raise errors.RequestError("The file has not been uploaded yet (POST it to the presigned URL first).")
        try:
            if len(data) != record.size:
                raise errors.RequestError(f"The upload has {len(data)} bytes, not the {record.size} declared.")
            inspected = media.inspect(data, record.media_type)
        except errors.ChatError:
            await asyncio.to_thread(store.delete_objects, user_id, [file_id])
            await asyncio.to_thread(store.delete_records, user_id, [file_id])
            raise
        ready = dataclasses.replace(record, status="ready", sha256=hashlib.sha256(data).hexdigest(),
                                    pages=inspected.pages, width=inspected.width, height=inspected.height)
        await asyncio.to_thread(store.put_ready, user_id, ready)
        return self._part_with_url(user_id, ready.part())

    def _part_with_url(self, user_id: str, part: dict[str, Any]) -> dict[str, Any]:
        assert self.store is not None
        return {**part, "url": self.store.download_url(user_id, part)}

    # --- a chat turn's incoming files --------------------------------------------------------

    async def ingest(self, user_id: str, request: ChatRequest, *, stored: bool) -> Ingested:
        """Check every file part; store (stored chats) or keep (stateless) the new ones; references only remain."""
        if not any(_file_parts(m) for m in request.messages):
            return Ingested(request)
        last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=-1)
        inline: dict[str, bytes] = {}
        messages: list[ChatMessage] = []
        for index, message in enumerate(request.messages):
            files = _file_parts(message)
            if not files:
                messages.append(message)
                continue
            # A stored conversation takes only the newest user message from the request: older parts are
            # checked for their form (no foreign URL passes) but not decoded.
            active = message.role == "user" and (index == last_user or not stored)
            # An assistant message's files (generated ones, sent back by the client with their presigned
            # URL) pass the same check as older user files: a data URL or one of the caller's own files.
            if not active:
                for part in files:
                    self._check_form(user_id, part)
                messages.append(message)
                continue
            self._check_counts(files)
            parts = []
            for part in message.parts or ():
                if part.get("type") == "file":
                    part = await self._ingest_part(user_id, part, stored=stored, inline=inline)
                parts.append(part)
            messages.append(dataclasses.replace(message, parts=tuple(parts)))
        return Ingested(dataclasses.replace(request, messages=tuple(messages)), inline)

    def _check_counts(self, files: Sequence[dict[str, Any]]) -> None:
        images = sum(1 for p in files if str(p.get("mediaType", "")).lower().startswith("image/"))
        if images > media.MAX_IMAGES_PER_REQUEST:
            raise errors.RequestError(f"At most {media.MAX_IMAGES_PER_REQUEST} images per message.")
        if len(files) - images > media.MAX_DOCUMENTS_PER_REQUEST:
            raise errors.RequestError(f"At most {media.MAX_DOCUMENTS_PER_REQUEST} documents per message.")

    def _check_form(self, user_id: str, part: dict[str, Any]) -> None:
        url = part.get("url")
        if isinstance(part.get("fileId"), str):
            return
        if not isinstance(url, str) or not url:
            raise errors.RequestError("A file part needs a url (a data URL) or a fileId.")
        if url.startswith("data:"):
            return
        if self.store is None or self.store.file_id_from_url(user_id, url) is None:
            raise errors.RequestError("A file part's url must be a data URL or the URL of one of your files; "
                                      "other URLs are not fetched.")

    async def _ingest_part(self, user_id: str, part: dict[str, Any], *, stored: bool,
                           inline: dict[str, bytes]) -> dict[str, Any]:
        self._check_form(user_id, part)
        url = part.get("url")
        file_id = part.get("fileId")
        if not isinstance(file_id, str) and isinstance(url, str) and not url.startswith("data:"):
            file_id = self._require_store().file_id_from_url(user_id, url)
        if isinstance(file_id, str):
            record = await asyncio.to_thread(self._require_store().get, user_id, file_id)
            if record is None or record.status != "ready":
                raise errors.NotFoundError(f"File {file_id!r} not found.")
            return record.part()
        assert isinstance(url, str)
        url_type, data = media.decode_data_url(url, self.settings.attachments_max_inline_bytes)
        declared = part.get("mediaType")
        media_type = media.check_media_type(declared if isinstance(declared, str) and declared else url_type)
        inspected = media.inspect(data, media_type)
        filename = media.clean_filename(part.get("filename") if isinstance(part.get("filename"), str) else None,
                                        media_type)
        record = FileRecord(file_id=new_file_id(), status="ready", media_type=media_type, filename=filename,
                            size=len(data), sha256=hashlib.sha256(data).hexdigest(), pages=inspected.pages,
                            width=inspected.width, height=inspected.height)
        if stored:
            store = self._require_store()
            await asyncio.to_thread(store.charge_quota, user_id, len(data))
            await asyncio.to_thread(store.put_object, user_id, record.file_id, media_type, data)
            await asyncio.to_thread(store.put_ready, user_id, record)
            return record.part()
        inline_id = f"{INLINE_PREFIX}{len(inline)}"
        inline[inline_id] = data
        return {**record.part(), "fileId": inline_id}

    # --- a chat turn's outgoing files --------------------------------------------------------

    async def hydrate(self, user_id: str, messages: tuple[Message, ...],
                      inline: dict[str, bytes] | None = None) -> tuple[Message, ...]:
        """The messages with their attachments' bytes loaded, older ones beyond the replay budget as stubs."""
        if not any(m.attachments for m in messages):
            return messages
        inline = inline or {}
        newest_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        budget = self.settings.attachments_replay_bytes
        images = documents = 0
        plan: dict[tuple[int, int], bool] = {}  # (message, attachment) -> load it
        for index in range(len(messages) - 1, -1, -1):
            for position, attachment in enumerate(messages[index].attachments):
                is_text = attachment.media_type in media.TEXT_TYPES
                current = index == newest_user
                within = (attachment.size <= budget
                          and (is_text or (images < media.MAX_IMAGES_PER_REQUEST if attachment.is_image
                                           else documents < media.MAX_DOCUMENTS_PER_REQUEST)))
                load = current or within
                plan[(index, position)] = load
                if load:
                    budget -= attachment.size
                    if attachment.is_image:
                        images += 1
                    elif not is_text:
                        documents += 1
        keys = [k for k, load in plan.items() if load]
        loaded = await asyncio.gather(*(self._bytes(user_id, messages[i].attachments[p], inline) for i, p in keys))
        data = dict(zip(keys, loaded, strict=True))
        out: list[Message] = []
        for index, message in enumerate(messages):
            if not message.attachments:
                out.append(message)
                continue
            kept: list[Attachment] = []
            notes: list[str] = []
            for position, attachment in enumerate(message.attachments):
                raw = data.get((index, position))
                if not plan[(index, position)]:
                    notes.append(stub(attachment))
                elif raw is None:
                    notes.append(stub(attachment, "no longer available"))
                elif attachment.media_type in media.TEXT_TYPES:
                    notes.append(f"[file {attachment.filename}]\n{raw.decode('utf-8', errors='replace')}")
                else:
                    kept.append(dataclasses.replace(attachment, data=raw))
            content = "\n\n".join(x for x in (message.content, *notes) if x)
            out.append(dataclasses.replace(message, content=content, attachments=tuple(kept)))
        return tuple(out)

    async def _bytes(self, user_id: str, attachment: Attachment, inline: dict[str, bytes]) -> bytes | None:
        if attachment.data:
            return attachment.data
        if attachment.file_id is None:
            return None
        if attachment.file_id.startswith(INLINE_PREFIX):
            return inline.get(attachment.file_id)
        if self.store is None:
            return None
        return await asyncio.to_thread(self.store.read_object, user_id, attachment.file_id,
                                       media.max_bytes(attachment.media_type))

    @staticmethod
    def media_types(messages: Sequence[Message]) -> set[str]:
        """The media types a model must read in these (hydrated) messages."""
        return {a.media_type for m in messages for a in m.attachments}

    # --- files the model generates ---------------------------------------------------------

    async def outputs(self, user_id: str, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """The events with each `FileOutput` stored and replaced by a `FilePart` (or an in-stream note)."""
        count = 0
        async with closing(events) as stream:
            async for event in stream:
                if isinstance(event, FileOutput):
                    count += 1
                    yield await self.generated(user_id, event, count)
                else:
                    yield event

    async def generated(self, user_id: str, output: FileOutput, number: int = 1) -> FilePart | TextDelta:
        """One generated file: stored in S3 (a presigned GET for the client, a reference for the history);
        with no bucket a small data URL; anything that cannot be kept is a note in the answer's text."""
        media_type = media.normalize_media_type(output.media_type)
        size = len(output.data)
        kind = "image" if media_type.startswith("image/") else "file"

        def note(reason: str) -> TextDelta:
            return TextDelta(f"\n\n[generated {kind} ({media_type}, {size} bytes) {reason}]\n\n")

        if size > GENERATED_MAX_BYTES:
            return note("not shown: too large")
        try:
            media.check_media_type(media_type)
            if media_type in media.IMAGE_TYPES:  # magic bytes and header only; no upload size cap here
                width, height = media.image_size(output.data, media_type)
                inspected = media.Inspected(media_type, width, height)
            else:
                inspected = media.inspect(output.data, media_type)
        except errors.ChatError as exc:
            get_logger().warning("generated file refused", extra={"media_type": media_type, "error": exc.code})
            return note("not shown: not an accepted file")
        if self.store is None:
            if size > GENERATED_INLINE_MAX_BYTES:
                return note("not shown: file storage is not enabled on this server")
            return FilePart(media_type, f"data:{media_type};base64,{base64.b64encode(output.data).decode()}")
        record = FileRecord(file_id=new_file_id(), status="ready", media_type=media_type,
                            filename=f"generated-{number}{media.extension(media_type)}", size=size,
                            sha256=hashlib.sha256(output.data).hexdigest(), pages=inspected.pages,
                            width=inspected.width, height=inspected.height)
        store = self.store
        try:
            await asyncio.to_thread(store.put_object, user_id, record.file_id, media_type, output.data)
            await asyncio.to_thread(store.put_ready, user_id, record)
            url = await asyncio.to_thread(store.download_url, user_id, record.part())
        except Exception as exc:  # storage trouble must not break the answer being streamed
            get_logger().error("generated file not stored", extra={"error": type(exc).__name__})
            return note("could not be stored")
        return FilePart(media_type, url, record.part())

    # --- the history API -------------------------------------------------------------------

    def present(self, user_id: str, ui_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stored file parts with a fresh presigned GET `url` (no bucket: as stored)."""
        if self.store is None:
            return ui_messages
        for message in ui_messages:
            parts = message.get("parts") or []
            for index, part in enumerate(parts):
                if part.get("type") == "file" and isinstance(part.get("fileId"), str) \
                        and not part["fileId"].startswith(INLINE_PREFIX):
                    parts[index] = self._part_with_url(user_id, part)
        return ui_messages

    async def delete_files(self, user_id: str, file_ids: Sequence[str]) -> None:
        """Delete files (objects and records), e.g. those of a deleted conversation."""
        ids = sorted({f for f in file_ids if not f.startswith(INLINE_PREFIX)})
        if not ids or self.store is None:
            return
        await asyncio.to_thread(self.store.delete_objects, user_id, ids)
        await asyncio.to_thread(self.store.delete_records, user_id, ids)


def file_ids(parts: Sequence[dict[str, Any]] | None) -> list[str]:
    """The file ids referenced by a message's parts."""
    return [p["fileId"] for p in parts or () if p.get("type") == "file" and isinstance(p.get("fileId"), str)]

