"""Generated files with no bucket configured (README "Attachments"): a small one streams as a data URL
and is not kept, a large one is an in-stream note; the history holds no bytes either way."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from chatcore.attachments.service import GENERATED_INLINE_MAX_BYTES
from chatcore.conversations.store import ConversationStore
from chatcore.providers.mock import mock_png

from tests.attachments.test_generated_files import ask, chunks, stored_items


def test_without_a_bucket_a_small_image_is_a_data_url_a_large_one_a_note_and_nothing_is_stored(
        stored_app_server: Callable[..., tuple[str, ConversationStore]], user: str,
        sse_data: Callable[[bytes], list[str]]) -> None:
    url, store = stored_app_server()
    small = chunks(ask(url, user, "g4", "m1"), sse_data)
    [file_chunk] = [c for c in small if c["type"] == "file"]
    assert file_chunk["url"] == "data:image/png;base64," + base64.b64encode(mock_png(0)).decode()

    large = chunks(ask(url, user, "g4", "m2", model=f"mock/image?size={GENERATED_INLINE_MAX_BYTES + 1}"), sse_data)
    assert not [c for c in large if c["type"] == "file"]
    text = "".join(c["delta"] for c in large if c["type"] == "text-delta")
    assert "[generated image (image/png, 262145 bytes) not shown: file storage is not enabled on this server]" in text

    raw = json.dumps(stored_items(store, user, "g4"))
    assert "base64" not in raw and '"type": "file"' not in raw.replace('\\"', '"')
