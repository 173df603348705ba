"""The embedded AWS emulator: moto's server in its own process, like a remote database.

`start_emulator()` (used by `make dev`, `make invoke`, the tests and the benchmarks) runs
`python -m devtools.emulator` in a subprocess and returns once it listens on 127.0.0.1. The process:

- serves every moto service (DynamoDB, S3, SSM, ...) on one port, through moto's own WSGI app;
- evaluates one request at a time. Moto's threaded server evaluates a conditional write without a
  lock, so two racing requests could both pass a condition that DynamoDB (which applies writes to an
  item one at a time) lets only one pass; serializing restores that per-item atomicity while clients
  still race over concurrent connections;
- patches moto's DynamoDB so a transaction or a query costs what it touches (`devtools.moto_patches`);
- counts DynamoDB requests by operation (`X-Amz-Target`), served at `GET /_emulator/stats` (`DELETE`
  resets); after `DELETE /_emulator/stats?units=on` also the read and write units they consume
  (`devtools.capacity_units`: item sizes before and after each write, which is most of the counting's
  cost, so only the benchmarks that report units pay it);
- deletes expired items, as DynamoDB's time to live does, in a sweep every `--ttl-sweep-seconds`
  (`devtools.ttl_sweep`; `POST /_emulator/expire` sweeps now);
- with a state directory, loads the DynamoDB tables from it at start and saves them when it stops
  (SIGTERM, SIGINT, or its parent process going away). A lock file keeps a second emulator from
  sharing the directory: that one runs in memory only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import pickle
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = REPO_ROOT / ".dev" / "dynamodb"
STATE_FILE = "moto-dynamodb.pickle"
LOCK_FILE = ".lock"
CONTROL_PREFIX = "/_emulator/"
STARTUP_TIMEOUT_S = 60.0
DEFAULT_TTL_SWEEP_S = 30.0

_TARGET = re.compile(r"^DynamoDB_\d+\.(\w+)$")
_REGION = re.compile(r"Credential=[^/]*/\d+/([^/]+)/")
_SIGNING_SERVICE = re.compile(r"Credential=[^/]*/\d+/[^/]+/([^/]+)/")
# An idle keep-alive connection is closed after this long (its thread ends); clients reconnect.
IDLE_CONNECTION_S = 120.0


# --- inside the emulator process -----------------------------------------------------------


@dataclass
class OperationStats:
    requests: int = 0
    read_units: float = 0.0
    write_units: float = 0.0


@dataclass
class Accounting:
    """DynamoDB requests by operation, with the capacity units they consumed when `units` is on."""

    units: bool = False
    operations: dict[str, OperationStats] = field(default_factory=lambda: defaultdict(OperationStats))

    def as_json(self) -> dict[str, Any]:
        if not self.units:
            return {name: {"requests": s.requests} for name, s in sorted(self.operations.items())}
        return {name: {"requests": s.requests, "read_units": s.read_units, "write_units": s.write_units}
                for name, s in sorted(self.operations.items())}


def _item_json(item: Any) -> dict[str, Any] | None:
    return None if item is None else dict(item.to_json()["Attributes"])


class _Tables:
    """Direct look-ups in moto's DynamoDB backend (the emulator's own memory), for the accounting."""

    def __init__(self, wsgi_env: dict[str, Any]) -> None:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        region = _REGION.search(wsgi_env.get("HTTP_AUTHORIZATION", ""))
        account = wsgi_env.get("HTTP_X_MOTO_ACCOUNT_ID") or DEFAULT_ACCOUNT_ID
        self.backend = dynamodb_backends[account][region[1] if region else "us-east-1"]

    def key_of(self, table_name: str, attributes: dict[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        table = self.backend.tables.get(table_name)
        if table is None:
            return None
        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        if not all(name in attributes for name in names):
            return None
        return table_name, tuple(json.dumps(attributes[name], sort_keys=True) for name in names)

    def get(self, key: tuple[str, tuple[Any, ...]]) -> dict[str, Any] | None:
        from moto.dynamodb.models.dynamo_type import DynamoType

        from devtools.moto_patches import _lookup

        table = self.backend.tables.get(key[0])
        if table is None:
            return None
        values = [DynamoType(json.loads(v)) for v in key[1]]
        item, _ = _lookup(table, values[0], values[1] if len(values) > 1 else None)
        return _item_json(item)

    def index_keys(self, table_name: str) -> list[list[str]]:
        table = self.backend.tables.get(table_name)
        if table is None:
            return []
        return [[k["AttributeName"] for k in index.schema] for index in table.global_indexes]


def _writes(operation: str, request: dict[str, Any]) -> list[tuple[str, dict[str, Any], str, bool]]:
    """(table, key-or-item attributes, kind, transactional) for every item a write request names."""
    if operation == "PutItem":
        return [(request["TableName"], request["Item"], "put", False)]
    if operation in ("UpdateItem", "DeleteItem"):
        return [(request["TableName"], request["Key"], "key", False)]
    if operation == "BatchWriteItem":
        found = []
        for table, entries in request.get("RequestItems", {}).items():
            for entry in entries:
                if "PutRequest" in entry:
                    found.append((table, entry["PutRequest"]["Item"], "put", False))
                elif "DeleteRequest" in entry:
                    found.append((table, entry["DeleteRequest"]["Key"], "key", False))
        return found
    if operation == "TransactWriteItems":
        found = []
        for entry in request.get("TransactItems", []):
            for kind, op in entry.items():
                attributes = op.get("Item") if kind == "Put" else op.get("Key")
                if isinstance(attributes, dict):
                    found.append((op.get("TableName", ""), attributes, "put" if kind == "Put" else "key", True))
        return found
    return []


def _read_units(operation: str, request: dict[str, Any], response: dict[str, Any]) -> float:
    from devtools.capacity_units import read_units

    consistent = bool(request.get("ConsistentRead"))
    if operation == "GetItem":
        return read_units([response["Item"]] if "Item" in response else [], consistent=consistent)
    if operation in ("Query", "Scan"):
        return read_units(response.get("Items", []), consistent=consistent)
    if operation == "BatchGetItem":
        total = 0.0
        for table, items in response.get("Responses", {}).items():
            table_consistent = bool(request.get("RequestItems", {}).get(table, {}).get("ConsistentRead"))
            total += sum(read_units([item], consistent=table_consistent) for item in items)
        return total
    if operation == "TransactGetItems":
        return sum(read_units([r["Item"]] if "Item" in r else [], consistent=True, transactional=True)
                   for r in response.get("Responses", []))
    return 0.0


class EmulatorApp:
    """WSGI: moto's app, one request at a time, plus accounting and the `/_emulator/` control routes."""

    def __init__(self, moto_app: Callable[..., Iterable[bytes]], save: Callable[[], str] | None = None) -> None:
        self.moto_app = moto_app
        self.lock = threading.Lock()
        # moto's dispatcher finds the service of every request anew (listing its own package directory
        # each time); a DynamoDB request goes to the app it found for the first one signed for that service.
        self._dynamodb_apps: dict[str, Callable[..., Iterable[bytes]]] = {}
        self.accounting = Accounting()
        self._save = save

    def __call__(self, wsgi_env: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = wsgi_env.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self._control(path[len(CONTROL_PREFIX):], wsgi_env, start_response)
        match = _TARGET.match(wsgi_env.get("HTTP_X_AMZ_TARGET", ""))
        with self.lock:
            if match is None:
                return list(self.moto_app(wsgi_env, start_response))
            return self._dynamodb(match[1], wsgi_env, start_response)

    def _dynamodb(self, operation: str, wsgi_env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        from devtools.capacity_units import index_write_units, write_units

        length = int(wsgi_env.get("CONTENT_LENGTH") or 0)
        body = wsgi_env["wsgi.input"].read(length) if length else b""
        wsgi_env["wsgi.input"] = io.BytesIO(body)
        stats = self.accounting.operations[operation]
        stats.requests += 1
        if not self.accounting.units:
            return list(self._dynamodb_app(wsgi_env)(wsgi_env, start_response))
        try:
            request = json.loads(body or b"{}")
            tables = _Tables(wsgi_env)
            writes = [(tables.key_of(table, attrs), table, attrs, kind, transactional)
                      for table, attrs, kind, transactional in _writes(operation, request)]
            before = {key: tables.get(key) for key, *_ in writes if key is not None}
        except Exception:  # accounting must never break a request: moto answers malformed ones itself
            return list(self.moto_app(wsgi_env, start_response))

        status: list[str] = []

        def capture(code: str, headers: Any, *args: Any) -> Any:
            status.append(code)
            return start_response(code, headers, *args)

        chunks = list(self._dynamodb_app(wsgi_env)(wsgi_env, capture))
        with contextlib.suppress(Exception):
            for key, table, attrs, kind, transactional in writes:
                if key is None:
                    continue
                old, new = before.get(key), tables.get(key)
                stats.write_units += write_units(old, new, transactional=transactional,
                                                 request_item=attrs if kind == "put" else None)
                if old != new:
                    stats.write_units += index_write_units(old, new, tables.index_keys(table))
            if status and status[0].startswith("200"):
                stats.read_units += _read_units(operation, request, json.loads(b"".join(chunks) or b"{}"))
        return chunks

    def _dynamodb_app(self, wsgi_env: dict[str, Any]) -> Callable[..., Iterable[bytes]]:
        signed = _SIGNING_SERVICE.search(wsgi_env.get("HTTP_AUTHORIZATION", ""))
        get_application = getattr(self.moto_app, "get_application", None)
        if signed is None or get_application is None:
            return self.moto_app
        app = self._dynamodb_apps.get(signed[1])
        if app is None:
            app = self._dynamodb_apps[signed[1]] = get_application(wsgi_env)
        return app

    def expire(self) -> int:
        """Delete the items whose time to live has passed (between requests); the number deleted."""
        from devtools.ttl_sweep import expire_items

        with self.lock:
            return expire_items(time.time())

    def _control(self, route: str, wsgi_env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = wsgi_env.get("REQUEST_METHOD", "GET")
        payload: Any
        if route == "stats" and method == "GET":
            with self.lock:
                payload = self.accounting.as_json()
        elif route == "stats" and method == "DELETE":
            units = urllib.parse.parse_qs(wsgi_env.get("QUERY_STRING", "")).get("units", ["off"])[-1] == "on"
            with self.lock:
                self.accounting = Accounting(units=units)
            payload = {}
        elif route == "save" and method == "POST":
            with self.lock:
                payload = {"saved": self._save() if self._save else None}
        elif route == "expire" and method == "POST":
            payload = {"deleted": self.expire()}
        elif route == "health":
            payload = {"status": "ok", "pid": os.getpid()}
        else:
            start_response("404 Not Found", [("content-type", "application/json")])
            return [b'{"error": "unknown emulator route"}']
        start_response("200 OK", [("content-type", "application/json")])
        return [json.dumps(payload).encode()]


def _dynamodb_tables() -> dict[tuple[str, str], dict[str, Any]]:
    from moto.dynamodb.models import dynamodb_backends

    state: dict[tuple[str, str], dict[str, Any]] = {}
    for account_id, regions in list(dynamodb_backends.items()):
        for region, backend in list(regions.items()):
            if backend.tables:
                state[(account_id, region)] = dict(backend.tables)
    return state


def save_state(path: Path) -> str:
    """Write every DynamoDB table of this process to `path` (atomically); a one-line summary."""
    import moto

    tables = _dynamodb_tables()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        pickle.dump({"moto": moto.__version__, "tables": tables}, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(temporary, path)
    count = sum(len(regional) for regional in tables.values())
    return f"saved {count} DynamoDB table(s) to {path}"


def load_state(path: Path) -> str:
    """Load the tables `save_state` wrote; an unreadable file is set aside (never silently overwritten)."""
    from moto.dynamodb.models import dynamodb_backends

    if not path.exists():
        return f"no saved DynamoDB state in {path.parent}: starting empty"
    try:
        with open(path, "rb") as handle:
            # Our own file, written by save_state on this machine (pickle runs code: never load others').
            state = pickle.load(handle)
        for (account_id, region), tables in state["tables"].items():
            dynamodb_backends[account_id][region].tables.update(tables)
    except Exception as exc:
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        os.replace(path, aside)
        return f"could not load {path} ({exc!r}); moved it to {aside.name} and started empty"
    count = sum(len(regional) for regional in state["tables"].values())
    return f"loaded {count} DynamoDB table(s) from {path}"


def _lock(state_dir: Path) -> Any:
    """An exclusive lock on the state directory, or None when another emulator holds it."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / LOCK_FILE, "w")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _request_handler() -> type:
    """moto's request handler, answering over HTTP/1.1 keep-alive connections.

    werkzeug's development server closes the connection after every response (it cannot tell whether
    the application read the whole request body, and drains the socket after each response), so each
    request paid a new TCP connection and a new thread. This handler reads the whole request body
    before the application runs, and sends the whole response with its length: the connection is then
    at the next request line, and stays open for it.
    """
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class KeepAliveRequestHandler(MotoRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no delayed-ACK stall
        timeout = IDLE_CONNECTION_S

        def run_wsgi(self) -> None:
            if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            wsgi_env: dict[str, Any] = self.make_environ()
            stream = wsgi_env["wsgi.input"]
            if wsgi_env.get("wsgi.input_terminated"):  # chunked: werkzeug's de-chunking reader stops at the end
                body = stream.read()
            else:
                length = int(wsgi_env.get("CONTENT_LENGTH") or 0)
                body = stream.read(length) if length > 0 else b""
                if len(body) != length:  # the client went away mid-body
                    self.close_connection = True
                    return
            wsgi_env["wsgi.input"] = io.BytesIO(body)
            started: list[Any] = []
            written: list[bytes] = []

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                started[:] = [status, headers]
                return written.append

            try:
                result = self.server.app(wsgi_env, start_response)
                try:
                    written.extend(result)
                finally:
                    if hasattr(result, "close"):
                        result.close()
                status, headers = started
            except Exception:
                import traceback

                self.log_error("Error on request:\n%s", traceback.format_exc())
                status, headers, written[:] = "500 INTERNAL SERVER ERROR", [], [b""]
                self.close_connection = True
            self._respond(wsgi_env, status, headers, b"".join(written))

        def _respond(self, wsgi_env: dict[str, Any], status: str, headers: list[tuple[str, str]],
                     content: bytes) -> None:
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            bodiless = wsgi_env["REQUEST_METHOD"] == "HEAD" or int(code) in (204, 304) or int(code) < 200
            has_length = False
            for key, value in headers:
                has_length = has_length or key.lower() == "content-length"
                self.send_header(key, value)
            if not has_length and not bodiless:
                self.send_header("Content-Length", str(len(content)))
            if self.close_connection:  # the client asked for it, or the request failed
                self.send_header("Connection", "close")
            self.end_headers()
            if content and not bodiless:
                self.wfile.write(content)

        def log_error(self, format: str, *args: Any) -> None:
            if not format.startswith("Request timed out"):  # an idle connection closed: not an error
                super().log_error(format, *args)

    return KeepAliveRequestHandler


def _sweep_expired(app: EmulatorApp, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        try:
            app.expire()
        except Exception as exc:  # a failed sweep must not end the sweeps (or the emulator)
            print(f"emulator: TTL sweep failed: {exc!r}", file=sys.stderr, flush=True)


def serve(host: str, port: int, state_dir: Path | None, reset: bool, parent_pid: int | None,
          ttl_sweep_s: float = DEFAULT_TTL_SWEEP_S, profile: Path | None = None) -> int:
    """The emulator process: print one JSON line once listening, serve until told to stop, then save."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from devtools import moto_patches

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per call is noise
    moto_patches.apply()
    import moto.dynamodb.models  # noqa: F401 - imported now, not inside the first request

    notes: list[str] = []
    state_file: Path | None = None
    lock = _lock(state_dir) if state_dir is not None else None
    if state_dir is not None and lock is None:
        notes.append(f"{state_dir} is in use by another emulator: this one keeps its data in memory only")
    elif state_dir is not None:
        state_file = state_dir / STATE_FILE
        if reset and state_file.exists():
            os.replace(state_file, state_file.with_name(STATE_FILE + ".before-reset"))
            notes.append(f"reset: the previous data is in {state_file.name}.before-reset")
        notes.append(load_state(state_file))

    def save() -> str:
        return save_state(state_file) if state_file is not None else "nothing saved (no state directory)"

    app = EmulatorApp(DomainDispatcherApplication(create_backend_app), save)
    server = make_server(host, port, app, threaded=True, request_handler=_request_handler())
    endpoint = f"http://{host}:{server.server_port}"
    print(json.dumps({"endpoint": endpoint, "pid": os.getpid(), "state_file": str(state_file) if state_file else None,
                      "notes": notes}), flush=True)
    sys.stdout = sys.stderr  # the parent reads only that line; anything later must not fill the pipe

    profiler = None
    if profile is not None:
        import cProfile

        # Since Python 3.12 one profiler sees every thread: the server loop, each connection, moto.
        profiler = cProfile.Profile()
        profiler.enable()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # A short poll interval: `shutdown()` waits for one, and every start/stop in the tests pays it.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator-http",
                     daemon=True).start()
    if ttl_sweep_s > 0:
        threading.Thread(target=_sweep_expired, args=(app, ttl_sweep_s, stop), name="emulator-ttl",
                         daemon=True).start()
    while not stop.wait(1.0):
        if parent_pid is not None and os.getppid() != parent_pid:
            break  # the parent died without stopping us: save and go
    server.shutdown()
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    with app.lock:  # no request is half-applied while the state is written
        if state_file is not None:
            print(f"emulator: {save()}", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--state-dir", type=Path, help="load DynamoDB tables from here and save them on stop")
    parser.add_argument("--reset", action="store_true", help="start empty (the old state is kept aside)")
    parser.add_argument("--parent-pid", type=int, help="stop (and save) when this process is gone")
    parser.add_argument("--ttl-sweep-seconds", type=float, default=DEFAULT_TTL_SWEEP_S,
                        help=f"delete expired items this often (default {DEFAULT_TTL_SWEEP_S:g}; 0: never)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="profile the process (cProfile) and write the stats to FILE when it stops")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.state_dir, args.reset, args.parent_pid, args.ttl_sweep_seconds,
                 args.profile)


# --- in the process that starts it -----------------------------------------------------------


@dataclass
class Emulator:
    """A running emulator process; `stop()` ends it (it saves its state first, when it has a directory)."""

    endpoint: str
    process: subprocess.Popen[bytes]
    state_file: Path | None
    notes: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def _call(self, method: str, route: str) -> Any:
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}{CONTROL_PREFIX}{route}", method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def stats(self) -> dict[str, dict[str, float]]:
        """DynamoDB requests by operation since the start or the last `reset_stats()`.

        With `read_units` and `write_units` when that reset turned unit counting on.
        """
        result: dict[str, dict[str, float]] = self._call("GET", "stats")
        return result

    def reset_stats(self, *, units: bool = False) -> None:
        """Start counting from zero; with `units`, count the capacity units too (it slows every request)."""
        self._call("DELETE", "stats?units=on" if units else "stats")

    def save(self) -> str:
        """Save the state now (it is also saved on stop)."""
        return str(self._call("POST", "save")["saved"])

    def expire(self) -> int:
        """Run a TTL sweep now (it also runs every `ttl_sweep_seconds`); the number of items deleted."""
        return int(self._call("POST", "expire")["deleted"])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the save and the exit; kill after `timeout`. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)


def _child_env() -> dict[str, str]:
    # The emulator never calls AWS: keep credentials and endpoints of the shell away from it.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "DYNAMODB_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def start_emulator(state_dir: Path | None = None, *, reset: bool = False, host: str = "127.0.0.1", port: int = 0,
                   timeout: float = STARTUP_TIMEOUT_S, ttl_sweep_seconds: float = DEFAULT_TTL_SWEEP_S,
                   profile: Path | str | None = None) -> Emulator:
    """Start the emulator process and return once it listens. Without `state_dir` its data lives in memory.

    Expired items are deleted every `ttl_sweep_seconds` (0: never, only on `Emulator.expire()`). With
    `profile`, the process writes a cProfile of everything it ran to that file when it stops.
    """
    command = [sys.executable, "-m", "devtools.emulator", "--host", host, "--port", str(port),
               "--parent-pid", str(os.getpid()), "--ttl-sweep-seconds", str(ttl_sweep_seconds)]
    if state_dir is not None:
        command += ["--state-dir", str(state_dir)]
    if reset:
        command.append("--reset")
    if profile is not None:
        command += ["--profile", str(Path(profile).resolve())]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=_child_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, start_new_session=True)
    # Its own session: Ctrl-C on `make dev` reaches the app, which then stops the emulator in order.
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else b""
    try:
        info = json.loads(line)
    except ValueError:
        process.kill()
        process.wait()
        raise RuntimeError(f"the emulator did not start (exit status {process.returncode}): {line!r}") from None
    state_file = Path(info["state_file"]) if info.get("state_file") else None
    return Emulator(info["endpoint"], process, state_file, list(info.get("notes", [])))


@contextlib.contextmanager
def running_emulator(state_dir: Path | None = None, *, reset: bool = False,
                     ttl_sweep_seconds: float = DEFAULT_TTL_SWEEP_S) -> Iterator[Emulator]:
    """`start_emulator()` for the duration of a `with` block."""
    emulator = start_emulator(state_dir, reset=reset, ttl_sweep_seconds=ttl_sweep_seconds)
    try:
        yield emulator
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
