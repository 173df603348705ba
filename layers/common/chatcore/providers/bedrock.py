"""Amazon Bedrock ConverseStream through boto3, bridged to asyncio without blocking the loop.

boto3 is synchronous, so a worker thread runs `converse_stream` and feeds each event into an
asyncio queue with `loop.call_soon_threadsafe`. Leaving the async generator (client gone,
deadline) sets a stop flag and closes the boto3 event stream, which closes the HTTP connection
and ends the thread. The botocore read timeout is set explicitly (its 60 s default can fire
during long thinking pauses); the router's idle clock is the real stall guard.

The same event mapping serves two inputs: boto3's parsed event dicts (production) and raw
`application/vnd.amazon.eventstream` bytes decoded by botocore's own frame parser
(`BedrockStreamParser`, for the fixture tests and the parse benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from chatcore import errors
from chatcore.events import (
    Finish,
    FinishReason,
    ProviderEvent,
    ReasoningDelta,
    ResponseInfo,
    TextDelta,
    Usage,
    UsageReport,
)
from chatcore.messages import Message, ModelRequest
from chatcore.providers import http
from chatcore.providers.base import ProbeResult, provider_options, refuse_json_output
from chatcore.providers.decoders.eventstream import EventStreamDecoder
from chatcore.providers.request_body import alternate, attachment_name, input_object, json_text, tool_choice
from chatcore.providers.streaming import ToolCallStreams, add_counts, malformed, token_count, truncated
from chatcore.settings import Settings

READ_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 5.0
BEDROCK_OPTIONS = frozenset({"additionalModelRequestFields", "topP", "guardrailConfig", "performanceConfig",
                             "requestMetadata", "promptVariables"})

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
}

# HTTP errors before the stream (Error.Code in UpperCamel).
_ERROR_CODES: dict[str, type[errors.ProviderError]] = {
    "ValidationException": errors.BadRequestError,
    "AccessDeniedException": errors.PermissionDeniedError,
    "UnrecognizedClientException": errors.AuthenticationError,
    "ExpiredTokenException": errors.AuthenticationError,
    "InvalidSignatureException": errors.AuthenticationError,
    "ResourceNotFoundException": errors.ModelNotFoundError,
    "ModelTimeoutException": errors.ProviderTimeoutError,
    "ThrottlingException": errors.RateLimitedError,
    "ServiceQuotaExceededException": errors.QuotaExhaustedError,
    "ModelNotReadyException": errors.OverloadedError,
    "ServiceUnavailableException": errors.OverloadedError,
    "InternalServerException": errors.ServerError,
    "ModelErrorException": errors.ServerError,
}

# Exceptions inside a 200 stream (`:exception-type`, lowerCamel) and whether a retry can help.
_STREAM_EXCEPTIONS_RETRYABLE: dict[str, bool] = {
    "modelStreamErrorException": True,
    "throttlingException": True,
    "internalServerException": True,
    "serviceUnavailableException": True,
    "modelTimeoutException": True,
    "validationException": False,
}


def stream_exception(name: str, message: str, *, provider: str, model: str) -> errors.ProviderError:
    """An exception Bedrock sent inside a 200 stream, classified."""
    retryable = _STREAM_EXCEPTIONS_RETRYABLE.get(name, True)
    return errors.InStreamError(errors.safe_message(message or name), provider=provider, model=model,
                                http_status=200, retryable=retryable, provider_code=name)


def error_from_client_error(exc: Exception, *, provider: str, model: str) -> errors.ProviderError:
    """Any boto3/botocore failure as a classified provider error (never leaking credentials)."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.EventStreamError):
        err = exc.response.get("Error", {})
        return stream_exception(str(err.get("Code", "")), str(err.get("Message", "")), provider=provider,
                                model=model)
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = str(err.get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        cls = _ERROR_CODES.get(code) or http.classify_status(int(status or 500), code=code, message=message)
        if cls is errors.BadRequestError and http.classify_status(400, message=message) is errors.ContextTooLongError:
            cls = errors.ContextTooLongError
        return cls(errors.safe_message(message), provider=provider, model=model, http_status=status,
                   provider_code=code)
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectTimeoutError):
        return errors.ProviderTimeoutError("The provider timed out.", provider=provider, model=model)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return errors.AuthenticationError("No AWS credentials are available for Bedrock.", provider=provider,
                                          model=model)
    if isinstance(exc, bx.ParamValidationError):
        return errors.BadRequestError("The request is not valid for Bedrock.", provider=provider, model=model)
    if isinstance(exc, bx.ResponseStreamingError | bx.IncompleteReadError):
        return errors.TruncatedStreamError("The provider closed the connection before the answer was complete.",
                                           provider=provider, model=model)
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError | bx.HTTPClientError):
        return errors.NetworkError("Could not reach the provider.", provider=provider, model=model)
    return errors.ServerError("The provider failed unexpectedly.", provider=provider, model=model)


