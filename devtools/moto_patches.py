"""Small patches to moto's DynamoDB so its costs follow what a request touches, not the table size.

Applied by the emulator process (`devtools.emulator`) before it serves anything; never in the app.
Written against moto 5.2.5; docs/local-dynamodb.md has the upstream report.

1. `TransactWriteItems` deep-copies every table it touches before applying anything, to roll back on
   failure (`DynamoDBBackend.transact_write_items`). Each stored message then costs time and memory
   in proportion to the whole table. The patch snapshots only the items the transaction names
   (a deep copy of each, or "absent") and restores exactly those on failure; the table copy is
   skipped by handing moto's own rollback the live table (restoring it is then a no-op).
2. A `Query` on the base table collects and sorts *every* item of the table (`Table.all_items()`)
   and then keeps the queried partition. The patch hands it the partition only. Index queries keep
   moto's full scan (an index has no partition map to look up).
3. moto's `BaseModel.__new__` appends every instance to a class-level list (`instances_tracked`, read
   only by moto's dashboard, `/moto-api/data.json`), so every DynamoDB `Item` ever built stays alive:
   overwritten and deleted items, the copy `UpdateItem` takes of each item it changes, the rollback
   snapshots of 1. Under `make dev` that garbage outweighed the stored data two to one. The patch
   builds `Item`s without tracking them; the dashboard then lists no items (nothing here uses it).
4. moto turns every response into JSON through its generic, model-driven serializer, which for each
   member of each `AttributeValue` (ten per value, nested for maps and lists) tries several spellings
   of the member name on the value. For a Query of 20 items that was most of the request's time. The
   patch converts an `AttributeValue` in one pass, with the generic serializer's exact result (strings
   as they are, binary base64-encoded the same way, booleans as they are), and leaves any value it does
   not recognise (or any service but DynamoDB) to moto.
5. `UpdateItem` (and each `Update` of a transaction) parses its `UpdateExpression` twice per request
   (once to check the placeholders, once to apply it) with moto's hand-written parser. The result
   depends on the string alone and moto never changes it (the validator that resolves names and
   values works on a deep copy), so the patch keeps the last 256 parsed expressions; an expression
   that fails to parse is not kept and fails every time, as before.
6. A `ProjectionExpression` (`Item.project`) converts the *whole* item to plain JSON once for every
   path it names, then keeps that path. An item with a large attribute the projection leaves out (a
   memory's embedding vector: hundreds of numbers) cost about 10 ms per item for a nine-path
   projection, on every turn's memory digest. The patch converts only the top-level attributes the
   paths start with, once each, and runs moto's own path lookup on them: the same result, since
   that lookup never looks past a path's first name.

All keep moto's validation, condition evaluation and error reporting: they wrap moto's functions
rather than copy them. `apply()` is idempotent; `revert()` exists for the regression tests.
"""

from __future__ import annotations

import copy as _copy
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

_state = threading.local()
_originals: dict[str, Any] = {}


class _TableCopySkippingCopyModule(ModuleType):
    """Stands in for the `copy` module inside `moto.dynamodb.models`.

    While a patched transaction runs on this thread, `deepcopy(table)` returns the table itself, so
    moto's whole-table backup costs nothing; every other call is the real `copy` module's.
    """

    def __init__(self) -> None:
        super().__init__("copy")

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models.table import Table

        if getattr(_state, "in_transaction", False) and isinstance(value, Table):
            return value
        return _copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(_copy, name)


@dataclass
class _Snapshot:
    """One item as it was before a transaction: `item` is a deep copy, or None when it did not exist."""

    table: Any
    hash_key: Any
    range_key: Any
    item: Any
    bucket_existed: bool


def _lookup(table: Any, hash_key: Any, range_key: Any) -> tuple[Any, bool]:
    """(item or None, whether the hash bucket exists) without creating a bucket in moto's defaultdict."""
    if range_key is None:
        return table.items.get(hash_key), hash_key in table.items
    bucket = table.items.get(hash_key)
    return (bucket.get(range_key) if bucket is not None else None), bucket is not None


