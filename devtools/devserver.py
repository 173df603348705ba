"""Local dev server: `python -m devtools.devserver` (or `make dev`).

Serves the chat app (`functions/chat/main.py:app`) with uvicorn on 127.0.0.1:${PORT:-8000}, streaming
exactly as under the Lambda Web Adapter. DynamoDB is chosen by `devtools.local_dynamodb`: the embedded
emulator (moto in its own process, data kept in `.dev/dynamodb/`) unless `LOCAL_DYNAMODB=aws` or
`DYNAMODB_ENDPOINT_URL` says otherwise; AWS credentials in the shell never switch to real AWS.
`--reset` (`make dev-reset`) starts the emulator empty. Auth defaults to `AUTH_MODE=none` (everyone
is `local-user`). Ctrl-C stops the server, then the emulator, which saves its data.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from devtools.function_modules import load_entry_module
from devtools.local_dynamodb import LocalDynamoDB, LocalDynamoDBError, local_dynamodb
from devtools.web_page import serve_web_page

DEFAULT_PORT = 8000

# Defaults for a laptop: no auth, local stage. Anything already in the environment wins.
LOCAL_DEFAULTS = {"AUTH_MODE": "none", "STAGE": "local", "LOG_LEVEL": "INFO", "RESUMABLE_STREAMS": "true"}
LOCAL_KEY_OWNER = "local-user"
LOCAL_KEY_TIER = "pro"
LOCAL_KEY_FILE = "local-api-key"


def usage_banner(base_url: str, database: LocalDynamoDB, api_key: str | None = None) -> str:
    """What to print at startup: where it runs and copy-pasteable curl commands."""
    # The mock model outside local use is refused (cost control): then the examples use DEFAULT_MODEL.
    local = os.environ.get("STAGE", "local") == "local"
    model = "mock/echo" if local or not os.environ.get("DEFAULT_MODEL") else os.environ["DEFAULT_MODEL"]
    chat_body = ('{"id":"demo-conversation","messages":[{"id":"m1","role":"user",'
                 f'"parts":[{{"type":"text","text":"Say hello"}}]}}],"trigger":"submit-message","model":"{model}"}}')
    sse_body = f'{{"messages":[{{"role":"user","content":"Say hello"}}],"model":"{model}"}}'
    openai_body = f'{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"Say hello"}}]}}'
    auth = f" -H 'x-api-key: {api_key}'" if api_key else ""
    lines = [
        f"Chat backend running at {base_url}  (Ctrl-C to stop)",
        f"  {database.describe()}",
        f"  auth: AUTH_MODE={os.environ.get('AUTH_MODE', '')}",
    ]
    if api_key:
        lines.append(f"  API key for {LOCAL_KEY_OWNER} (tier {LOCAL_KEY_TIER}): {api_key}  (header x-api-key)")
    return "\n".join([
        *lines,
        "",
        "AI SDK UI message stream (what useChat reads):",
        f"  curl -N {base_url}/api/chat -H 'content-type: application/json'{auth} \\",
        f"    -d '{chat_body}'",
        "",
        "Plain SSE:",
        f"  curl -N {base_url}/api/chat/sse -H 'content-type: application/json'{auth} \\",
        f"    -d '{sse_body}'",
        "",
        f"OpenAI-compatible (any OpenAI SDK with base URL {base_url}/v1):",
        f"  curl -N {base_url}/v1/chat/completions -H 'content-type: application/json'{auth} \\",
        f"    -d '{openai_body}'",
        "",
    ])


def local_api_key(database: LocalDynamoDB) -> str | None:
    """With `AUTH_MODE=api_key` on the embedded emulator: an API key for `local-user`, so the local
    server can be called at all (`make apikey` manages a deployed table's keys). It is kept beside
    the emulator's data and reused while the emulator still has it; `make dev-reset` makes a new one."""
    if os.environ.get("AUTH_MODE") != "api_key" or database.emulator is None:
        return None
    from chatcore.auth.api_keys import ApiKeyStore, hash_key
    from chatcore.dynamodb import dynamodb_client

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    store = ApiKeyStore(database.table_name, lambda: dynamodb_client(region, database.endpoint_url))
    saved = database.emulator.state_file.parent / LOCAL_KEY_FILE if database.emulator.state_file else None
    if saved is not None and saved.exists():
        key = saved.read_text().strip()
        record = store.lookup(hash_key(key)) if key else None
        if record is not None and record.active:
            return key
    key, _ = store.create(LOCAL_KEY_OWNER, LOCAL_KEY_TIER, "make dev")
    if saved is not None:
        saved.write_text(key + "\n")
        saved.chmod(0o600)
    return key


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.devserver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT),
                        help="port (default $PORT or 8000)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.add_argument("--reset", action="store_true",
                        help="start the embedded DynamoDB empty (the previous data is kept aside once)")
    parser.add_argument("--no-access-log", action="store_true", help="no uvicorn line per request")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start the emulator (if needed) and the chat app; block until Ctrl-C or SIGTERM."""
    args = parse_args(argv)
    for name, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # uvicorn re-raises the signal that stopped it once it is done; turning SIGTERM into
    # KeyboardInterrupt (like Ctrl-C) lets the emulator shut down instead of dying mid-flight.
    signal.signal(signal.SIGTERM, _interrupt)

    import uvicorn

    embedded = False
    try:
        with local_dynamodb(reset=args.reset) as database:
            embedded = database.emulator is not None
            # Imported only now: the app reads its settings (table, endpoint, auth) on import.
            app = load_entry_module("chat").app
            print(usage_banner(f"http://{args.host}:{args.port}", database, local_api_key(database)), flush=True)
            serve_web_page(app, f"http://{args.host}:{args.port}")  # examples/web at `/`
            uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=75,
                        access_log=not args.no_access_log)
    except KeyboardInterrupt:
        pass
    except LocalDynamoDBError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    if embedded:
        print("Embedded DynamoDB emulator stopped.", flush=True)
    print("Dev server stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