class BedrockEventMapper:
    """ConverseStream events (`name`, payload) to our events. Finishes once messageStop and metadata are in."""

    def __init__(self, provider: str = "bedrock", model: str = "") -> None:
        self.provider = provider
        self.model = model
        self.done = False
        self._stop_reason: str | None = None
        self._usage: Usage | None = None
        self._metadata_seen = False
        self._tools = ToolCallStreams()

    def handle(self, name: str, payload: Mapping[str, Any]) -> list[ProviderEvent]:
        if name == "contentBlockDelta":
            delta = payload.get("delta") or {}
            text = delta.get("text")
            if isinstance(text, str):
                return [TextDelta(text)] if text else []
            tool = delta.get("toolUse")
            if isinstance(tool, Mapping):
                piece = tool.get("input")
                return self._tools.append(payload.get("contentBlockIndex"), piece if isinstance(piece, str) else "")
            reasoning = (delta.get("reasoningContent") or {}).get("text")
            if isinstance(reasoning, str) and reasoning:
                return [ReasoningDelta(reasoning)]
            return []
        if name == "contentBlockStart":
            tool = (payload.get("start") or {}).get("toolUse")
            if isinstance(tool, Mapping):
                return self._tools.begin(payload.get("contentBlockIndex"), tool.get("toolUseId"), tool.get("name"))
            return []
        if name == "contentBlockStop":
            return self._tools.end(payload.get("contentBlockIndex"))
        if name == "messageStop":
            self._stop_reason = payload.get("stopReason") or "end_turn"
            return self._tools.end_all() + self._maybe_finish()
        if name == "metadata":
            # Usage arrives after messageStop, in this event.
            self._metadata_seen = True
            raw = payload.get("usage")
            out: list[ProviderEvent] = []
            if isinstance(raw, Mapping) and raw:
                cache_read = token_count(raw.get("cacheReadInputTokens"))
                input_tokens = token_count(raw.get("inputTokens"))
                if input_tokens is not None:
                    input_tokens = add_counts(input_tokens, cache_read, token_count(raw.get("cacheWriteInputTokens")))
                self._usage = Usage(input_tokens=input_tokens, output_tokens=token_count(raw.get("outputTokens")),
                                    cached_input_tokens=cache_read)
                out.append(UsageReport(self._usage))
            return out + self._maybe_finish()
        return []

    def handle_dict(self, event: Mapping[str, Any]) -> list[ProviderEvent]:
        """A boto3 event dict, `{name: payload}`."""
        out: list[ProviderEvent] = []
        for name, payload in event.items():
            out.extend(self.handle(name, payload if isinstance(payload, Mapping) else {}))
        return out

    def _maybe_finish(self) -> list[ProviderEvent]:
        if self.done or self._stop_reason is None or not self._metadata_seen:
            return []
        self.done = True
        return [Finish(reason=_FINISH.get(self._stop_reason, "other"), raw_reason=self._stop_reason,
                       usage=self._usage)]

    def truncated(self) -> errors.TruncatedStreamError:
        return truncated(self.provider, self.model)


class BedrockStreamParser:
    """Raw ConverseStream event-stream bytes to events (botocore's frame parser underneath)."""

    def __init__(self, provider: str = "bedrock", model: str = "") -> None:
        self.provider = provider
        self.model = model
        self.error: errors.ProviderError | None = None
        self._decoder = EventStreamDecoder()
        self._mapper = BedrockEventMapper(provider, model)

    def feed(self, chunk: bytes) -> list[ProviderEvent]:
        if self.error is not None or self._mapper.done:
            return []
        from botocore.eventstream import ParserError

        try:
            frames = self._decoder.feed(chunk)
        except (ParserError, ValueError):
            self.error = malformed(self.provider, self.model, "a corrupt event stream")
            return []
        out: list[ProviderEvent] = []
        for frame in frames:
            if frame.kind != "event":
                self.error = stream_exception(frame.name, str(frame.payload.get("message", "")),
                                              provider=self.provider, model=self.model)
                break
            out.extend(self._mapper.handle(frame.name, frame.payload))
            if self._mapper.done:
                break
        return out

    def close(self) -> list[ProviderEvent]:
        if self.error is not None:
            raise self.error
        if not self._mapper.done:
            raise self._mapper.truncated()
        return []


