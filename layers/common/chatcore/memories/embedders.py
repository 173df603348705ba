"""Embedders: text in, one vector per text out; one adapter per provider plus a local one.

An embedder's `name` says the model and the dimensions (`openai/text-embedding-3-small@256`): it is
stored on every memory item and is part of every search, so vectors of two models (or two sizes of
one model) are never compared. The local embedder hashes words and character trigrams into a
fixed-size vector (stable across processes: no Python `hash()`); it is the default for `make dev`
and the tests and needs no network.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from chatcore import errors
from chatcore.settings import Settings

if TYPE_CHECKING:  # httpx is imported on first use: the cold start does not pay for it
    import httpx

EMBED_TIMEOUT_S = 10.0
_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    name: str  # model and dimensions, e.g. "local/hash@256"
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector of `dimensions` floats per text, in order."""
        ...


def normalize(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else list(vector)


def _checked(name: str, dimensions: int, vectors: list[list[float]], count: int) -> list[list[float]]:
    if len(vectors) != count or any(len(v) != dimensions for v in vectors):
        raise errors.ServiceUnavailableError(f"The embedding model {name} returned vectors of the wrong shape.")
    return vectors


class LocalHashEmbedder:
    """Feature hashing of lower-cased words (weight 1) and their character trigrams (weight 0.5)."""

    def __init__(self, dimensions: int = 256) -> None:
        if dimensions < 8:
            raise ValueError("EMBEDDING_DIMENSIONS must be at least 8 for the local embedder")
        self.dimensions = dimensions
        self.name = f"local/hash@{dimensions}"

    def vector(self, text: str) -> list[float]:
        values = [0.0] * self.dimensions
        for word in _WORD.findall(text.lower()):
            features = [("w", word, 1.0)]
            padded = f" {word} "
            features += [("g", padded[i:i + 3], 0.5) for i in range(len(padded) - 2)]
            for kind, feature, weight in features:
                digest = hashlib.blake2b(f"{kind}:{feature}".encode(), digest_size=8).digest()
                number = int.from_bytes(digest, "big")
                values[number % self.dimensions] += weight if (number >> 63) & 1 else -weight
        return normalize(values)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]


class _HttpEmbedder:
    def __init__(self, model: str, dimensions: int, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.model = model
        self.dimensions = dimensions
        self._transport = transport

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        import httpx

        async with httpx.AsyncClient(transport=self._transport, timeout=EMBED_TIMEOUT_S) as client:
            try:
                response = await client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                raise errors.ServiceUnavailableError(f"The embedding model is unreachable: {type(exc).__name__}.") from exc
        if response.status_code >= 400:
            raise errors.ServiceUnavailableError(f"The embedding model answered HTTP {response.status_code}.")
        return response.json()


class OpenAIEmbedder(_HttpEmbedder):
    """OpenAI `/v1/embeddings` (`text-embedding-3-small` with `dimensions`), or any compatible server."""

    def __init__(self, model: str, dimensions: int, api_key: str | None, base_url: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(model, dimensions, transport)
        self.name = f"openai/{model}@{dimensions}"
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        body = {"model": self.model, "input": list(texts), "dimensions": self.dimensions, "encoding_format": "float"}
        data = await self._post(f"{self.base_url}/embeddings", body,
                                {"authorization": f"Bearer {self.api_key}"} if self.api_key else {})
        rows = sorted(data.get("data", []), key=lambda row: row.get("index", 0))
        return _checked(self.name, self.dimensions, [list(row["embedding"]) for row in rows], len(texts))


class GeminiEmbedder(_HttpEmbedder):
    """Gemini `models/<model>:batchEmbedContents` (`gemini-embedding-001`, `outputDimensionality`)."""

    def __init__(self, model: str, dimensions: int, api_key: str | None, base_url: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(model, dimensions, transport)
        self.name = f"gemini/{model}@{dimensions}"
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        body = {"requests": [{"model": f"models/{self.model}", "content": {"parts": [{"text": t}]},
                              "outputDimensionality": self.dimensions} for t in texts]}
        data = await self._post(f"{self.base_url}/v1beta/models/{self.model}:batchEmbedContents", body,
                                {"x-goog-api-key": self.api_key or ""})
        # Below 3072 dimensions Gemini's vectors are not normalized: cosine does not care, but be tidy.
        vectors = [normalize(row["values"]) for row in data.get("embeddings", [])]
        return _checked(self.name, self.dimensions, vectors, len(texts))


class OllamaEmbedder(_HttpEmbedder):
    """Ollama `/api/embed` (the model's own size: `EMBEDDING_DIMENSIONS` must match it)."""

    def __init__(self, model: str, dimensions: int, base_url: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(model, dimensions, transport)
        self.name = f"ollama/{model}@{dimensions}"
        self.base_url = base_url.rstrip("/")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        data = await self._post(f"{self.base_url}/api/embed", {"model": self.model, "input": list(texts)}, {})
        return _checked(self.name, self.dimensions, [list(v) for v in data.get("embeddings", [])], len(texts))


class BedrockTitanEmbedder:
    """Amazon Titan Text Embeddings V2 on Bedrock (`InvokeModel`, 256, 512 or 1024 dimensions)."""

    def __init__(self, model: str, dimensions: int, region: str, client: Any | None = None) -> None:
        if dimensions not in (256, 512, 1024):
            raise ValueError("Titan Text Embeddings V2 has 256, 512 or 1024 dimensions")
        self.model = model
        self.dimensions = dimensions
        self.name = f"bedrock/{model}@{dimensions}"
        self.region = region
        self._client = client

    def _one(self, text: str) -> list[float]:
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client("bedrock-runtime", region_name=self.region)
        body = json.dumps({"inputText": text, "dimensions": self.dimensions, "normalize": True})
        response = self._client.invoke_model(modelId=self.model, body=body, contentType="application/json",
                                             accept="application/json")
        return list(json.loads(response["body"].read())["embedding"])

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        # Titan embeds one text per call: the calls run side by side.
        vectors = await asyncio.gather(*(asyncio.to_thread(self._one, text) for text in texts))
        return _checked(self.name, self.dimensions, list(vectors), len(texts))


def build_embedder(settings: Settings) -> Embedder:
    """The embedder `EMBEDDING_MODEL` names (`<provider>/<model>`), at `EMBEDDING_DIMENSIONS`."""
    provider, _, model = settings.embedding_model.partition("/")
    dims = settings.embedding_dimensions
    if provider == "local":
        return LocalHashEmbedder(dims)
    if provider == "openai" and model:
        return OpenAIEmbedder(model, dims, settings.openai_api_key, settings.openai_base_url)
    if provider == "gemini" and model:
        return GeminiEmbedder(model, dims, settings.gemini_api_key, settings.gemini_base_url)
    if provider == "ollama" and model:
        return OllamaEmbedder(model, dims, settings.ollama_base_url or "http://127.0.0.1:11434")
    if provider == "bedrock" and model:
        return BedrockTitanEmbedder(model, dims, settings.aws_region)
    raise ValueError(f"EMBEDDING_MODEL must be local/hash, openai/<model>, gemini/<model>, ollama/<model> or "
                     f"bedrock/<model>; got {settings.embedding_model!r}")
