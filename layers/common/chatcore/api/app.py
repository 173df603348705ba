"""The chat app: wiring only. Routes live in `chat_routes`, `openai_routes`, `conversations`; the turn in
`service.chat`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from chatcore.api.body_limit import BodySizeLimit
from chatcore.api.chat_routes import router as chat_router
from chatcore.api.conversations import router as conversations_router
from chatcore.api.errors import StorageErrors, install_error_handlers
from chatcore.api.files_routes import router as files_router
from chatcore.api.memories_routes import router as memories_router
from chatcore.api.models import router as models_router
from chatcore.api.openai_routes import router as openai_router
from chatcore.api.resume_routes import router as resume_router
from chatcore.attachments import build_attachments
from chatcore.attachments.service import Attachments
from chatcore.auth import Authenticator, build_authenticator
from chatcore.conversations import dynamo_memory
from chatcore.conversations.memory import Memory, StatelessMemory
from chatcore.conversations.store import ConversationStore
from chatcore.conversations.stream_log import StreamLog
from chatcore.limits import Limiter, build_limiter
from chatcore.memories import LongTermMemory, build_long_term_memory
from chatcore.providers import ProviderRegistry
from chatcore.routing.router import Router
from chatcore.service.cache import ResponseCache, build_cache
from chatcore.service.chat import ChatService
from chatcore.settings import Settings, get_settings

# Headers a browser on another origin may read (the Function URL's CORS lists the same).
EXPOSED_HEADERS = ["x-request-id", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining",
                   "x-ratelimit-reset", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                   "x-chat-deployment", "x-chat-fallbacks", "x-chat-cache"]


@dataclass
class Components:
    """What the app is wired from; each has a no-storage default for local use and tests."""

    settings: Settings
    providers: ProviderRegistry
    authenticator: Authenticator
    limiter: Limiter
    memory: Memory
    conversations: ConversationStore | None = None  # the history API's store; None when MEMORY=none
    router: Router | None = None  # built from `providers` when not given
    cache: ResponseCache | None = None  # the opt-in response cache; None: no caching
    attachments: Attachments | None = None  # files in S3 (ATTACHMENTS_BUCKET); None: inline files, stateless only
    memories: LongTermMemory | None = None  # long-term memory per user; None: off
    stream_log: StreamLog | None = None  # resumable streams; built from `conversations` when RESUMABLE_STREAMS


def default_components(settings: Settings, providers: ProviderRegistry | None = None) -> Components:
    providers = providers or ProviderRegistry(settings)
    router = Router(settings, providers)
    # MEMORY=dynamodb (the default when a table is configured) keeps history server-side.
    # LONG_TERM_MEMORY (on with stored history): extraction after each turn, recall on the chat path.
    memories = (build_long_term_memory(settings, router)
                if settings.memory == "dynamodb" and settings.long_term_memory else None)
    stored = (dynamo_memory(settings, router, (memories.extractor,) if memories else ())
              if settings.memory == "dynamodb" else None)
    return Components(
        settings=settings,
        providers=providers,
        authenticator=build_authenticator(settings),  # AUTH_MODE; refuses `none` inside Lambda
        limiter=build_limiter(settings),  # LIMITS_ENABLED
        memory=stored or StatelessMemory(),
        conversations=stored.store if stored else None,
        router=router,
        cache=build_cache(settings),  # CACHE_STORE: dynamodb (with a table) or none
        attachments=build_attachments(settings),  # ATTACHMENTS_BUCKET: S3 storage of files
        memories=memories,
    )


def create_app(settings: Settings | None = None, providers: ProviderRegistry | None = None,
               components: Components | None = None) -> FastAPI:
    settings = settings or (components.settings if components else get_settings())
    parts = components or default_components(settings, providers)
    router = parts.router or Router(settings, parts.providers)

    app = FastAPI(title="Streaming chat backend", version="0.1.0", docs_url="/docs", redoc_url=None)
    app.state.components = parts
    # RESUMABLE_STREAMS needs the stored history (the log lives in the conversation's partition).
    app.state.stream_log = parts.stream_log or (
        StreamLog(settings, client=parts.conversations.client)
        if settings.resumable_streams and parts.conversations is not None else None)
    if parts.attachments is None:
        parts.attachments = Attachments(settings)
    app.state.chat = ChatService(settings, router, memory=parts.memory, limiter=parts.limiter, cache=parts.cache,
                                 attachments=parts.attachments,
                                 recall=parts.memories.recall if parts.memories else None)
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(resume_router)
    app.include_router(conversations_router)
    app.include_router(files_router)
    app.include_router(memories_router)
    app.include_router(models_router)
    app.include_router(openai_router)

    # Added before CORS, so CORS stays outermost and even a 413 or a 503 carries its headers.
    app.add_middleware(StorageErrors)
    # The chat routes take inline files (data URLs): their own, larger limit (MAX_CHAT_BODY_BYTES).
    chat_limit = max(settings.chat_body_limit, settings.max_body_bytes)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       path_limits={"/api/chat": chat_limit, "/api/chat/sse": chat_limit})

    if settings.cors_in_app:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["content-type", "authorization", "x-api-key", "x-chat-cache"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Readiness for the Web Adapter: no provider or database calls."""
        return JSONResponse({"status": "ok"})

    return app
