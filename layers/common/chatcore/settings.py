"""Typed settings, read once from the environment (see the README for every variable)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

OPENAI_BASE_URL = "https://api.openai.com/v1"  # the OpenAI default, defined once


def _str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


def _list(name: str, default: str = "") -> tuple[str, ...]:
    return tuple(part.strip() for part in _str(name, default).split(",") if part.strip())


def in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def _memory_backend() -> str:
    """`MEMORY`, or dynamodb when a table is configured (TABLE_NAME or DYNAMODB_ENDPOINT_URL), else none."""
    raw = _str("MEMORY").lower()
    if not raw:
        return "dynamodb" if (_str("TABLE_NAME") or _str("DYNAMODB_ENDPOINT_URL")) else "none"
    if raw not in ("dynamodb", "none"):
        raise ValueError(f"MEMORY must be 'dynamodb' or 'none', got {raw!r}")
    return raw


def _breaker_store() -> str:
    """`BREAKER_STORE`, or dynamodb when a table is configured (TABLE_NAME or DYNAMODB_ENDPOINT_URL), else memory."""
    raw = _str("BREAKER_STORE").lower()
    if not raw:
        return "dynamodb" if (_str("TABLE_NAME") or _str("DYNAMODB_ENDPOINT_URL")) else "memory"
    if raw not in ("dynamodb", "memory"):
        raise ValueError(f"BREAKER_STORE must be 'dynamodb' or 'memory', got {raw!r}")
    return raw


def _cache_store() -> str:
    """`CACHE_STORE`, or dynamodb when a table is configured (TABLE_NAME or DYNAMODB_ENDPOINT_URL), else none."""
    raw = _str("CACHE_STORE").lower()
    if not raw:
        return "dynamodb" if (_str("TABLE_NAME") or _str("DYNAMODB_ENDPOINT_URL")) else "none"
    if raw not in ("dynamodb", "none"):
        raise ValueError(f"CACHE_STORE must be 'dynamodb' or 'none', got {raw!r}")
    return raw


def _cache_scope() -> str:
    """`CACHE_SCOPE`: `user` (each caller's own entries) or `tenant:<name>` (every caller shares them)."""
    raw = _str("CACHE_SCOPE", "user")
    if raw != "user" and not (raw.startswith("tenant:") and len(raw) > len("tenant:")):
        raise ValueError(f"CACHE_SCOPE must be 'user' or 'tenant:<name>', got {raw!r}")
    return raw


def _vector_index() -> str:
    """`MEMORY_VECTOR_INDEX`: dynamodb (the table's vector index, SearchVectors) in Lambda, else local."""
    raw = _str("MEMORY_VECTOR_INDEX").lower() or ("dynamodb" if in_lambda() else "local")
    if raw not in ("dynamodb", "local"):
        raise ValueError(f"MEMORY_VECTOR_INDEX must be 'dynamodb' or 'local', got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    stage: str = "local"
    default_model: str = "mock/echo"
    table_name: str = "chat-local"
    dynamodb_endpoint_url: str | None = None
    aws_region: str = "us-east-1"

    openai_api_key: str | None = None
    openai_base_url: str = OPENAI_BASE_URL
    anthropic_api_key: str | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    gemini_api_key: str | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    ollama_base_url: str | None = None
    bedrock_enabled: bool = False
    secret_names: dict[str, str] = field(default_factory=dict)

    mock_provider: bool = True  # STAGE=local, or MOCK_PROVIDER=true (unsafe in production)
    allow_ad_hoc_models: bool = True  # `provider/model` outside the registry; default: only when STAGE=local
    allow_unpriced_models: bool = True  # deployments without prices; default: only when STAGE=local
    mock_ttft_ms: float = 100.0
    mock_pace_ms: float = 20.0
    mock_tokens: int = 40

    first_token_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    max_stream_s: float = 840.0
    deadline_margin_s: float = 5.0
    max_output_tokens: int = 4096
    keepalive_s: float | None = 15.0  # a `: ping` SSE comment after this long without output; 0 turns it off

    cors_allow_origins: tuple[str, ...] = ("*",)
    cors_in_app: bool = True
    max_body_bytes: int = 1_048_576
    max_messages: int = 500
    max_message_chars: int = 100_000
    allow_client_system_prompt: bool = False
    system_prompt: str | None = None

    # Conversation memory and summarization (docs/data-model.md).
    memory: str = "none"  # dynamodb | none; defaults to dynamodb when TABLE_NAME or DYNAMODB_ENDPOINT_URL is set
    conversation_ttl_days: int = 30  # 0 keeps items forever
    max_stored_message_bytes: int = 300_000  # below DynamoDB's 400 KB item limit, with room for attributes
    history_max_chars: int = 2_000_000  # the most unsummarized history one turn reads
    summarize_function_name: str | None = None
    summary_model: str = "mock/echo"
    summary_trigger_tokens: int = 6_000  # 0 turns summarization off
    summary_keep_recent: int = 6
    summary_max_input_chars: int = 200_000

    # Resumable streams and the stop endpoint (README "Resume and stop").
    resumable_streams: bool = False  # log each answer's chunks in DynamoDB; a dropped client no longer cancels it
    stream_flush_ms: int = 2000  # how often the log is written (a stop from elsewhere is checked every 1 s between)

    # Authentication and limits (docs/security.md).
    auth_mode: str = "none"  # none | jwt | api_key; in Lambda it must be set explicitly
    auth_allow_none_in_lambda: bool = False
    jwt_issuer: str | None = None
    jwt_audience: tuple[str, ...] = ()
    jwt_jwks_url: str | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwt_tier_claim: str | None = None
    jwt_leeway_s: float = 30.0
    api_key_cache_ttl_s: float = 60.0
    limits_enabled: bool = False
    limits_json: str | None = None
    limits_fail_open: tuple[str, ...] = ()
    lease_ttl_s: float = 900.0

    # Routing, fallback, circuit breaker and health (docs/routing.md).
    model_registry_json: str | None = None
    model_access_json: str | None = None  # tier -> allowed model names or patterns (routing/access.py)
    model_registry_file: str | None = None
    model_registry_parameter: str | None = None
    breaker_store: str = "memory"  # dynamodb | memory; defaults to dynamodb when a table is configured
    breaker_failure_threshold: int = 3
    breaker_cooldown_s: float = 30.0
    breaker_unhealthy_cooldown_s: float = 300.0  # after a bad key, exhausted quota or a failed probe
    breaker_cache_ttl_s: float = 5.0
    router_max_attempts: int = 4
    router_retries_per_deployment: int = 1
    router_backoff_base_s: float = 0.2
    router_backoff_cap_s: float = 2.0
    router_max_retry_after_s: float = 5.0
    health_probe_token: str | None = None  # local use; in Lambda the token comes from a secret
    health_probe_token_secret: str | None = None  # "ssm:/path" or a Secrets Manager name (chatcore.secrets)
    health_probe_timeout_s: float = 5.0

    # Tools (README "Tools"): the operator's server tools and the steps of one turn.
    tools_json: str | None = None
    tools_file: str | None = None
    tools_parameter: str | None = None
    # Set by the template to "<stack>/tools/": the only secrets the chat role may read for tool headers.
    tool_secret_prefix: str | None = None
    max_tool_steps: int = 5  # model calls in one turn with tool calls

    # The opt-in response cache (docs/cache.md).
    cache_store: str = "none"  # dynamodb | none; defaults to dynamodb when a table is configured
    cache_ttl_s: int = 86_400
    cache_scope: str = "user"  # user | tenant:<name>
    cache_nondeterministic: bool = False  # also cache requests without temperature 0
    cache_max_bytes: int = 350_000  # larger answers are not cached (DynamoDB items hold 400 KB)

    # Attachments (README "Attachments"): files in S3, references in the history.
    attachments_bucket: str | None = None  # None: no storage (inline files only in stateless chats)
    s3_endpoint_url: str | None = None  # the local emulator's S3
    attachments_max_inline_bytes: int = 4 * 1024 * 1024  # one data URL's decoded bytes
    max_chat_body_bytes: int = 0  # /api/chat bodies (inline files); 0: MAX_BODY_BYTES
    attachments_daily_files: int = 100  # per caller and UTC day; 0: no quota
    attachments_daily_bytes: int = 200 * 1024 * 1024
    attachments_replay_bytes: int = 8 * 1024 * 1024  # attachment bytes of earlier turns resent to a model
    attachments_url_ttl_s: int = 3600  # presigned GETs of the history API
    attachments_ttl_days: int = 30  # the bucket's lifecycle expiry; the file items' TTL

    @property
    def chat_body_limit(self) -> int:
        """The largest `/api/chat` body: room for an inline file's data URL."""
        return self.max_chat_body_bytes or self.max_body_bytes
    # Long-term memory per user (README "Long-term memory", docs/data-model.md).
    long_term_memory: bool = False  # defaults to on when MEMORY=dynamodb
    embedding_model: str = "local/hash"  # local/hash | bedrock/... | openai/... | gemini/... | ollama/...
    embedding_dimensions: int = 256
    memory_vector_index: str = "local"  # dynamodb (SearchVectors) | local (exact scan); dynamodb in Lambda
    memory_digest_size: int = 20  # memories read with the history on every turn
    memory_search_top_k: int = 8
    memory_search_timeout_ms: float = 300.0
    memory_prompt_tokens: int = 300  # cap of the memory block in the system prompt

    @classmethod
    def from_env(cls) -> Settings:
        openai_key = _str("OPENAI_API_KEY") or None
        anthropic_key = _str("ANTHROPIC_API_KEY") or None
        gemini_key = _str("GEMINI_API_KEY") or None
        secret_names = {
            provider: name
            for provider, name in (
                ("openai", _str("OPENAI_API_KEY_SECRET")),
                ("anthropic", _str("ANTHROPIC_API_KEY_SECRET")),
                ("gemini", _str("GEMINI_API_KEY_SECRET")),
            )
            if name
        }
        default_model = _str("DEFAULT_MODEL")
        if not default_model:
            # With any real provider configured, the registry's cross-provider `default` chain;
            # with none (a fresh checkout), the mock's echo.
            real_provider = (openai_key or anthropic_key or gemini_key or secret_names or _str("OLLAMA_BASE_URL")
                             or _bool("BEDROCK_ENABLED", False) or _str("OPENAI_BASE_URL"))
            default_model = "default" if real_provider else "mock/echo"
        stage = _str("STAGE", "local")
        local = stage == "local"
        memory = _memory_backend()
        # No provider key (a fresh checkout): summaries and memory extraction by the deterministic mock.
        summary_model = _str("SUMMARY_MODEL") or ("mock/summarize" if default_model == "mock/echo" else default_model)
        return cls(
            stage=stage,
            mock_provider=_bool("MOCK_PROVIDER", local),
            allow_ad_hoc_models=_bool("ALLOW_AD_HOC_MODELS", local),
            allow_unpriced_models=_bool("ALLOW_UNPRICED_MODELS", local),
            default_model=default_model,
            table_name=_str("TABLE_NAME", "chat-local"),
            dynamodb_endpoint_url=_str("DYNAMODB_ENDPOINT_URL") or None,
            aws_region=_str("AWS_REGION", _str("AWS_DEFAULT_REGION", "us-east-1")),
            openai_api_key=openai_key,
            openai_base_url=_str("OPENAI_BASE_URL", OPENAI_BASE_URL),
            anthropic_api_key=anthropic_key,
            anthropic_base_url=_str("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            gemini_api_key=gemini_key,
            gemini_base_url=_str("GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
            ollama_base_url=_str("OLLAMA_BASE_URL") or None,
            bedrock_enabled=_bool("BEDROCK_ENABLED", False),
            secret_names=secret_names,
            mock_ttft_ms=_float("MOCK_TTFT_MS", 100.0),
            mock_pace_ms=_float("MOCK_PACE_MS", 20.0),
            mock_tokens=_int("MOCK_TOKENS", 40),
            first_token_timeout_s=_float("FIRST_TOKEN_TIMEOUT_S", 30.0),
            idle_timeout_s=_float("IDLE_TIMEOUT_S", 60.0),
            max_stream_s=_float("MAX_STREAM_S", 840.0),
            deadline_margin_s=_float("DEADLINE_MARGIN_S", 5.0),
            max_output_tokens=_int("MAX_OUTPUT_TOKENS", 4096),
            keepalive_s=_float("KEEPALIVE_S", 15.0) or None,
            cors_allow_origins=_list("CORS_ALLOW_ORIGINS", "*"),
            cors_in_app=_bool("CORS_IN_APP", not in_lambda()),
            max_body_bytes=_int("MAX_BODY_BYTES", 1_048_576),
            max_messages=_int("MAX_MESSAGES", 500),
            max_message_chars=_int("MAX_MESSAGE_CHARS", 100_000),
            allow_client_system_prompt=_bool("ALLOW_CLIENT_SYSTEM_PROMPT", False),
            system_prompt=_str("SYSTEM_PROMPT") or None,
            memory=memory,
            conversation_ttl_days=_int("CONVERSATION_TTL_DAYS", 30),
            resumable_streams=_bool("RESUMABLE_STREAMS", False),
            stream_flush_ms=max(_int("STREAM_FLUSH_MS", 2000), 50),
            max_stored_message_bytes=_int("MAX_STORED_MESSAGE_BYTES", 300_000),
            history_max_chars=_int("HISTORY_MAX_CHARS", 2_000_000),
            summarize_function_name=_str("SUMMARIZE_FUNCTION_NAME") or None,
            summary_model=summary_model,
            summary_trigger_tokens=_int("SUMMARY_TRIGGER_TOKENS", 6_000),
            summary_keep_recent=_int("SUMMARY_KEEP_RECENT", 6),
            summary_max_input_chars=_int("SUMMARY_MAX_INPUT_CHARS", 200_000),
            auth_mode=_str("AUTH_MODE", "" if in_lambda() else "none").lower(),
            auth_allow_none_in_lambda=_bool("AUTH_ALLOW_NONE_IN_LAMBDA", False),
            jwt_issuer=_str("JWT_ISSUER") or None,  # exact, as in the `iss` claim
            jwt_audience=_list("JWT_AUDIENCE"),
            jwt_jwks_url=_str("JWT_JWKS_URL") or None,
            jwt_algorithms=_list("JWT_ALGORITHMS", "RS256,ES256"),
            jwt_tier_claim=_str("JWT_TIER_CLAIM") or None,
            jwt_leeway_s=_float("JWT_LEEWAY_S", 30.0),
            api_key_cache_ttl_s=_float("API_KEY_CACHE_TTL_S", 60.0),
            limits_enabled=_bool("LIMITS_ENABLED", in_lambda()),
            limits_json=_str("LIMITS_JSON") or None,
            limits_fail_open=_list("LIMITS_FAIL_OPEN"),
            lease_ttl_s=_float("LEASE_TTL_S", 900.0),
            model_registry_json=_str("MODEL_REGISTRY_JSON") or None,
            model_access_json=_str("MODEL_ACCESS_JSON") or None,
            model_registry_file=_str("MODEL_REGISTRY_FILE") or None,
            model_registry_parameter=_str("MODEL_REGISTRY_PARAMETER") or None,
            breaker_store=_breaker_store(),
            breaker_failure_threshold=_int("BREAKER_FAILURE_THRESHOLD", 3),
            breaker_cooldown_s=_float("BREAKER_COOLDOWN_S", 30.0),
            breaker_unhealthy_cooldown_s=_float("BREAKER_UNHEALTHY_COOLDOWN_S", 300.0),
            breaker_cache_ttl_s=_float("BREAKER_CACHE_TTL_S", 5.0),
            router_max_attempts=_int("ROUTER_MAX_ATTEMPTS", 4),
            router_retries_per_deployment=_int("ROUTER_RETRIES_PER_DEPLOYMENT", 1),
            router_backoff_base_s=_float("ROUTER_BACKOFF_BASE_S", 0.2),
            router_backoff_cap_s=_float("ROUTER_BACKOFF_CAP_S", 2.0),
            router_max_retry_after_s=_float("ROUTER_MAX_RETRY_AFTER_S", 5.0),
            health_probe_token=_str("HEALTH_PROBE_TOKEN") or None,
            health_probe_token_secret=_str("HEALTH_PROBE_TOKEN_SECRET") or None,
            health_probe_timeout_s=_float("HEALTH_PROBE_TIMEOUT_S", 5.0),
            tools_json=_str("TOOLS_JSON") or None,
            tools_file=_str("TOOLS_FILE") or None,
            tools_parameter=_str("TOOLS_PARAMETER") or None,
            tool_secret_prefix=_str("TOOL_SECRET_PREFIX") or None,
            max_tool_steps=max(_int("MAX_TOOL_STEPS", 5), 1),
            cache_store=_cache_store(),
            cache_ttl_s=_int("CACHE_TTL_S", 86_400),
            cache_scope=_cache_scope(),
            cache_nondeterministic=_bool("CACHE_NONDETERMINISTIC", False),
            cache_max_bytes=_int("CACHE_MAX_BYTES", 350_000),
            attachments_bucket=_str("ATTACHMENTS_BUCKET") or None,
            s3_endpoint_url=_str("S3_ENDPOINT_URL") or None,
            attachments_max_inline_bytes=_int("ATTACHMENTS_MAX_INLINE_BYTES", 4 * 1024 * 1024),
            # A 4 MiB file is a 5.6 MB data URL, under the Function URL's 6 MB request limit.
            max_chat_body_bytes=_int("MAX_CHAT_BODY_BYTES", 5_900_000),
            attachments_daily_files=_int("ATTACHMENTS_DAILY_FILES", 100),
            attachments_daily_bytes=_int("ATTACHMENTS_DAILY_BYTES", 200 * 1024 * 1024),
            attachments_replay_bytes=_int("ATTACHMENTS_REPLAY_BYTES", 8 * 1024 * 1024),
            attachments_url_ttl_s=_int("ATTACHMENTS_URL_TTL_S", 3600),
            attachments_ttl_days=_int("ATTACHMENTS_TTL_DAYS", 30),
            long_term_memory=_bool("LONG_TERM_MEMORY", memory == "dynamodb"),
            embedding_model=_str("EMBEDDING_MODEL", "local/hash"),
            embedding_dimensions=_int("EMBEDDING_DIMENSIONS", 256),
            memory_vector_index=_vector_index(),
            memory_digest_size=_int("MEMORY_DIGEST_SIZE", 20),
            memory_search_top_k=_int("MEMORY_SEARCH_TOP_K", 8),
            memory_search_timeout_ms=_float("MEMORY_SEARCH_TIMEOUT_MS", 300.0),
            memory_prompt_tokens=_int("MEMORY_PROMPT_TOKENS", 300),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read on first use (cold start), then cached."""
    return Settings.from_env()