def _snapshots(backend: Any, transact_items: list[dict[str, Any]]) -> tuple[list[_Snapshot], dict[int, tuple[Any, int]]]:
    """Deep copies of the items the transaction names, and the stream length of each table it touches."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    snapshots: list[_Snapshot] = []
    streams: dict[int, tuple[Any, int]] = {}
    for entry in transact_items:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue  # moto refuses it before writing anything
        op_type, op = next(iter(entry.items()))
        table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        if table is None:
            continue
        key = op.get("Item") if op_type == "Put" else op.get("Key")
        if not isinstance(key, dict) or table.hash_key_attr not in key:
            continue  # moto records a validation error for it and writes nothing for this entry
        if table.range_key_attr is not None and table.range_key_attr not in key:
            continue
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr is not None else None
        item, bucket_existed = _lookup(table, hash_key, range_key)
        snapshots.append(_Snapshot(table, hash_key, range_key, _copy.deepcopy(item), bucket_existed))
        if table.stream_shard is not None and id(table) not in streams:
            streams[id(table)] = (table.stream_shard, len(table.stream_shard.items))
    return snapshots, streams


def _restore(snapshots: list[_Snapshot], streams: dict[int, tuple[Any, int]]) -> None:
    for snap in reversed(snapshots):
        items = snap.table.items
        if snap.range_key is None:
            if snap.item is None:
                items.pop(snap.hash_key, None)
            else:
                items[snap.hash_key] = snap.item
            continue
        if snap.item is not None:
            items[snap.hash_key][snap.range_key] = snap.item
            continue
        bucket = items.get(snap.hash_key)
        if bucket is not None:
            bucket.pop(snap.range_key, None)
            if not bucket and not snap.bucket_existed:
                del items[snap.hash_key]
    for shard, length in streams.values():
        del shard.items[length:]  # stream records of writes that never happened


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    """moto's TransactWriteItems, with a backup of the touched items instead of the touched tables."""
    snapshots, streams = _snapshots(self, transact_items)
    _state.in_transaction = True
    try:
        _originals["transact_write_items"](self, transact_items)
    except BaseException:
        # moto "restored" the live tables (a no-op here); put back exactly the items it may have written.
        _restore(snapshots, streams)
        raise
    finally:
        _state.in_transaction = False


def _top_level_name(path: list[str]) -> str:
    """The item attribute a projection path starts with (`a[2]` names `a`)."""
    first = path[0]
    return first.split("[", 1)[0] if first.endswith("]") else first


def _project(self: Any, projection_expressions: list[list[str]]) -> Any:
    """moto's `Item.project`, converting only the attributes the paths start with, once each (6)."""
    from botocore.utils import merge_dicts
    from moto.dynamodb.models.dynamo_type import Item, deserializer, serializer
    from moto.dynamodb.models.utilities import find_nested_key

    named = {_top_level_name(path) for path in projection_expressions}
    regular = {name: deserializer.deserialize(self.attrs[name].to_regular_json())
               for name in named if name in self.attrs}
    result: dict[str, Any] = {}
    for path in projection_expressions:
        merge_dicts(result, find_nested_key(path, regular))
    return Item(hash_key=self.hash_key, range_key=self.range_key, attrs=serializer.serialize(result)["M"])


def _query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
    """moto's Table.query; on the base table it sees only the queried partition."""
    index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
    if index_name is not None or hash_key is None:
        return _originals["query"](self, hash_key, *args, **kwargs)
    _state.partition = (self, hash_key)
    try:
        return _originals["query"](self, hash_key, *args, **kwargs)
    finally:
        _state.partition = None


def _all_items(self: Any) -> list[Any]:
    """moto's Table.all_items, or only the partition a base-table query asked for."""
    partition = getattr(_state, "partition", None)
    if partition is None or partition[0] is not self:
        result: list[Any] = _originals["all_items"](self)
        return result
    bucket = self.items.get(partition[1])
    if bucket is None:
        return []
    if self.range_key_attr is None:
        return [bucket]
    return sorted(bucket.values(), key=lambda item: item.range_key)


_PARSED_UPDATE_EXPRESSIONS = 256


def _cached_update_parser(make: Any) -> Any:
    """`UpdateExpressionParser.make` behind an LRU cache keyed by the expression string (5)."""
    import functools

    @functools.lru_cache(maxsize=_PARSED_UPDATE_EXPRESSIONS)
    def parse(expression: str) -> Any:
        return make(expression)

    def cached_make(cls: type, expression: Any) -> Any:
        return parse(expression) if isinstance(expression, str) else make(expression)

    return classmethod(cached_make)


_SCALARS = {"S": str, "N": str, "BOOL": bool, "NULL": bool}
_STRING_SETS = ("SS", "NS")
_ATTRIBUTE_VALUE_SERVICES = ("dynamodb", "dynamodbstreams")


