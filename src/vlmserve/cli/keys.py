"""`vlmserve keys create|list|revoke|reset`: manage API keys directly in the server's database (the same one as
batches: SQLite in data_dir, or database_url). A running server sees a new key at once, a revocation within
key_refresh_interval seconds. The secret is printed once, on stdout; only its sha256 is stored. Keys are
required once any was created (revoking the last one does not open the server); `reset --yes` deletes them
all, which does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from vlmserve.cli.common import err, fail, out
from vlmserve.cli.settings_flags import settings_or_exit
from vlmserve.config import Settings, data_dir_path
from vlmserve.jobs.db import open_driver
from vlmserve.security.keys import LIMIT_MAX, SCOPES, KeyStore

app = typer.Typer(help="API keys (stored hashed in the server's database).", no_args_is_help=True)
Result = TypeVar("Result")


@dataclass
class Where:
    settings: Settings


@app.callback()
def where(
    ctx: typer.Context,
    config: Annotated[
        str | None, typer.Option(help="YAML config file (also VLMSERVE_CONFIG): where the database is", metavar="FILE")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="folder of the SQLite database")] = None,
    database_url: Annotated[str | None, typer.Option(help="postgresql://... shared by replicas")] = None,
) -> None:
    """API keys (stored hashed in the server's database)."""
    ctx.obj = Where(settings_or_exit(config, {"data_dir": data_dir, "database_url": database_url}))


def _with_store(ctx: typer.Context, action: Callable[[KeyStore], Awaitable[Result]]) -> Result:
    settings: Settings = ctx.ensure_object(Where).settings

    async def run() -> Result:
        driver = await open_driver(settings.database_url, data_dir_path(settings), settings.database_schema)
        try:
            return await action(KeyStore(driver))
        finally:
            await driver.close()

    try:
        return asyncio.run(run())
    except (OSError, ValueError) as exc:
        fail(f"cannot open the key database: {exc}", code=2)


def _line(key: dict[str, Any]) -> str:
    models = ",".join(key["models"]) if key["models"] is not None else "*"
    limits = f"rpm={key['rpm'] or '-'} tpm={key['tpm'] or '-'} concurrency={key['concurrency'] or '-'}"
    revoked = "  REVOKED" if key["revoked_at"] else ""
    scopes = ",".join(key["scopes"])
    return f"{key['id']}  {key['prefix']}…  {scopes}  models={models}  {limits}  {key['name']}{revoked}"


SCOPE_HELP = f"repeatable: {', '.join(SCOPES)} (default inference)"


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="a label for people")] = "",
    scope: Annotated[list[str] | None, typer.Option(help=SCOPE_HELP)] = None,
    model: Annotated[list[str] | None, typer.Option(help="allowed model, repeatable (default: all)")] = None,
    # max: the key table's BIGINT columns; a larger number is a usage error (exit 2), not a driver traceback
    rpm: Annotated[
        int | None, typer.Option(min=0, max=LIMIT_MAX, help="requests per minute (default: server's)")
    ] = None,
    tpm: Annotated[int | None, typer.Option(min=0, max=LIMIT_MAX, help="tokens per minute (default: server's)")] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=0, max=LIMIT_MAX, help="requests in flight (default: server's)")
    ] = None,
) -> None:
    """Create a key and print its secret once (on stdout)."""
    unknown = [s for s in scope or [] if s not in SCOPES]
    if unknown:
        choices = ", ".join(SCOPES)
        raise typer.BadParameter(f"unknown scope {unknown[0]!r} (choose from {choices})", param_hint="--scope")
    secret, key = _with_store(ctx, lambda store: store.create(
        name=name, scopes=scope or ["inference"], models=model, rpm=rpm, tpm=tpm, concurrency=concurrency))  # fmt: skip
    err.print(f"created {_line(key.public())}")
    err.print("the secret is shown only now:")
    out.print(secret)


@app.command("list")
def list_keys(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
) -> None:
    """List keys (never their secrets)."""
    for key in _with_store(ctx, lambda store: store.list(include_revoked=all_)):
        out.print(_line(key.public()))


@app.command()
def revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(metavar="ID", help="the key's id")]) -> None:
    """Revoke a key by id."""
    if not _with_store(ctx, lambda store: store.revoke(key_id)):
        fail(f"no active key {key_id}")
    out.print(f"revoked {key_id}")


@app.command()
def reset(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="confirm: the server will take requests without a key")] = False,
) -> None:
    """Delete every key (revoked ones too): the server then serves without authentication again, unless
    api_keys in its config name static keys. Needs --yes."""
    if not yes:
        fail("keys reset deletes every API key and opens the server to requests without a key: add --yes", code=2)
    deleted = _with_store(ctx, lambda store: store.delete_all())
    out.print(f"deleted {deleted} keys; the server takes requests without a key within key_refresh_interval")
