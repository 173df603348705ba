"""Attachments: images and documents in S3, references in the history (README "Attachments")."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatcore.attachments.service import Attachments
    from chatcore.settings import Settings


def build_attachments(settings: Settings) -> Attachments:
    """The attachments of this process: with the S3 store when `ATTACHMENTS_BUCKET` is set (no AWS call here)."""
    from chatcore.attachments.service import Attachments
    from chatcore.attachments.store import FileStore

    return Attachments(settings, FileStore(settings) if settings.attachments_bucket else None)