def _content(message: Message) -> list[dict[str, Any]]:
    """One domain message as Converse content blocks (Bedrock refuses blank text next to tool blocks)."""
    if message.role == "tool":
        blocks: list[dict[str, Any]] = []
        for result in message.tool_results:
            output = result.output
            value = {"json": output} if isinstance(output, dict) else {"text": json_text(output)}
            block: dict[str, Any] = {"toolUseId": result.call_id, "content": [value]}
            if result.is_error:
                block["status"] = "error"
            blocks.append({"toolResult": block})
        if message.content:
            blocks.append({"text": message.content})
        return blocks
    if message.attachments:
        # Converse refuses a document without a text block beside it: there always is one.
        blocks = _attachment_blocks(message)
        blocks.append({"text": message.content if message.content.strip() else "(attached)"})
    else:
        blocks = [{"text": message.content}] if message.content or not message.tool_calls else []
    blocks.extend({"toolUse": {"toolUseId": c.id, "name": c.name, "input": input_object(c.input)}}
                  for c in message.tool_calls)
    return blocks


_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_DOCUMENT_FORMATS = {"application/pdf": "pdf", "text/plain": "txt", "text/markdown": "md", "text/csv": "csv"}


def _attachment_blocks(message: Message) -> list[dict[str, Any]]:
    """Converse `image` / `document` blocks with the raw bytes (botocore base64-encodes them); document
    names unique within the message, as Converse requires."""
    blocks: list[dict[str, Any]] = []
    names: set[str] = set()
    for attachment in message.attachments:
        if attachment.media_type in _IMAGE_FORMATS:
            blocks.append({"image": {"format": _IMAGE_FORMATS[attachment.media_type],
                                     "source": {"bytes": attachment.data}}})
            continue
        name, n = attachment_name(attachment), 1
        while name in names:
            n += 1
            name = f"{attachment_name(attachment)} ({n})"
        names.add(name)
        blocks.append({"document": {"format": _DOCUMENT_FORMATS.get(attachment.media_type, "txt"), "name": name,
                                    "source": {"bytes": attachment.data}}})
    return blocks


def _messages(request: ModelRequest) -> list[dict[str, Any]]:
    """Converse messages (tool results in user turns), consecutive same-role turns merged (models behind
    Converse want alternation)."""
    return alternate(({"role": "assistant" if m.role == "assistant" else "user", "content": _content(m)}
                      for m in request.messages), first=lambda block: "toolResult" in block)


def _tool_config(request: ModelRequest) -> dict[str, Any] | None:
    """`toolConfig`; Converse has no "none", so "none" sends the tools (which a history with tool
    blocks requires) without a choice, or nothing when the history has none."""
    if not request.tools:
        return None
    choice = tool_choice(request)
    if choice == "none" and not any(m.tool_calls or m.tool_results for m in request.messages):
        return None
    config: dict[str, Any] = {"tools": [
        {"toolSpec": {"name": t.name, "description": t.description, "inputSchema": {"json": t.input_schema}}}
        for t in request.tools]}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice not in (None, "none"):
        config["toolChoice"] = {"tool": {"name": choice}}
    return config


