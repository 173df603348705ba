"""One exception hierarchy for every failure: provider, client input, limits.

Each error knows its HTTP status and a message that is safe to show a client. The mapping to
HTTP responses and to in-stream error events happens in exactly one place (`api.errors`).
"""

from __future__ import annotations

import re
from typing import Any


class ChatError(Exception):
    """Base of every error this backend raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.details = details

    def public_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.details:
            body["error"].update(self.details)
        return body


# --- Client input and access -------------------------------------------------------------


class RequestError(ChatError):
    status_code = 400
    code = "bad_request"


class UnknownModelError(RequestError):
    """The request names a model that is neither in the registry nor a configured `provider/model`.

    A 400 `bad_request` on the chat endpoints; the OpenAI-compatible API answers it as OpenAI does,
    404 `model_not_found`.
    """


class UnauthorizedError(ChatError):
    """No credentials were sent (answered with a bare `WWW-Authenticate: Bearer` challenge)."""

    status_code = 401
    code = "unauthorized"


class InvalidCredentialsError(UnauthorizedError):
    """Credentials were sent but are invalid, expired or revoked (RFC 6750 `invalid_token`)."""

    code = "invalid_token"


class ForbiddenError(ChatError):
    status_code = 403
    code = "forbidden"


class NotFoundError(ChatError):
    status_code = 404
    code = "not_found"


class ConflictError(ChatError):
    """The request conflicts with one already being handled (the same message, twice at once)."""

    status_code = 409
    code = "conflict"


class PayloadTooLargeError(ChatError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ChatError):
    """A file whose type is not allowed, or whose bytes are not what its declared type says."""

    status_code = 415
    code = "unsupported_media_type"


class LimitExceededError(ChatError):
    status_code = 429
    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None,
                 headers: dict[str, str] | None = None, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.headers = headers or {}


class ServiceUnavailableError(ChatError):
    status_code = 503
    code = "service_unavailable"
    retryable = True


class StorageUnavailableError(ServiceUnavailableError):
    """The database is unreachable, throttled after the SDK's retries, or its table is missing."""

    code = "storage_unavailable"


# --- Provider failures -----------------------------------------------------------------


class ProviderError(ChatError):
    """A model provider failed. Carries who failed, how, and whether a retry can help."""

    status_code = 502
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        http_status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        provider_code: str | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.provider = provider
        self.model = model
        self.http_status = http_status
        self.provider_code = provider_code
        if retryable is not None:
            self.retryable = retryable

    def public_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "provider": self.provider}}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(provider={self.provider!r}, model={self.model!r}, "
                f"http_status={self.http_status}, retryable={self.retryable}, "
                f"retry_after={self.retry_after}, message={self.message!r})")


class AuthenticationError(ProviderError):
    code = "provider_authentication"


class PermissionDeniedError(ProviderError):
    code = "provider_permission_denied"


class ModelNotFoundError(ProviderError):
    status_code = 404
    code = "model_not_found"


class BadRequestError(ProviderError):
    status_code = 400
    code = "provider_bad_request"


class ContextTooLongError(ProviderError):
    status_code = 413
    code = "context_too_long"


class ContentFilteredError(ProviderError):
    status_code = 400
    code = "content_filtered"


class RateLimitedError(ProviderError):
    status_code = 429
    code = "provider_rate_limited"
    retryable = True


class QuotaExhaustedError(ProviderError):
    """A 429 that will not clear by waiting (e.g. OpenAI `insufficient_quota`)."""

    status_code = 429
    code = "provider_quota_exhausted"


class OverloadedError(ProviderError):
    status_code = 503
    code = "provider_overloaded"
    retryable = True


class ServerError(ProviderError):
    code = "provider_server_error"
    retryable = True


class ProviderTimeoutError(ProviderError):
    status_code = 504
    code = "provider_timeout"
    retryable = True


class NetworkError(ProviderError):
    code = "provider_network_error"
    retryable = True


class InStreamError(ProviderError):
    """The provider reported an error inside a stream that had started with HTTP 200."""

    code = "provider_stream_error"


class TruncatedStreamError(ProviderError):
    """The connection closed without the provider's end marker: never a silent success."""

    code = "provider_stream_truncated"
    retryable = True


# --- Text safe to show a client ---------------------------------------------------------

_SECRETISH = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6,}"  # OpenAI / Anthropic style keys
    r"|AIza[0-9A-Za-z_\-]{10,}"  # Google API keys
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r"|cbk_[A-Za-z0-9_\-]{8,}"  # this backend's own API keys
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWTs
    r"|key=[^&\s\"']+"
    r"|Bearer\s+\S+"
    r"|(?i:x-api-key|x-goog-api-key|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?[^\s\"',}]+)"
)


def safe_message(text: str, limit: int = 300) -> str:
    """Text from a provider or a tool made fit for a client: secrets masked, length bounded."""
    cleaned = _SECRETISH.sub("[redacted]", text or "").strip()
    return cleaned[:limit] or "The provider returned an error."
