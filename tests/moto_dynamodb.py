"""DynamoDB (and the other AWS services) in moto's server mode on 127.0.0.1, for every test that needs it.

One server per test process (started on first use, stopped at exit); every test gets a fresh table
with the schema of `template.yaml` (through `devtools.template_tables`), so tests never share state.
Server mode (not the in-process mock) is what lets threads race over real HTTP.

Moto's threaded server evaluates a conditional update without any lock, so two racing requests can
both pass a condition that real DynamoDB (which applies writes to an item one at a time) would let
only one pass. The server here serializes the evaluation of requests, restoring that documented
per-item atomicity, while clients still race over concurrent connections.
"""

from __future__ import annotations

import atexit
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from devtools.template_tables import create_tables

_lock = threading.Lock()
_endpoint: str | None = None


def _serialized(app: Any) -> Any:
    """A WSGI app that handles one request at a time (DynamoDB's per-item write atomicity)."""
    lock = threading.Lock()

    def handle(environ: Any, start_response: Any) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    return handle


def endpoint() -> str:
    """The URL of the shared moto server, starting it on first use."""
    global _endpoint
    with _lock:
        if _endpoint is None:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )
            from werkzeug.serving import make_server

            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per call is noise
            app = _serialized(DomainDispatcherApplication(create_backend_app))
            server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
            threading.Thread(target=server.serve_forever, name="moto-dynamodb", daemon=True).start()
            atexit.register(server.shutdown)
            _endpoint = f"http://127.0.0.1:{server.server_port}"
    return _endpoint


def client(url: str | None = None) -> Any:
    """A DynamoDB client for the moto server (dummy credentials, a pool big enough for the races)."""
    return boto3.session.Session().client(
        "dynamodb", endpoint_url=url or endpoint(), region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 2},
                      connect_timeout=5, read_timeout=30))


@dataclass
class Table:
    name: str
    client: Any
    endpoint: str

    def item(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.name, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                        ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def number(self, pk: str, sk: str, attribute: str) -> int:
        item = self.item(pk, sk) or {}
        return int(float(item.get(attribute, {}).get("N", "0")))


def new_table() -> Table:
    """A fresh, empty table with the template's schema."""
    dynamodb = client()
    name = f"chat-test-{uuid.uuid4().hex[:10]}"
    create_tables(dynamodb, table_name=name)
    return Table(name=name, client=dynamodb, endpoint=endpoint())
