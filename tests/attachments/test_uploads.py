"""The upload path: POST /api/files signs an exact upload, the browser POSTs the file to S3 (here the
emulator's), POST /api/files/{id}/complete checks what arrived."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.attachments.conftest import PDF, FileApp, jpeg_header, png


def create(app: FileApp, user: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{app.url}/api/files", json=body, headers={"x-test-user": user}, timeout=30)


def upload(post: dict[str, Any], data: bytes, filename: str = "f") -> httpx.Response:
    """The browser's multipart POST: the signed fields first, then the file."""
    return httpx.post(post["url"], data=post["fields"], files={"file": (filename, data)}, timeout=30)


def complete(app: FileApp, user: str, file_id: str) -> httpx.Response:
    return httpx.post(f"{app.url}/api/files/{file_id}/complete", headers={"x-test-user": user}, timeout=30)


def test_presigned_post_policy_pins_key_type_size_encryption_and_expiry(file_app: Callable[..., FileApp],
                                                                        user: str) -> None:
    app = file_app()
    answer = create(app, user, filename="cat.png", mediaType="image/png", size=1234)
    assert answer.status_code == 201, answer.text
    post = answer.json()
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    conditions = policy["conditions"]
    key = f"u/{user}/{post['fileId']}"
    assert post["fields"]["key"] == key
    assert {"key": key} in conditions  # the exact key, not a prefix
    assert ["content-length-range", 1234, 1234] in conditions
    assert {"Content-Type": "image/png"} in conditions and post["fields"]["Content-Type"] == "image/png"
    assert {"x-amz-server-side-encryption": "AES256"} in conditions
    assert {"bucket": app.files.bucket} in conditions
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in conditions)
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 240 <= (expires - datetime.now(UTC)).total_seconds() <= 300


def test_upload_then_complete_marks_the_file_ready(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    image = png(4, 4)
    post = create(app, user, filename="dir/cat.png", mediaType="image/png", size=len(image)).json()
    assert upload(post, image).status_code in (200, 204)
    done = complete(app, user, post["fileId"])
    assert done.status_code == 200, done.text
    part = done.json()
    assert part["type"] == "file" and part["fileId"] == post["fileId"] and part["filename"] == "cat.png"
    assert part["size"] == len(image) and len(part["sha256"]) == 64
    assert httpx.get(part["url"], timeout=30).content == image  # the presigned GET serves the bytes
    assert app.files.get(user, post["fileId"]).status == "ready"  # type: ignore[union-attr]


def test_another_users_file_is_not_found(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    image = png()
    post = create(app, user, filename="a.png", mediaType="image/png", size=len(image)).json()
    upload(post, image)
    assert complete(app, "someone-else", post["fileId"]).status_code == 404
    assert complete(app, user, "f_" + "0" * 32).status_code == 404


def test_wrong_magic_bytes_are_415_and_the_object_is_deleted(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    fake = b"GIF89a" + b"\x00" * 30  # not a PNG
    post = create(app, user, filename="a.png", mediaType="image/png", size=len(fake)).json()
    upload(post, fake)
    answer = complete(app, user, post["fileId"])
    assert answer.status_code == 415, answer.text
    assert app.files.read_object(user, post["fileId"], 1000) is None
    assert app.files.get(user, post["fileId"]) is None


def test_oversize_and_unlisted_types_are_refused_before_signing(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app()
    assert create(app, user, filename="big.png", mediaType="image/png", size=3_750_001).status_code == 413
    assert create(app, user, filename="big.pdf", mediaType="application/pdf", size=4_500_001).status_code == 413
    assert create(app, user, filename="x.svg", mediaType="image/svg+xml", size=10).status_code == 415
    assert create(app, user, filename="doc.pdf", mediaType="application/pdf", size=len(PDF)).status_code == 201


def test_an_upload_larger_than_declared_is_413_at_completion(file_app: Callable[..., FileApp], user: str) -> None:
    # The emulator does not enforce the policy's content-length-range; the completion check does.
    app = file_app()
    image = jpeg_header(10, 10)
    post = create(app, user, filename="a.jpg", mediaType="image/jpeg", size=len(image)).json()
    upload(post, image + b"\x00" * 4_000_000)
    assert complete(app, user, post["fileId"]).status_code == 413


def test_the_daily_quota_is_429(file_app: Callable[..., FileApp], user: str) -> None:
    app = file_app(attachments_daily_files=2)
    for _ in range(2):
        assert create(app, user, filename="a.png", mediaType="image/png", size=100).status_code == 201
    refused = create(app, user, filename="a.png", mediaType="image/png", size=100)
    assert refused.status_code == 429 and refused.headers.get("retry-after")
    assert create(app, "another-user", filename="a.png", mediaType="image/png", size=100).status_code == 201
