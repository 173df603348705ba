"""One DynamoDB item per user holds every limit: the minute and day windows and the stream leases.

Item `pk = USER#<user>#LIMITS`, `sk = LIMITS`:

- `mr<minute>` / `mt<minute>`: requests and tokens of the minute `<minute>` (epoch seconds // 60);
- `dt<day>`: tokens of the UTC day `<day>` (epoch seconds // 86400);
- `n` and `l_<lease id> = <expiry, epoch seconds>`: the stream leases and their count (every write
  keeps `n` equal to the number of `l_` attributes);
- `expires_at`: the end of the day window plus a day (TTL), so an idle user's item disappears.
- `top`: the conversation list order key (`gsi1sk`, time then conversation id) the user's latest
  turn moved a conversation to, written by the settlement (no extra write) only if it is later than
  the one there. The admission returns it, so a turn in the conversation that is first in the
  user's list already leaves its key alone (`conversations.memory`: one index write fewer).

Naming each counter after its window makes a rollover a plain `ADD` into attributes that do not
exist yet: one update expression serves every state of the item, so there is no read and no variant
to guess, even on a cold instance that has never seen the user. Past windows' counters are
`REMOVE`d by the settlement of the next turn that sees them (the admission returns the whole item).

A turn costs two conditional `UpdateItem`s (a third, reserve, only when the turn needs more than the
admission saw room for; see below):

- admit: `SET l_<id> = :expiry ADD n :1, mr<w> :1, mt<w> :t, dt<d> :t` if every counter stays within
  its limit (`attribute_not_exists(x) OR x <= :limit - charge`, and `n < :streams`). A refusal changes
  nothing; the item as it was (`ReturnValuesOnConditionCheckFailure=ALL_OLD`) says which limit
  refused and when it resets. If only expired leases stand in the way, the next attempt `REMOVE`s
  exactly those, on the condition that each still has the expiry that was seen (and
  `n < :streams + removed`), so any concurrent change makes it fail and retry from fresh data.
- reserve (only when `LimitAdmission` cannot leave a top-up unwritten, limiter.py): `ADD mt<w> :t,
  dt<d> :t` if both stay within their limits; a window that rolled over and was removed is skipped.
- settle: `REMOVE l_<id>, <past windows> ADD n :-1, mt<w> :delta, dt<d> :delta` on the condition that
  the lease and the reserved windows still exist. A window that rolled over and was removed is dropped
  from a second attempt; a lease that is gone means the settlement already happened (or the lease was
  reclaimed as expired), so nothing is done twice.

The lease makes both writes idempotent under the SDK's retries: an admit requires its lease not to
exist yet (a retried admit that had succeeded finds it in `ALL_OLD` and is the admission), and a
settle requires it to exist.

Lease expiry is checked in the write's condition against the caller's clock, never left to
DynamoDB's TTL (which may delete days late).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatcore.dynamodb import is_condition_failure
from chatcore.limits.policy import TierLimits

MINUTE_S = 60
DAY_S = 86_400
SK = "LIMITS"
LEASE_PREFIX = "l_"
MAX_ATTEMPTS = 5  # each retry follows a concurrent change of the item's shape, never a plain race
_WINDOW = re.compile(r"^(mr|mt|dt)(\d+)$")

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Admitted:
    """A granted admission: the lease and windows it holds, the minute's counts and the day's tokens after it."""

    lease_id: str
    minute: int
    day: int
    requests: int
    tokens: int
    day_tokens: int
    reset_s: float  # seconds until the minute window ends
    past: tuple[str, ...]  # counters of past windows seen in the item, for the settlement to remove
    top: str | None = None  # the list order key the user's latest turn moved a conversation to (`top`)


@dataclass(frozen=True, slots=True)
class Refused:
    """A refusal (nothing was written): which limit, when to retry, the minute's counts as found."""

    limit: str  # requests_per_minute, tokens_per_minute, tokens_per_day or concurrent_streams
    retry_after_s: float
    requests: int
    tokens: int
    reset_s: float  # seconds until the minute window ends


