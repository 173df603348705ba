"""Time to live in the emulator: delete the items whose TTL attribute is in the past, as DynamoDB does.

moto stores `UpdateTimeToLive` (the table's `ttl`) but never deletes anything. The emulator process
(`devtools.emulator`) calls `expire_items()` every `--ttl-sweep-seconds` (30 by default) with the
request lock held, so a sweep never interleaves with a request. DynamoDB's rules, as documented for
its TTL process:

- only tables whose TTL is enabled, and only their TTL attribute (e.g. `expires_at` in template.yaml);
- the attribute must be a top-level Number of epoch seconds; any other type is ignored;
- an item expires once that time is in the past, except a time more than five years in the past,
  which DynamoDB ignores;
- deleting an item removes it from every index: moto builds index results from the base table's
  items on each read, so a removed item is gone from the GSIs too. A stream, if any, gets the
  REMOVE record, like any delete (DynamoDB's TTL deletes do appear in streams).

DynamoDB deletes within a day or two of expiry and reads still return expired items until then;
the emulator is quicker, which no caller may rely on either way. TTL deletes are free in DynamoDB:
the emulator's request accounting does not count them.
"""

from __future__ import annotations

from typing import Any

FIVE_YEARS_S = 5 * 365 * 86_400


def _expired(value: Any, now: float) -> bool:
    if value is None or value.type != "N":
        return False
    try:
        expires = float(value.value)
    except (TypeError, ValueError):
        return False
    return now - FIVE_YEARS_S <= expires < now


def expire_table(table: Any, now: float) -> int:
    """Delete the expired items of one moto `Table`; the number deleted."""
    if table.ttl.get("TimeToLiveStatus") != "ENABLED" or not table.ttl.get("AttributeName"):
        return 0
    attribute = table.ttl["AttributeName"]
    ranged = table.range_key_attr is not None
    expired = [item for bucket in table.items.values() for item in (bucket.values() if ranged else [bucket])
               if _expired(item.attrs.get(attribute), now)]
    for item in expired:
        table.delete_item(item.hash_key, item.range_key)
        if ranged and not table.items.get(item.hash_key, True):
            del table.items[item.hash_key]  # moto leaves the emptied partition's dict behind
    return len(expired)


def expire_items(now: float) -> int:
    """Delete the expired items of every DynamoDB table in this process (every account and region)."""
    from moto.dynamodb.models import dynamodb_backends

    deleted = 0
    for regions in list(dynamodb_backends.values()):
        for backend in list(regions.values()):
            for table in list(backend.tables.values()):
                deleted += expire_table(table, now)
    return deleted
