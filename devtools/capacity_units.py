"""DynamoDB item sizes and the capacity units a request consumes, by DynamoDB's published rules.

The emulator (`devtools.emulator`) counts with these what each request would cost in on-demand
request units: moto does not report consumed capacity for every operation, so the units are
computed from the sizes of the items each request reads or writes (before and after the write).

Rules (DynamoDB developer guide, "Item sizes and formats" and "Read/write capacity mode"):
- item size = sum over attributes of the UTF-8 name length plus the value size: strings by UTF-8
  bytes, binary by bytes, numbers about 1 byte per two significant digits plus 1, booleans and null
  1 byte, lists and maps 3 bytes plus 1 byte per element plus their contents, sets their elements;
- a write costs 1 unit per started KB of the larger of the item before and after (at least 1), twice
  that inside TransactWriteItems; a write also costs one write per global secondary index whose key
  the item has before or after (two when the index key changes), by the item's size;
- a read costs 1 unit per started 4 KB (a Query sums the items it returns first), half that when
  eventually consistent, twice that inside a transaction, at least one unit (or half) per request.
"""

from __future__ import annotations

import base64
import math
from typing import Any

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096


def _number_size(text: str) -> int:
    digits = text.lstrip("+-").lower().split("e")[0].replace(".", "").strip("0")
    return (max(len(digits), 1) + 1) // 2 + 1


def value_size(value: dict[str, Any]) -> int:
    """Bytes of one attribute value in DynamoDB JSON (`{"S": "..."}`)."""
    (kind, data), = value.items()
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "N":
        return _number_size(str(data))
    if kind == "B":
        return len(base64.b64decode(data)) if isinstance(data, str) else len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(v.encode("utf-8")) for v in data)
    if kind == "NS":
        return sum(_number_size(str(v)) for v in data)
    if kind == "BS":
        return sum(len(base64.b64decode(v)) if isinstance(v, str) else len(v) for v in data)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in data.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: dict[str, Any] | None) -> int:
    """Bytes of an item in DynamoDB JSON; 0 for no item."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def write_units(before: dict[str, Any] | None, after: dict[str, Any] | None, *, transactional: bool = False,
                request_item: dict[str, Any] | None = None) -> float:
    """Units of one item write (a failed condition costs the same as a write)."""
    size = max(item_size(before), item_size(after), item_size(request_item))
    units = max(1, math.ceil(size / WRITE_UNIT_BYTES))
    return float(units * (2 if transactional else 1))


def index_write_units(before: dict[str, Any] | None, after: dict[str, Any] | None,
                      index_keys: list[list[str]]) -> float:
    """Units the global secondary indexes (each given by its key attribute names) add to one write."""
    total = 0.0
    for keys in index_keys:
        old = before is not None and all(k in before for k in keys)
        new = after is not None and all(k in after for k in keys)
        if old and new and before is not None and after is not None:
            changed = any(before[k] != after[k] for k in keys)
            if changed:
                total += max(1, math.ceil(item_size(before) / WRITE_UNIT_BYTES))
            total += max(1, math.ceil(item_size(after) / WRITE_UNIT_BYTES))
        elif old or new:
            total += max(1, math.ceil(item_size(before if old else after) / WRITE_UNIT_BYTES))
    return total


def read_units(items: list[dict[str, Any]], *, consistent: bool, transactional: bool = False) -> float:
    """Units of one read request that returned `items` (summed, then rounded up to 4 KB)."""
    units = max(1, math.ceil(sum(item_size(item) for item in items) / READ_UNIT_BYTES))
    if transactional:
        return float(units * 2)
    return float(units) if consistent else units / 2