class BedrockProvider:
    """Bedrock Runtime ConverseStream with the Lambda role's (or the environment's) AWS credentials."""

    def __init__(self, *, region: str, name: str = "bedrock", runtime_client: Any = None,
                 control_client: Any = None, read_timeout: float = READ_TIMEOUT_S,
                 endpoint_url: str | None = None) -> None:
        self.name = name
        self.region = region
        self.read_timeout = read_timeout
        self.endpoint_url = endpoint_url
        self._runtime = runtime_client
        self._control = control_client
        self._lock = threading.Lock()

    def _config(self, *, read_timeout: float, attempts: int) -> Any:
        from botocore.config import Config

        return Config(read_timeout=read_timeout, connect_timeout=CONNECT_TIMEOUT_S,
                      retries={"mode": "standard", "max_attempts": attempts}, max_pool_connections=50)

    def runtime_client(self) -> Any:
        """The `bedrock-runtime` client, created on first use (in a worker thread) and reused."""
        with self._lock:
            if self._runtime is None:
                import boto3

                self._runtime = boto3.session.Session().client(
                    "bedrock-runtime", region_name=self.region, endpoint_url=self.endpoint_url,
                    config=self._config(read_timeout=self.read_timeout, attempts=3))
            return self._runtime

    def control_client(self, timeout: float) -> Any:
        """The `bedrock` control-plane client (health probes only), created on first use."""
        with self._lock:
            if self._control is None:
                import boto3

                self._control = boto3.session.Session().client(
                    "bedrock", region_name=self.region, config=self._config(read_timeout=timeout, attempts=1))
            return self._control

    def build_params(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments of `converse_stream` for this request."""
        refuse_json_output(request, self.name)
        options = provider_options(request, "bedrock", BEDROCK_OPTIONS)
        inference: dict[str, Any] = {}
        if request.max_output_tokens is not None:
            inference["maxTokens"] = request.max_output_tokens
        if request.temperature is not None:
            inference["temperature"] = request.temperature
        if request.stop:
            inference["stopSequences"] = list(request.stop)
        if request.top_p is not None:
            inference["topP"] = request.top_p
        if "topP" in options:
            inference["topP"] = options.pop("topP")
        params: dict[str, Any] = {"modelId": request.model, "messages": _messages(request)}
        if request.system:
            params["system"] = [{"text": request.system}]
        tool_config = _tool_config(request)
        if tool_config is not None:
            params["toolConfig"] = tool_config
        if inference:
            params["inferenceConfig"] = inference
        params.update(options)
        return params

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        """Stream one answer as events; raises a classified `ProviderError` on failure."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        handle: dict[str, Any] = {}
        params = self.build_params(request)

        def put(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def worker() -> None:
            try:
                response = self.runtime_client().converse_stream(**params)
                event_stream = handle["stream"] = response["stream"]
                put("info", response.get("ResponseMetadata", {}).get("RequestId"))
                for event in event_stream:
                    if stop.is_set():
                        return
                    put("event", event)
                put("end", None)
            except Exception as exc:
                if not stop.is_set():
                    put("error", exc)
            finally:
                if "stream" in handle:
                    with contextlib.suppress(Exception):
                        handle["stream"].close()

        mapper = BedrockEventMapper(self.name, request.model)
        threading.Thread(target=worker, name="bedrock-converse-stream", daemon=True).start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "event":
                    for event in mapper.handle_dict(value):
                        yield event
                elif kind == "info":
                    yield ResponseInfo(model=request.model, response_id=value)
                elif kind == "error":
                    raise error_from_client_error(value, provider=self.name, model=request.model)
                else:
                    if not mapper.done:
                        raise mapper.truncated()
                    return
        finally:
            # Client gone or deadline: stop the thread and close the connection now, not at EOF.
            stop.set()
            if "stream" in handle:
                with contextlib.suppress(Exception):
                    handle["stream"].close()

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        """Control-plane `ListFoundationModels` (free; bedrock-runtime has no list call), in a thread."""
        started = time.perf_counter()

        def call() -> None:
            self.control_client(timeout).list_foundation_models(byOutputModality="TEXT")

        try:
            await asyncio.wait_for(asyncio.to_thread(call), timeout=timeout + 1.0)
        except TimeoutError:
            return ProbeResult("down", (time.perf_counter() - started) * 1000, "timeout")
        except Exception as exc:
            error = error_from_client_error(exc, provider=self.name, model="")
            return ProbeResult("down", (time.perf_counter() - started) * 1000, error.provider_code or error.code)
        return ProbeResult("up", (time.perf_counter() - started) * 1000)


def from_settings(settings: Settings) -> BedrockProvider | None:
    """The provider when `BEDROCK_ENABLED` is true (credentials come from the usual AWS chain)."""
    if not settings.bedrock_enabled:
        return None
    return BedrockProvider(region=settings.aws_region)
