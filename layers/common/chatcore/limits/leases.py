"""Concurrent-stream leases: a per-user semaphore in DynamoDB that is exact under races.

Design: one item per user, `pk = LEASE#<user>`, `sk = LEASE`, holding a counter `n` and one
attribute per lease, `l_<lease id> = <expiry, epoch seconds>`. Every write keeps `n` equal to the
number of `l_` attributes, and every write is a single conditional `UpdateItem`:

- acquire: `SET l_<id> = :exp ADD n :1` if `attribute_not_exists(n) OR n < :limit`;
- release: `REMOVE l_<id> ADD n :-1` if `attribute_exists(l_<id>)` (so a double release, or the
  release of a lease already reclaimed as expired, changes nothing);
- reclaim: when an acquire fails, the item as it was (`ALL_OLD`) lists the leases and their
  expiries; if some have expired, one update removes exactly those and adds the new lease, on the
  condition that each removed lease still has the expiry that was seen and `n < :limit + removed`.
  Any concurrent change makes that condition fail and the acquire retries from fresh data.

The expiry is checked in the write's condition against the caller's clock, never left to
DynamoDB's TTL (which may delete days late), so a lease left by a crashed or frozen invocation
stops counting at most `LEASE_TTL_S` after it was taken. The item's own `expires_at` only cleans
up idle users.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatcore.dynamodb import is_condition_failure

SK = "LEASE"
PREFIX = "l_"
MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class LeaseCheck:
    """An acquired lease (`lease_id`), or a refusal with the number of live leases found."""

    allowed: bool
    lease_id: str | None
    active: int
    retry_after_s: float = 0.0


class StreamLeases:
    def __init__(self, table_name: str, client: Callable[[], Any], ttl_s: float) -> None:
        self.table_name = table_name
        self.ttl_s = ttl_s
        self._client = client

    @staticmethod
    def key(user_id: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"LEASE#{user_id}"}, "sk": {"S": SK}}

    def acquire(self, user_id: str, limit: int, now: float) -> LeaseCheck:
        """Take one of `limit` stream slots, reclaiming expired leases if needed."""
        lease_id = uuid.uuid4().hex
        expiry = now + self.ttl_s
        for _ in range(MAX_ATTEMPTS):
            old = self._try_acquire(user_id, lease_id, expiry, limit)
            if old is None:
                return LeaseCheck(True, lease_id, 0)
            leases = {name: float(value["N"]) for name, value in old.items() if name.startswith(PREFIX)}
            expired = {name: value for name, value in leases.items() if value <= now}
            live = len(leases) - len(expired)
            if live >= limit:
                soonest = min(value for value in leases.values() if value > now)
                return LeaseCheck(False, None, live, retry_after_s=min(soonest - now, 5.0))
            if not expired:
                continue  # a slot was freed between our write and the read of the old item
            if self._try_reclaim(user_id, lease_id, expiry, limit, old, expired):
                return LeaseCheck(True, lease_id, 0)
        # Lost every race: others keep changing the item, so the slots are in heavy use.
        return LeaseCheck(False, None, limit, retry_after_s=1.0)

    def release(self, user_id: str, lease_id: str) -> None:
        """Free a lease; a no-op if it was already released or reclaimed."""
        try:
            self._client().update_item(
                TableName=self.table_name, Key=self.key(user_id),
                UpdateExpression="REMOVE #l ADD #n :minus",
                ConditionExpression="attribute_exists(#l)",
                ExpressionAttributeNames={"#l": PREFIX + lease_id, "#n": "n"},
                ExpressionAttributeValues={":minus": {"N": "-1"}},
            )
        except Exception as exc:
            if not is_condition_failure(exc):
                raise

    def _try_acquire(self, user_id: str, lease_id: str, expiry: float, limit: int) -> dict[str, Any] | None:
        """None when acquired, else the item as it was."""
        try:
            self._client().update_item(
                TableName=self.table_name, Key=self.key(user_id),
                UpdateExpression="SET #l = :exp, expires_at = :ttl ADD #n :one",
                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                ExpressionAttributeNames={"#l": PREFIX + lease_id, "#n": "n"},
                ExpressionAttributeValues={":exp": {"N": f"{expiry:.3f}"}, ":ttl": {"N": str(int(expiry) + 60)},
                                           ":one": {"N": "1"}, ":limit": {"N": str(limit)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if not is_condition_failure(exc):
                raise
            return exc.response.get("Item") or {}  # type: ignore[attr-defined, no-any-return]
        return None

    def _try_reclaim(self, user_id: str, lease_id: str, expiry: float, limit: int, old: dict[str, Any],
                     expired: dict[str, float]) -> bool:
        """Replace exactly the expired leases seen in `old` by the new one, if nothing changed since."""
        names = {"#l": PREFIX + lease_id, "#n": "n"}
        values: dict[str, Any] = {":exp": {"N": f"{expiry:.3f}"}, ":ttl": {"N": str(int(expiry) + 60)},
                                  ":delta": {"N": str(1 - len(expired))},
                                  ":limit": {"N": str(limit + len(expired))}}
        removes, conditions = [], ["#n < :limit"]
        for index, name in enumerate(expired):
            names[f"#x{index}"] = name
            values[f":x{index}"] = old[name]
            removes.append(f"#x{index}")
            conditions.append(f"#x{index} = :x{index}")
        try:
            self._client().update_item(
                TableName=self.table_name, Key=self.key(user_id),
                UpdateExpression=f"REMOVE {', '.join(removes)} SET #l = :exp, expires_at = :ttl ADD #n :delta",
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if not is_condition_failure(exc):
                raise
            return False
        return True