def minute_of(now: float) -> int:
    return int(now // MINUTE_S)


def day_of(now: float) -> int:
    return int(now // DAY_S)


def _number(item: Item | None, name: str) -> int:
    value = (item or {}).get(name, {}).get("N")
    return int(float(value)) if value is not None else 0


def _leases(item: Item) -> dict[str, float]:
    return {name: float(value["N"]) for name, value in item.items() if name.startswith(LEASE_PREFIX)}


def _past_windows(item: Item, minute: int, day: int) -> tuple[str, ...]:
    """The counters in `item` of windows before `minute` / `day`."""
    past = []
    for name in item:
        match = _WINDOW.match(name)
        if match and int(match.group(2)) < (day if match.group(1) == "dt" else minute):
            past.append(name)
    return tuple(sorted(past))


class LimitLedger:
    """The per-user limits item: admit, reserve more, settle. Blocking calls (run them in a thread)."""

    def __init__(self, table_name: str, client: Callable[[], Any], lease_ttl_s: float) -> None:
        self.table_name = table_name
        self.lease_ttl_s = lease_ttl_s
        self._client = client

    @staticmethod
    def key(user_id: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"USER#{user_id}#LIMITS"}, "sk": {"S": SK}}

    def admit(self, user_id: str, now: float, tokens: int, limits: TierLimits) -> Admitted | Refused:
        """Count one request, reserve `tokens` in the minute and the day, and take a stream lease,
        all or nothing, in one conditional update (more only when expired leases must be reclaimed)."""
        lease_id = uuid.uuid4().hex[:16]  # 64 random bits: unique among a user's few leases, and short (item size)
        minute, day = minute_of(now), day_of(now)
        reset_s = (minute + 1) * MINUTE_S - now
        reclaim: dict[str, Any] = {}
        old: Item = {}
        for _ in range(MAX_ATTEMPTS):
            try:
                item = self._admit_once(user_id, now, lease_id, minute, day, tokens, limits, reclaim)
            except Exception as exc:
                if not is_condition_failure(exc):
                    raise
                old = exc.response.get("Item") or {}  # type: ignore[attr-defined]
                if LEASE_PREFIX + lease_id in old:
                    item = old  # the SDK retried a write that had succeeded: this is the admission
                    break
                verdict = _judge(old, now, minute, day, tokens, limits)
                if isinstance(verdict, Refused):
                    return verdict
                reclaim = verdict  # expired leases to remove (or none: the item changed since)
                continue
            break
        else:
            # Lost every race: others keep changing the leases, so the slots are in heavy use.
            return Refused("concurrent_streams", 1.0, _number(old, f"mr{minute}"), _number(old, f"mt{minute}"),
                           reset_s)
        return Admitted(lease_id, minute, day, _number(item, f"mr{minute}"), _number(item, f"mt{minute}"),
                        _number(item, f"dt{day}"), reset_s, _past_windows(item, minute, day),
                        item.get("top", {}).get("S"))

    def _admit_once(self, user_id: str, now: float, lease_id: str, minute: int, day: int, tokens: int,
                    limits: TierLimits, reclaim: dict[str, Any]) -> Item:
        expiry = now + self.lease_ttl_s
        names = {"#l": LEASE_PREFIX + lease_id, "#n": "n", "#mr": f"mr{minute}", "#mt": f"mt{minute}",
                 "#dt": f"dt{day}"}
        values: dict[str, Any] = {
            ":exp": {"N": f"{expiry:.3f}"}, ":ttl": {"N": str(max((day + 2) * DAY_S, int(expiry) + 60))},
            ":one": {"N": "1"}, ":t": {"N": str(tokens)}, ":lease": {"N": str(1 - len(reclaim))},
            ":rmax": {"N": str(limits.requests_per_minute - 1)},
            ":tmax": {"N": str(limits.tokens_per_minute - tokens)},
            ":dmax": {"N": str(limits.tokens_per_day - tokens)},
            ":smax": {"N": str(limits.concurrent_streams + len(reclaim))},
        }
        conditions = ["attribute_not_exists(#l)",  # an SDK retry of a write that succeeded must not count twice
                      "(attribute_not_exists(#mr) OR #mr <= :rmax)", "(attribute_not_exists(#mt) OR #mt <= :tmax)",
                      "(attribute_not_exists(#dt) OR #dt <= :dmax)", "(attribute_not_exists(#n) OR #n < :smax)"]
        removes = []
        for index, (name, seen) in enumerate(reclaim.items()):
            names[f"#x{index}"] = name
            values[f":x{index}"] = seen
            removes.append(f"#x{index}")
            conditions.append(f"#x{index} = :x{index}")
        expression = "SET #l = :exp, expires_at = :ttl ADD #n :lease, #mr :one, #mt :t, #dt :t"
        if removes:
            expression += f" REMOVE {', '.join(removes)}"
        response = self._client().update_item(
            TableName=self.table_name, Key=self.key(user_id), UpdateExpression=expression,
            ConditionExpression=" AND ".join(conditions), ExpressionAttributeNames=names,
            ExpressionAttributeValues=values, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return response.get("Attributes") or {}  # type: ignore[no-any-return]

    def reserve(self, user_id: str, now: float, admitted: Admitted, tokens: int,
                limits: TierLimits) -> tuple[int, int] | Refused:
        """Reserve `tokens` more in the admission's windows, if both stay within their limits.

        Returns the minute's and the day's tokens after the charge (0 for a window that has rolled
        over). A window that rolled over and was removed is skipped: its budget limits nothing any more.
        """
        parts = {"minute": (f"mt{admitted.minute}", limits.tokens_per_minute),
                 "day": (f"dt{admitted.day}", limits.tokens_per_day)}
        for _ in range(MAX_ATTEMPTS):
            if not parts:
                return 0, 0
            names, values = {}, {":t": {"N": str(tokens)}}
            adds, conditions = [], []
            for label, (name, limit) in parts.items():
                names[f"#{label}"] = name
                values[f":{label}"] = {"N": str(limit - tokens)}
                adds.append(f"#{label} :t")
                conditions.append(f"#{label} <= :{label}")  # false when the attribute is gone
            try:
                response = self._client().update_item(
                    TableName=self.table_name, Key=self.key(user_id), UpdateExpression=f"ADD {', '.join(adds)}",
                    ConditionExpression=" AND ".join(conditions), ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values, ReturnValues="UPDATED_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except Exception as exc:
                if not is_condition_failure(exc):
                    raise
                old: Item = exc.response.get("Item") or {}  # type: ignore[attr-defined]
                for label in [label for label, (name, _) in parts.items() if name not in old]:
                    del parts[label]  # rolled over and removed: nothing to check or charge there
                over = [label for label, (name, limit) in parts.items() if _number(old, name) + tokens > limit]
                if over:
                    reset = {"minute": (admitted.minute + 1) * MINUTE_S, "day": (admitted.day + 1) * DAY_S}
                    label = "day" if "day" in over else "minute"
                    mt = _number(old, parts["minute"][0]) if "minute" in parts else 0
                    return Refused(f"tokens_per_{label}", max(reset[label] - now, 1.0), admitted.requests, mt,
                                   admitted.reset_s)
                continue
            after = response.get("Attributes")
            return (_number(after, parts["minute"][0]) if "minute" in parts else 0,
                    _number(after, parts["day"][0]) if "day" in parts else 0)
        return Refused("tokens_per_minute", 1.0, admitted.requests, 0, admitted.reset_s)

    def settle(self, user_id: str, admitted: Admitted, delta: int, top: str | None = None) -> None:
        """Add `delta` tokens to the admission's windows (negative gives back), free its lease and remove
        past windows' counters. Whatever no longer exists is dropped; settling twice frees nothing more.

        `top`: the list order key the turn moved its conversation to, recorded if it is later than the
        one recorded (a concurrent turn of the same user may have moved another one further)."""
        lease = LEASE_PREFIX + admitted.lease_id
        windows = [f"mt{admitted.minute}", f"dt{admitted.day}"] if delta else []
        for _ in range(MAX_ATTEMPTS):
            names = {"#l": lease, "#n": "n"}
            values: dict[str, Any] = {":minus": {"N": "-1"}}
            removes, adds = ["#l"], ["#n :minus"]
            conditions = ["attribute_exists(#l)"]  # a released or reclaimed lease frees nothing
            sets = ""
            if top is not None:
                names["#top"] = "top"
                values[":top"] = {"S": top}
                sets = " SET #top = :top"
                conditions.append("(attribute_not_exists(#top) OR #top < :top)")
            for index, name in enumerate(windows):
                names[f"#w{index}"] = name
                values[":d"] = {"N": str(delta)}
                adds.append(f"#w{index} :d")
                conditions.append(f"attribute_exists(#w{index})")  # a rolled-over window takes no correction
            for index, name in enumerate(admitted.past):
                names[f"#p{index}"] = name
                removes.append(f"#p{index}")
            try:
                self._client().update_item(
                    TableName=self.table_name, Key=self.key(user_id),
                    UpdateExpression=f"REMOVE {', '.join(removes)} ADD {', '.join(adds)}{sets}",
                    ConditionExpression=" AND ".join(conditions), ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values, ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except Exception as exc:
                if not is_condition_failure(exc):
                    raise
                old: Item = exc.response.get("Item") or {}  # type: ignore[attr-defined]
                if lease not in old:
                    # Settled already (an SDK retry of a write that succeeded), or reclaimed after
                    # LEASE_TTL_S: the lease is what makes a settlement count once, so nothing is left.
                    return
                windows = [name for name in windows if name in old]
                if top is not None and old.get("top", {}).get("S", "") >= top:
                    top = None  # a later move is recorded already
                continue
            return


def _judge(old: Item, now: float, minute: int, day: int, tokens: int, limits: TierLimits) -> Refused | dict[str, Any]:
    """Why an admission's condition failed, from the item as it was: a refusal, or the expired leases
    to reclaim on the next attempt (none if the item simply changed since it was last seen)."""
    requests, minute_tokens = _number(old, f"mr{minute}"), _number(old, f"mt{minute}")
    reset_s = (minute + 1) * MINUTE_S - now
    if _number(old, f"dt{day}") + tokens > limits.tokens_per_day:
        return Refused("tokens_per_day", (day + 1) * DAY_S - now, requests, minute_tokens, reset_s)
    if requests + 1 > limits.requests_per_minute:
        return Refused("requests_per_minute", reset_s, requests, minute_tokens, reset_s)
    if minute_tokens + tokens > limits.tokens_per_minute:
        return Refused("tokens_per_minute", reset_s, requests, minute_tokens, reset_s)
    leases = _leases(old)
    live = [expiry for expiry in leases.values() if expiry > now]
    if len(live) >= limits.concurrent_streams:
        return Refused("concurrent_streams", min(min(live) - now, 5.0), requests, minute_tokens, reset_s)
    return {name: old[name] for name, expiry in leases.items() if expiry <= now}
