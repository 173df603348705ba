"""Manage API keys: `python -m chatcore.auth.api_keys_cli create|list|revoke`.

Uses `TABLE_NAME`, `AWS_REGION` and `DYNAMODB_ENDPOINT_URL` like the functions do. `create` prints
the key exactly once; only its hash is stored, so a lost key cannot be recovered (revoke it and
create another).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from chatcore.auth.api_keys import ApiKeyStore
from chatcore.dynamodb import client_for
from chatcore.settings import Settings


def main(argv: Sequence[str] | None = None, store: ApiKeyStore | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatcore.auth.api_keys_cli", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--owner", required=True, help="the user id the key acts as")
    create.add_argument("--tier", default="free", help="free, pro or enterprise (default free)")
    create.add_argument("--name", default="", help="a label to recognise the key by")
    listing = commands.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--owner", default=None)
    revoke = commands.add_parser("revoke", help="revoke a key by its key id")
    revoke.add_argument("key_id")
    args = parser.parse_args(argv)

    if store is None:
        settings = Settings.from_env()
        store = ApiKeyStore(settings.table_name, lambda: client_for(settings))
    if args.command == "create":
        key, record = store.create(args.owner, args.tier, args.name)
        print(json.dumps({"key": key, "key_id": record.key_id, "owner": record.owner, "tier": record.tier}))
        print("Store this key now: it is shown only once.", file=sys.stderr)
        return 0
    if args.command == "list":
        for record in store.list_keys(args.owner):
            print(json.dumps({"key_id": record.key_id, "owner": record.owner, "tier": record.tier,
                              "status": record.status, "name": record.name, "created_at": record.created_at}))
        return 0
    if store.revoke(args.key_id):
        print(json.dumps({"key_id": args.key_id, "status": "revoked"}))
        return 0
    print(f"No key with id {args.key_id}.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
