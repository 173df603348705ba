"""The upload API for files of any allowed size (README "Attachments").

`POST /api/files` `{filename, mediaType, size}` checks the type, the size and the caller's daily
quota, records a pending file and answers a presigned POST (`{fileId, url, fields}`) the browser
sends the file to, straight to S3. `POST /api/files/{fileId}/complete` checks what arrived and
answers the file part to put in a message (`{type: "file", mediaType, filename, fileId, size,
sha256, url}`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from chatcore import errors
from chatcore.api.conversations import Caller
from chatcore.attachments.service import Attachments

router = APIRouter(prefix="/api/files", tags=["files"])


def attachments(request: Request) -> Attachments:
    found: Attachments | None = getattr(request.app.state.components, "attachments", None)
    if found is None or found.store is None:
        raise errors.NotFoundError("File uploads are not enabled on this server (ATTACHMENTS_BUCKET is not set).")
    return found


Files = Annotated[Attachments, Depends(attachments)]


class UploadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str | None = Field(default=None, max_length=1000)
    mediaType: str = Field(min_length=1, max_length=200)
    size: int = Field(ge=1, le=1_000_000_000)


@router.post("", status_code=201)
async def create_upload(body: UploadBody, principal: Caller, files: Files) -> dict[str, Any]:
    """A presigned POST for one file: `fields` go first in the multipart form, then `file`."""
    return await files.create_upload(principal.user_id, body.filename, body.mediaType, body.size)


@router.post("/{file_id}/complete")
async def complete_upload(file_id: str, principal: Caller, files: Files) -> dict[str, Any]:
    """Check the uploaded object and mark it ready; answers the file part for a message."""
    return await files.complete(principal.user_id, file_id)
