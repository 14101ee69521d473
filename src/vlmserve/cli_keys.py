"""`vlmserve keys create|list|revoke`: manage API keys directly in the server's database (the same one as
batches: SQLite in data_dir, or database_url). A running server sees a new key at once, a revocation within
key_refresh_interval seconds. The secret is printed once, on stdout; only its sha256 is stored."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from vlmserve.config import Settings, load_settings
from vlmserve.jobs.db import open_driver
from vlmserve.security.keys import SCOPES, KeyStore


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys (stored hashed in the server's database)")
    keys.add_argument("--config", help="YAML config file (also VLMSERVE_CONFIG): where the database is")
    keys.add_argument("--data-dir", default=None, help="folder of the SQLite database")
    keys.add_argument("--database-url", default=None, help="postgresql://... shared by replicas")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", default="", help="a label for people")
    create.add_argument("--scope", dest="scopes", action="append", choices=SCOPES, help="repeatable (inference)")
    create.add_argument("--model", dest="models", action="append", help="allowed model, repeatable (default: all)")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute (default: server's)")
    create.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: server's)")
    create.add_argument("--concurrency", type=int, default=None, help="requests in flight (default: server's)")
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")


def _line(key: dict[str, Any]) -> str:
    models = ",".join(key["models"]) if key["models"] is not None else "*"
    limits = f"rpm={key['rpm'] or '-'} tpm={key['tpm'] or '-'} concurrency={key['concurrency'] or '-'}"
    revoked = "  REVOKED" if key["revoked_at"] else ""
    scopes = ",".join(key["scopes"])
    return f"{key['id']}  {key['prefix']}…  {scopes}  models={models}  {limits}  {key['name']}{revoked}"


async def _run(args: argparse.Namespace, settings: Settings, data_dir: Path) -> int:
    driver = await open_driver(settings.database_url, data_dir, settings.database_schema)
    store = KeyStore(driver)
    try:
        if args.keys_command == "create":
            secret, key = await store.create(
                name=args.name, scopes=args.scopes or ["inference"], models=args.models, rpm=args.rpm,
                tpm=args.tpm, concurrency=args.concurrency,
            )
            print(f"created {_line(key.public())}", file=sys.stderr)
            print("the secret is shown only now:", file=sys.stderr)
            print(secret)
            return 0
        if args.keys_command == "list":
            for key in await store.list(include_revoked=args.all):
                print(_line(key.public()))
            return 0
        if await store.revoke(args.id):
            print(f"revoked {args.id}")
            return 0
        print(f"vlmserve: no active key {args.id}", file=sys.stderr)
        return 1
    finally:
        await driver.close()


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, data_dir=args.data_dir, database_url=args.database_url)
        data_dir = Path(settings.data_dir).expanduser() if settings.data_dir else Path.home() / ".vlmserve"
        return asyncio.run(_run(args, settings, data_dir))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"vlmserve: {exc}", file=sys.stderr)
        return 2
