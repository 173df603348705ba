"""`FileStore`: attachment bytes in S3 (`u/<user>/<fileId>`) and their records in the DynamoDB table.

Items (docs/data-model.md):

- `pk = USER#<user>#FILE#<fileId>`, `sk = FILE`: one file: status (`pending` until its upload is
  checked, then `ready`), media type, name, size, sha256, PDF pages, image size; TTL `expires_at`
  (a day while pending, then the bucket's lifecycle). The user is part of the key: another user's
  file id is simply not found.
- `pk = USER#<user>#FILES`, `sk = DAY#<yyyy-mm-dd>`: the caller's files and bytes of the UTC day,
  counted by one conditional update (the daily quota).

All calls are blocking boto3 calls: async callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from chatcore import errors
from chatcore.dynamodb import client_for, is_condition_failure
from chatcore.settings import Settings

FILE_SK = "FILE"
FILE_ID = re.compile(r"^f_[0-9a-f]{32}$")
KEY_PREFIX = "u/"
UPLOAD_EXPIRY_S = 300  # a presigned POST is valid 5 minutes
PENDING_TTL_S = 86_400
_SAFE_USER = re.compile(r"^[A-Za-z0-9._:@|+=-]{1,200}$")
ENCRYPTION = "AES256"


def new_file_id() -> str:
    return f"f_{uuid.uuid4().hex}"


def file_pk(user_id: str, file_id: str) -> str:
    return f"USER#{user_id}#FILE#{file_id}"


def quota_pk(user_id: str) -> str:
    return f"USER#{user_id}#FILES"


def user_segment(user_id: str) -> str:
    """The user's part of an object key: the id itself when key-safe, else a digest of it."""
    if _SAFE_USER.match(user_id):
        return user_id
    return "h-" + hashlib.sha256(user_id.encode()).hexdigest()[:40]


def object_key(user_id: str, file_id: str) -> str:
    return f"{KEY_PREFIX}{user_segment(user_id)}/{file_id}"


@dataclass(frozen=True, slots=True)
class FileRecord:
    file_id: str
    status: str
    media_type: str
    filename: str
    size: int
    sha256: str = ""
    pages: int = 0
    width: int = 0
    height: int = 0

    def part(self) -> dict[str, Any]:
        """The file part stored in a message: a reference, never the bytes."""
        part: dict[str, Any] = {"type": "file", "mediaType": self.media_type, "filename": self.filename,
                                "fileId": self.file_id, "size": self.size, "sha256": self.sha256}
        if self.pages:
            part["pages"] = self.pages
        return part


