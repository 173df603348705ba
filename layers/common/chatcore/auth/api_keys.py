"""`AUTH_MODE=api_key`: random keys stored only as SHA-256 hashes in DynamoDB.

A key is `cbk_` plus 32 random bytes (base64url). Its SHA-256 is the item key
(`pk = APIKEY#<sha256 hex>`, `sk = APIKEY`) with `owner`, `tier`, `status`, `name`, `created_at`;
a fast unsalted hash is right here because the key itself has 256 bits of entropy, so it cannot be
guessed from its hash. `key_id` (the first 16 hex digits of the hash) names a key for listing and
revoking, through the GSI (`gsi1pk = APIKEYS`, `gsi1sk = <key_id>`).

Verified keys are cached in-process for `API_KEY_CACHE_TTL_S` (60 s), so the hot path usually makes no
DynamoDB read; a revoked key therefore keeps working on a warm instance for at most that long.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from chatcore import errors
from chatcore.auth import Principal, bearer_token
from chatcore.settings import Settings

KEY_PREFIX = "cbk_"
_KEY_SHAPE = re.compile(r"^cbk_[A-Za-z0-9_-]{43}$")
SK = "APIKEY"
INDEX = "gsi1"
INDEX_PK = "APIKEYS"


def generate_key() -> str:
    """A new key: recognizable prefix plus 32 random bytes."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    owner: str
    tier: str
    status: str
    name: str = ""
    created_at: int = 0

    @property
    def active(self) -> bool:
        return self.status == "active"


def _record(item: dict[str, Any]) -> ApiKeyRecord:
    def text(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    return ApiKeyRecord(key_id=text("key_id"), owner=text("owner"), tier=text("tier") or "free",
                        status=text("status"), name=text("name"),
                        created_at=int(item.get("created_at", {}).get("N", "0")))


class ApiKeyStore:
    """Create, look up, list and revoke keys (blocking boto3 calls: run them off the event loop)."""

    def __init__(self, table_name: str, client: Callable[[], Any]) -> None:
        self.table_name = table_name
        self._client = client

    def create(self, owner: str, tier: str = "free", name: str = "") -> tuple[str, ApiKeyRecord]:
        """A new active key for `owner`. The key is returned here once and stored only as a hash."""
        if not owner.strip():
            raise ValueError("owner must not be empty")
        key = generate_key()
        digest = hash_key(key)
        record = ApiKeyRecord(key_id=digest[:16], owner=owner.strip(), tier=tier, status="active", name=name,
                              created_at=int(time.time()))
        self._client().put_item(
            TableName=self.table_name,
            Item={"pk": {"S": f"APIKEY#{digest}"}, "sk": {"S": SK}, "gsi1pk": {"S": INDEX_PK},
                  "gsi1sk": {"S": record.key_id}, "key_id": {"S": record.key_id}, "owner": {"S": record.owner},
                  "tier": {"S": tier}, "status": {"S": "active"}, "name": {"S": name},
                  "created_at": {"N": str(record.created_at)}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        return key, record

    def lookup(self, digest: str) -> ApiKeyRecord | None:
        """The record for a key hash, or None if there is no such key."""
        response = self._client().get_item(TableName=self.table_name,
                                           Key={"pk": {"S": f"APIKEY#{digest}"}, "sk": {"S": SK}})
        item = response.get("Item")
        return _record(item) if item else None

    def list_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        """Every key (or one owner's), newest first. Never includes a key or its hash."""
        records: list[ApiKeyRecord] = []
        arguments: dict[str, Any] = {
            "TableName": self.table_name, "IndexName": INDEX,
            "KeyConditionExpression": "gsi1pk = :pk", "ExpressionAttributeValues": {":pk": {"S": INDEX_PK}},
        }
        while True:
            response = self._client().query(**arguments)
            records.extend(_record(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        if owner is not None:
            records = [record for record in records if record.owner == owner]
        return sorted(records, key=lambda record: record.created_at, reverse=True)

    def revoke(self, key_id: str) -> bool:
        """Mark the key `key_id` revoked; False if there is no such key."""
        response = self._client().query(
            TableName=self.table_name, IndexName=INDEX,
            KeyConditionExpression="gsi1pk = :pk AND gsi1sk = :id",
            ExpressionAttributeValues={":pk": {"S": INDEX_PK}, ":id": {"S": key_id}},
        )
        items = response.get("Items", [])
        for item in items:
            self._client().update_item(
                TableName=self.table_name, Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET #s = :revoked, revoked_at = :now",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":revoked": {"S": "revoked"}, ":now": {"N": str(int(time.time()))}},
            )
        return bool(items)


def presented_key(request: HTTPConnection) -> str | None:
    """The key from `x-api-key`, or else from `Authorization: Bearer`."""
    return request.headers.get("x-api-key", "").strip() or bearer_token(request.headers)


class ApiKeyAuthenticator:
    def __init__(self, store: ApiKeyStore, *, cache_ttl_s: float = 60.0, negative_ttl_s: float = 10.0,
                 max_cached: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.lookups = 0  # DynamoDB reads made (observability and tests)
        self._cache_ttl_s = cache_ttl_s
        self._negative_ttl_s = min(negative_ttl_s, cache_ttl_s)
        self._max_cached = max_cached
        self._clock = clock
        # key hash -> (cached until, record or None for "no such key"); never the key itself.
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyAuthenticator:
        from chatcore.dynamodb import client_for

        return cls(ApiKeyStore(settings.table_name, lambda: client_for(settings, critical=True)),
                   cache_ttl_s=settings.api_key_cache_ttl_s)

    async def authenticate(self, request: HTTPConnection) -> Principal:
        """The key's owner and tier; 401 for a missing, malformed, unknown or revoked key."""
        key = presented_key(request)
        if key is None:
            raise errors.UnauthorizedError("Missing API key (send `x-api-key` or `Authorization: Bearer`).")
        if not _KEY_SHAPE.match(key):
            raise errors.InvalidCredentialsError("The API key is invalid.")  # no database read for junk
        record = await self._record(hash_key(key))
        if record is None or not record.active:
            raise errors.InvalidCredentialsError("The API key is invalid or revoked.")
        return Principal(user_id=record.owner, tier=record.tier, method="api_key")

    async def _record(self, digest: str) -> ApiKeyRecord | None:
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            record = await asyncio.to_thread(self.store.lookup, digest)
        except Exception as exc:  # DynamoDB unavailable: credentials cannot be checked, fail closed
            raise errors.ServiceUnavailableError("Cannot verify credentials right now.", retry_after=1) from exc
        finally:
            self.lookups += 1
        if len(self._cache) >= self._max_cached:
            self._cache.pop(next(iter(self._cache)))  # oldest entry first
        ttl = self._cache_ttl_s if record is not None else self._negative_ttl_s
        self._cache[digest] = (now + ttl, record)
        return record
