"""Fixed-window request and token counters in DynamoDB, one conditional atomic update per check.

Each window is one item: `RL#<user>#m#<epoch minute>` holds the requests and tokens of a minute,
`RL#<user>#d#<UTC date>` the tokens of a day (sk `RL`). A check is a single `UpdateItem` that adds
the request and its reserved tokens only if the totals stay within the limits
(`ADD ... SET expires_at` with `ConditionExpression: attribute_not_exists(n) OR n <= :limit - x`),
so concurrent callers can never overshoot a limit and there is no read-then-write. A failed check
returns the item as it was (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), which gives the
remaining amount and `Retry-After` without another read. The items expire through the table's TTL.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatcore.dynamodb import is_condition_failure

MINUTE_S = 60
DAY_S = 86_400
SK = "RL"

Key = dict[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class WindowCheck:
    """The outcome of one window's check. Counts are after the charge if allowed, else as found."""

    key: Key
    allowed: bool
    requests: int
    tokens: int
    reset_s: float  # seconds until the window ends
    exceeded: str = ""  # "requests" or "tokens" when denied


def _number(item: dict[str, Any] | None, name: str) -> int:
    value = (item or {}).get(name, {}).get("N")
    return int(float(value)) if value is not None else 0


class RateLimiter:
    """Requests per minute, tokens per minute and tokens per day, per user."""

    def __init__(self, table_name: str, client: Callable[[], Any]) -> None:
        self.table_name = table_name
        self._client = client

    @staticmethod
    def minute_key(user_id: str, now: float) -> tuple[Key, float, int]:
        """The minute window's key, seconds until it ends, and its TTL (epoch seconds)."""
        index = int(now // MINUTE_S)
        end = (index + 1) * MINUTE_S
        return {"pk": {"S": f"RL#{user_id}#m#{index}"}, "sk": {"S": SK}}, end - now, end + 2 * MINUTE_S

    @staticmethod
    def day_key(user_id: str, now: float) -> tuple[Key, float, int]:
        """The UTC day window's key, seconds until it ends, and its TTL (epoch seconds)."""
        index = int(now // DAY_S)
        end = (index + 1) * DAY_S
        date = time.strftime("%Y-%m-%d", time.gmtime(index * DAY_S))
        return {"pk": {"S": f"RL#{user_id}#d#{date}"}, "sk": {"S": SK}}, end - now, end + DAY_S

    def charge_minute(self, user_id: str, now: float, *, max_requests: int, max_tokens: int,
                      tokens: int) -> WindowCheck:
        """Count one request and reserve `tokens` in the current minute, if both stay within limits."""
        key, reset_s, ttl = self.minute_key(user_id, now)
        return self._charge(key, reset_s, ttl, requests=(1, max_requests), tokens=(tokens, max_tokens))

    def charge_tokens(self, key: Key, reset_s: float, ttl: int, tokens: int, max_tokens: int) -> WindowCheck:
        """Reserve `tokens` more in an already charged window (`key`), if they stay within `max_tokens`."""
        return self._charge(key, reset_s, ttl, requests=None, tokens=(tokens, max_tokens))

    def charge_day(self, user_id: str, now: float, *, max_tokens: int, tokens: int) -> WindowCheck:
        """Reserve `tokens` in the current UTC day, if it stays within the limit."""
        key, reset_s, ttl = self.day_key(user_id, now)
        return self._charge(key, reset_s, ttl, requests=None, tokens=(tokens, max_tokens))

    def adjust(self, key: Key, *, requests: int = 0, tokens: int = 0, ttl: int | None = None) -> None:
        """Add (or, negative, give back) counts unconditionally: reconciliation and undo.

        `if_not_exists` keeps an item's TTL; it only sets one if the item was already gone, so an
        adjustment never leaves an item that lives forever.
        """
        if not requests and not tokens:
            return
        ttl = ttl if ttl is not None else int(time.time()) + 2 * DAY_S
        self._client().update_item(
            TableName=self.table_name, Key=key,
            UpdateExpression="ADD #r :r, #t :t SET expires_at = if_not_exists(expires_at, :ttl)",
            ExpressionAttributeNames={"#r": "requests", "#t": "tokens"},
            ExpressionAttributeValues={":r": {"N": str(requests)}, ":t": {"N": str(tokens)},
                                       ":ttl": {"N": str(ttl)}},
        )

    def _charge(self, key: Key, reset_s: float, ttl: int, *, requests: tuple[int, int] | None,
                tokens: tuple[int, int]) -> WindowCheck:
        names = {"#t": "tokens"}
        values = {":t": {"N": str(tokens[0])}, ":tmax": {"N": str(tokens[1] - tokens[0])},
                  ":ttl": {"N": str(ttl)}}
        adds = ["#t :t"]
        conditions = ["(attribute_not_exists(#t) OR #t <= :tmax)"]
        if requests is not None:
            names["#r"] = "requests"
            values[":r"] = {"N": str(requests[0])}
            values[":rmax"] = {"N": str(requests[1] - requests[0])}
            adds.insert(0, "#r :r")
            conditions.insert(0, "(attribute_not_exists(#r) OR #r <= :rmax)")
        try:
            response = self._client().update_item(
                TableName=self.table_name, Key=key,
                UpdateExpression=f"ADD {', '.join(adds)} SET expires_at = :ttl",
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if not is_condition_failure(exc):
                raise
            old = exc.response.get("Item")  # type: ignore[attr-defined]
            used_requests, used_tokens = _number(old, "requests"), _number(old, "tokens")
            exceeded = ("requests" if requests is not None and used_requests + requests[0] > requests[1]
                        else "tokens")
            return WindowCheck(key, False, used_requests, used_tokens, reset_s, exceeded)
        new = response.get("Attributes")
        return WindowCheck(key, True, _number(new, "requests"), _number(new, "tokens"), reset_s)


def reset_header(seconds: float) -> str:
    """Whole seconds until a window resets, as sent in `X-RateLimit-Reset` and `Retry-After`."""
    return str(max(1, math.ceil(seconds)))