def _attribute_value(value: Any, base64: Any) -> dict[str, Any] | None:
    """What moto's JSON serializer makes of one AttributeValue dict, or None when it is not a plain one."""
    if len(value) != 1:
        return None
    ((kind, data),) = value.items()
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        return {kind: data} if type(data) is scalar else None
    if kind == "M":
        if type(data) is not dict:
            return None
        members = {}
        for name, member in data.items():
            converted = _attribute_value(member, base64) if type(member) is dict else None
            if converted is None:
                return None
            members[name] = converted
        return {kind: members}
    if kind == "L":
        if type(data) is not list:
            return None
        elements = []
        for element in data:
            converted = _attribute_value(element, base64) if type(element) is dict else None
            if converted is None:
                return None
            elements.append(converted)
        return {kind: elements}
    if kind in _STRING_SETS:
        return {kind: list(data)} if type(data) is list and all(type(v) is str for v in data) else None
    if kind == "B":
        return {kind: base64(data)} if isinstance(data, str | bytes) else None
    if kind == "BS":
        return {kind: [base64(v) for v in data]} if type(data) is list and all(
            isinstance(v, str | bytes) for v in data) else None
    return None


def _serialize_type_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
    """moto's JSON structure serializer, with DynamoDB's AttributeValue converted in one pass (4)."""
    if (key and shape.name == "AttributeValue" and type(value) is dict
            and self.service_model.service_name in _ATTRIBUTE_VALUE_SERVICES
            and not getattr(self._value_picker, "response_transformers", None)):
        converted = _attribute_value(value, self._base64)
        if converted is not None:
            self._default_serialize(serialized, converted, shape, key)
            return
    _originals["serialize_type_structure"](self, serialized, value, shape, key)


def _untracked_item(cls: type, *args: Any, **kwargs: Any) -> Any:
    """`Item.__new__` without moto's instance tracking (see the module docstring, 3)."""
    return object.__new__(cls)


def is_applied() -> bool:
    """True once `apply()` has run in this process."""
    return bool(_originals)


def apply() -> None:
    """Patch moto's DynamoDB in this process (idempotent)."""
    if _originals:
        return
    import moto.dynamodb.models as models
    from moto.core.serialize import BaseJSONSerializer
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    _originals["item_new"] = Item.__dict__.get("__new__")
    _originals["serialize_type_structure"] = BaseJSONSerializer._serialize_type_structure
    _originals["update_parser_make"] = UpdateExpressionParser.__dict__["make"]
    _originals["transact_write_items"] = models.DynamoDBBackend.transact_write_items
    _originals["query"] = Table.query
    _originals["all_items"] = Table.all_items
    _originals["copy_module"] = models.copy
    _originals["item_project"] = Item.project
    Item.project = _project  # type: ignore[method-assign]
    models.copy = _TableCopySkippingCopyModule()  # type: ignore[assignment]
    models.DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    Table.query = _query  # type: ignore[method-assign]
    Table.all_items = _all_items  # type: ignore[method-assign]
    Item.__new__ = staticmethod(_untracked_item)  # type: ignore[assignment]
    BaseJSONSerializer._serialize_type_structure = _serialize_type_structure  # type: ignore[method-assign]
    UpdateExpressionParser.make = _cached_update_parser(UpdateExpressionParser.make)


def revert() -> None:
    """Undo `apply()` (for tests that compare patched and unpatched behaviour)."""
    if not _originals:
        return
    import moto.dynamodb.models as models
    from moto.core.serialize import BaseJSONSerializer
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    BaseJSONSerializer._serialize_type_structure = _originals.pop("serialize_type_structure")  # type: ignore[method-assign]
    UpdateExpressionParser.make = _originals.pop("update_parser_make")
    original_new = _originals.pop("item_new")
    if original_new is None:
        del Item.__new__  # back to BaseModel.__new__, which tracks every instance
    else:
        Item.__new__ = original_new  # type: ignore[method-assign]
    models.copy = _originals.pop("copy_module")
    Item.project = _originals.pop("item_project")  # type: ignore[method-assign]
    models.DynamoDBBackend.transact_write_items = _originals.pop("transact_write_items")  # type: ignore[method-assign]
    Table.query = _originals.pop("query")  # type: ignore[method-assign]
    Table.all_items = _originals.pop("all_items")  # type: ignore[method-assign]