def _record(item: dict[str, Any]) -> FileRecord:
    def n(name: str) -> int:
        return int(item.get(name, {}).get("N", "0"))

    def s(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    return FileRecord(file_id=s("file_id"), status=s("status"), media_type=s("media_type"), filename=s("filename"),
                      size=n("size"), sha256=s("sha256"), pages=n("pages"), width=n("width"), height=n("height"))


class FileStore:
    """The attachments bucket and the file items of the table."""

    def __init__(self, settings: Settings, *, s3: Any | None = None, dynamodb: Any | None = None) -> None:
        if not settings.attachments_bucket:
            raise ValueError("FileStore needs ATTACHMENTS_BUCKET")
        self.settings = settings
        self.bucket: str = settings.attachments_bucket
        self.table = settings.table_name
        self._s3 = s3
        self._dynamodb = dynamodb
        self._lock = threading.Lock()
        self._url_base: str | None = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            with self._lock:
                if self._s3 is None:
                    import boto3
                    from botocore.config import Config

                    config = Config(signature_version="s3v4", connect_timeout=3, read_timeout=20,
                                    retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=32,
                                    s3={"addressing_style": "path" if self.settings.s3_endpoint_url else "virtual"})
                    self._s3 = boto3.session.Session().client(
                        "s3", region_name=self.settings.aws_region, endpoint_url=self.settings.s3_endpoint_url,
                        config=config)
        return self._s3

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = client_for(self.settings)
        return self._dynamodb

    # --- records ---------------------------------------------------------------------------

    def _expires(self, seconds: int) -> str:
        return str(int(time.time()) + seconds)

    def _ready_ttl(self) -> int:
        return max(self.settings.attachments_ttl_days, 1) * 86_400

    def put_pending(self, user_id: str, record: FileRecord) -> None:
        self.dynamodb.put_item(TableName=self.table, Item={
            "pk": {"S": file_pk(user_id, record.file_id)}, "sk": {"S": FILE_SK}, "type": {"S": "file"},
            "file_id": {"S": record.file_id}, "status": {"S": "pending"}, "media_type": {"S": record.media_type},
            "filename": {"S": record.filename}, "size": {"N": str(record.size)},
            "created_at": {"S": datetime.now(UTC).isoformat()}, "expires_at": {"N": self._expires(PENDING_TTL_S)},
        }, ConditionExpression="attribute_not_exists(pk)")

    def put_ready(self, user_id: str, record: FileRecord) -> None:
        self.dynamodb.update_item(
            TableName=self.table, Key={"pk": {"S": file_pk(user_id, record.file_id)}, "sk": {"S": FILE_SK}},
            UpdateExpression="SET #t = :t, file_id = :id, #s = :ready, media_type = :mt, filename = :fn, #z = :z, "
                             "sha256 = :sha, pages = :p, width = :w, height = :h, expires_at = :exp, "
                             "created_at = if_not_exists(created_at, :now)",
            ExpressionAttributeNames={"#t": "type", "#s": "status", "#z": "size"},
            ExpressionAttributeValues={
                ":t": {"S": "file"}, ":id": {"S": record.file_id}, ":ready": {"S": "ready"},
                ":mt": {"S": record.media_type}, ":fn": {"S": record.filename}, ":z": {"N": str(record.size)},
                ":sha": {"S": record.sha256}, ":p": {"N": str(record.pages)}, ":w": {"N": str(record.width)},
                ":h": {"N": str(record.height)}, ":exp": {"N": self._expires(self._ready_ttl())},
                ":now": {"S": datetime.now(UTC).isoformat()}})

    def get(self, user_id: str, file_id: str) -> FileRecord | None:
        """The caller's file, or None (another user's id is not found: the user is in the key)."""
        if not FILE_ID.match(file_id):
            return None
        response = self.dynamodb.get_item(TableName=self.table, ConsistentRead=True,
                                          Key={"pk": {"S": file_pk(user_id, file_id)}, "sk": {"S": FILE_SK}})
        item = response.get("Item")
        return _record(item) if item else None

    def delete_records(self, user_id: str, file_ids: list[str]) -> None:
        for start in range(0, len(file_ids), 25):
            requests = [{"DeleteRequest": {"Key": {"pk": {"S": file_pk(user_id, f)}, "sk": {"S": FILE_SK}}}}
                        for f in file_ids[start:start + 25]]
            pending: dict[str, Any] = {self.table: requests}
            for _ in range(5):
                unprocessed = self.dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                if not unprocessed:
                    break
                pending = unprocessed
                time.sleep(0.05)

    def charge_quota(self, user_id: str, size: int) -> None:
        """Count one file of `size` bytes against the caller's day; 429 when over the quota."""
        files, total = self.settings.attachments_daily_files, self.settings.attachments_daily_bytes
        if files <= 0:
            return
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        try:
            self.dynamodb.update_item(
                TableName=self.table, Key={"pk": {"S": quota_pk(user_id)}, "sk": {"S": f"DAY#{day}"}},
                UpdateExpression="ADD n :one, b :size SET expires_at = :exp",
                ConditionExpression="attribute_not_exists(n) OR (n < :files AND b <= :room)",
                ExpressionAttributeValues={":one": {"N": "1"}, ":size": {"N": str(size)},
                                           ":files": {"N": str(files)}, ":room": {"N": str(total - size)},
                                           ":exp": {"N": self._expires(2 * 86_400)}})
        except Exception as exc:
            if is_condition_failure(exc):
                tomorrow = 86_400 - int(time.time()) % 86_400
                raise errors.LimitExceededError(
                    f"Daily file quota reached ({files} files or {total} bytes a day).",
                    retry_after=tomorrow) from None
            raise
        if size > total:
            raise errors.LimitExceededError(f"Daily file quota reached ({total} bytes a day).")

    # --- objects ---------------------------------------------------------------------------

    def presigned_post(self, user_id: str, file_id: str, media_type: str, size: int) -> dict[str, Any]:
        """A browser upload of exactly this object: its key, type, size and encryption, for 5 minutes."""
        key = object_key(user_id, file_id)
        fields = {"Content-Type": media_type, "x-amz-server-side-encryption": ENCRYPTION}
        conditions: list[Any] = [{"bucket": self.bucket}, {"Content-Type": media_type},
                                 {"x-amz-server-side-encryption": ENCRYPTION}, ["content-length-range", size, size]]
        post: dict[str, Any] = self.s3.generate_presigned_post(self.bucket, key, Fields=fields, Conditions=conditions,
                                                               ExpiresIn=UPLOAD_EXPIRY_S)
        return post

    def put_object(self, user_id: str, file_id: str, media_type: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=object_key(user_id, file_id), Body=data, ContentType=media_type,
                           ServerSideEncryption=ENCRYPTION)

    def read_object(self, user_id: str, file_id: str, max_bytes: int) -> bytes | None:
        """The object's bytes (None when it does not exist); 413 when it holds more than `max_bytes`."""
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=object_key(user_id, file_id))
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        body = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) > max_bytes:
                raise errors.PayloadTooLargeError(f"The uploaded file is larger than {max_bytes} bytes.")
            data: bytes = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise errors.PayloadTooLargeError(f"The uploaded file is larger than {max_bytes} bytes.")
        return data

    def delete_objects(self, user_id: str, file_ids: list[str]) -> None:
        for start in range(0, len(file_ids), 1000):
            objects = [{"Key": object_key(user_id, f)} for f in file_ids[start:start + 1000]]
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})

    def download_url(self, user_id: str, record_or_part: dict[str, Any]) -> str:
        """A presigned GET (ATTACHMENTS_URL_TTL_S); anything but an image downloads as an attachment."""
        media_type = str(record_or_part.get("mediaType") or "application/octet-stream")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": object_key(user_id, str(record_or_part["fileId"])),
                                  "ResponseContentType": media_type}
        if not media_type.startswith("image/"):
            name = re.sub(r'["\\\r\n]', "_", str(record_or_part.get("filename") or "file"))
            params["ResponseContentDisposition"] = f'attachment; filename="{name}"'
        url: str = self.s3.generate_presigned_url("get_object", Params=params,
                                                  ExpiresIn=self.settings.attachments_url_ttl_s)
        return url

    def file_id_from_url(self, user_id: str, url: str) -> str | None:
        """The file id when `url` is a download URL of the caller's own file in this bucket, else None.

        Only the URL's text is parsed; nothing is fetched.
        """
        if self._url_base is None:
            probe = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": "u/_/_"},
                                                   ExpiresIn=60)
            self._url_base = probe.split("?", 1)[0][:-len("u/_/_")]
        parts = urlsplit(url)
        bare = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if not bare.startswith(self._url_base):
            return None
        rest = bare[len(self._url_base):]
        prefix = f"{KEY_PREFIX}{user_segment(user_id)}/"
        if not rest.startswith(prefix) or not FILE_ID.match(rest[len(prefix):]):
            return None
        return rest[len(prefix):]
