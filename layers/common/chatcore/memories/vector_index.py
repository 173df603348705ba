"""Vector search over a user's memories: the table's DynamoDB vector index, or an exact local scan.

`search_request` is the one function that builds a search: the user id (from the verified
credential) is the index's partition value, and the embedding model is an inline filter, so a search
can only ever reach one user's vectors of one model. `MemoryIndex.search` re-checks every result's
owner anyway (IAM cannot restrict `SearchVectors` by key) and, for the DynamoDB index, confirms the
results still exist with a consistent read (the index is updated asynchronously: a memory deleted a
moment ago must not come back).

`LocalVectorEngine` answers the same `SearchVectors` request shape over the same items in the
emulator (which implements no vector search) with the same semantics: cosine distance
(0 = identical ... 2 = opposite), the k smallest first, `TopK` bounds, a dimension check, and only
items carrying the partition attribute.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chatcore.memories.store import (
    MODEL_ATTRIBUTE,
    USER_ATTRIBUTE,
    MemoryItem,
    MemoryStore,
    item_from,
    memory_pk,
    vector_from,
)
from chatcore.observability import get_logger

INDEX_NAME = "memories"
MAX_TOP_K = 100  # our own bound; the service's is not documented in the model (min 1)
PROJECTED = ("text", "kind", "source_conversation", "created_at", "updated_at", USER_ATTRIBUTE, MODEL_ATTRIBUTE)


@dataclass(frozen=True, slots=True)
class SearchHit:
    memory: MemoryItem
    distance: float  # cosine distance: 0 identical, 2 opposite


def search_request(table: str, user_id: str, vector: Sequence[float], top_k: int, embedding_model: str,
                   dimensions: int, index_name: str = INDEX_NAME) -> dict[str, Any]:
    """The `SearchVectors` request of every memory search: one user, one embedding model, `top_k` nearest."""
    if not user_id:
        raise ValueError("a memory search needs the caller's user id")
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be 1..{MAX_TOP_K}, got {top_k}")
    if len(vector) != dimensions:
        raise ValueError(f"a query vector of {len(vector)} dimensions; the index has {dimensions}")
    return {
        "TableName": table,
        "IndexName": index_name,
        "SearchVector": [{"N": format(float(v), ".7g")} for v in vector],
        "TopK": top_k,
        "SearchConditionExpression": "#u = :u AND #m = :m",
        "ExpressionAttributeNames": {"#u": USER_ATTRIBUTE, "#m": MODEL_ATTRIBUTE},
        "ExpressionAttributeValues": {":u": {"S": user_id}, ":m": {"S": embedding_model}},
    }


class SearchClient(Protocol):
    def search_vectors(self, **request: Any) -> dict[str, Any]: ...


class ValidationException(Exception):
    """What DynamoDB answers a malformed request (the local engine raises it for the same mistakes)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.response = {"Error": {"Code": "ValidationException", "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}


_CONDITION = re.compile(r"^\s*(#\w+|\w+)\s*=\s*(:\w+)\s*$")


def cosine_distance(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return 1.0 - dot / norm if norm > 0 else 1.0


class LocalVectorEngine:
    """`search_vectors` by exact cosine over the emulator's items, for `make dev` and the tests."""

    def __init__(self, client: Any, table: str, dimensions: int, index_name: str = INDEX_NAME,
                 partition_of: Callable[[str], str] = memory_pk) -> None:
        self.client = client
        self.table = table
        self.dimensions = dimensions
        self.index_name = index_name
        self.partition_of = partition_of  # where the items of one index partition live in the table

    def search_vectors(self, **request: Any) -> dict[str, Any]:
        if request.get("TableName") != self.table or request.get("IndexName") != self.index_name:
            raise ValidationException("Requested resource not found")
        top_k = request.get("TopK")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValidationException("TopK must be at least 1")
        query = [float(v["N"]) for v in request.get("SearchVector", [])]
        if len(query) != self.dimensions:
            raise ValidationException(f"The search vector has {len(query)} dimensions; the index has {self.dimensions}")
        names = request.get("ExpressionAttributeNames", {})
        values = request.get("ExpressionAttributeValues", {})
        equal: dict[str, Any] = {}
        for clause in re.split(r"\s+AND\s+", request.get("SearchConditionExpression", ""), flags=re.IGNORECASE):
            match = _CONDITION.match(clause)
            if match is None or match[2] not in values:
                raise ValidationException(f"Unsupported search condition: {clause!r}")
            equal[names.get(match[1], match[1])] = values[match[2]]
        partition = equal.get(USER_ATTRIBUTE, {}).get("S")
        if not partition:
            raise ValidationException(f"The search condition must give the partition attribute {USER_ATTRIBUTE}")
        scored: list[tuple[float, dict[str, Any]]] = []
        for raw in self._items(self.partition_of(partition)):
            if any(raw.get(name) != value for name, value in equal.items()):
                continue  # includes items without the partition attribute: they are not in the index
            vector = vector_from(raw)
            if vector is None or len(vector) != self.dimensions:
                continue
            scored.append((cosine_distance(query, vector), raw))
        scored.sort(key=lambda pair: pair[0])
        results = [{"Item": {k: v for k, v in raw.items() if k in ("pk", "sk", *PROJECTED)}, "Score": score}
                   for score, raw in scored[:top_k]]
        return {"SearchResults": results}

    def _items(self, pk: str) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :pk",
                                   "ExpressionAttributeValues": {":pk": {"S": pk}}, "ConsistentRead": True}
        items: list[dict[str, Any]] = []
        while True:
            response = self.client.query(**request)
            items.extend(response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                return items
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


class MemoryIndex:
    """Nearest memories of one user, through a `SearchVectors` client (DynamoDB's or the local engine)."""

    def __init__(self, store: MemoryStore, client: SearchClient, embedding_model: str, dimensions: int, *,
                 confirm: bool = True, index_name: str = INDEX_NAME) -> None:
        self.store = store
        self.client = client
        self.embedding_model = embedding_model
        self.dimensions = dimensions
        self.confirm = confirm  # re-read hits consistently (the DynamoDB index lags deletes)
        self.index_name = index_name

    def search(self, user_id: str, vector: Sequence[float], top_k: int) -> list[SearchHit]:
        request = search_request(self.store.table, user_id, vector, top_k, self.embedding_model, self.dimensions,
                                 self.index_name)
        response = self.client.search_vectors(**request)
        hits: list[SearchHit] = []
        for result in response.get("SearchResults", []):
            raw = result.get("Item", {})
            memory = item_from(user_id, raw)
            if memory is None or memory.embedding_model not in (None, self.embedding_model):
                # Never expected: the request names one user and one model. Dropped, and said loudly.
                get_logger().error("vector search returned a foreign item", extra={"index": self.index_name})
                continue
            hits.append(SearchHit(memory, float(result.get("Score", 2.0))))
        if self.confirm and hits:
            alive = self.store.exists(user_id, [hit.memory.id for hit in hits])
            hits = [hit for hit in hits if hit.memory.id in alive]
        return hits
