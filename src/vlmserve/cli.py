"""Command line: `vlmserve serve [--setting value ...]` (every Settings field is a flag of the same name) and
`vlmserve batch submit FILE --wait`, `vlmserve keys create|list|revoke`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from vlmserve import cli_batch, cli_keys
from vlmserve.config import Settings, load_settings

_NOT_FLAGS = {"models"}  # the catalog is declared in the YAML file


def _serve_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser("serve", help="start the server")
    parser.add_argument("--config", help="YAML config file (also VLMSERVE_CONFIG)")
    for name, field in Settings.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            metavar="VALUE",
            help=f"{field.description or name} (env VLMSERVE_{name.upper()})",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmserve", description="self-hosted multimodal model server")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    cli_batch.add_parser(sub)
    cli_keys.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "batch":
        return cli_batch.run(args)
    if args.command == "keys":
        return cli_keys.run(args)
    return 2


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from vlmserve.api.app import create_app
    from vlmserve.api.gateway import RequestIdFilter

    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        settings = load_settings(args.config, **overrides)
    except (ValueError, FileNotFoundError) as exc:
        print(f"vlmserve: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
