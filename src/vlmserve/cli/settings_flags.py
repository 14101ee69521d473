"""One `--flag-name VALUE` option per Settings field, for `serve` and `config show`, built from the declaration.

Values stay strings on the command line (`--embedded-models false`, `--port 8080`, `--ollama-models a,b`):
pydantic converts and validates them exactly as it does env vars, so the three sources cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from rich.markup import escape

from vlmserve.cli.common import fail
from vlmserve.config import Settings, load_settings

NOT_FLAGS = frozenset({"models"})  # the catalog is declared in the YAML file
_PANELS = (  # help sections, by field-name prefix (first match wins)
    (("host", "port", "log_", "cors_", "timeout_keep_alive", "request_", "max_header", "limit_conc"), "Server"),
    (("embedded", "default_", "gguf_", "hf_model", "ollama_", "openai_", "pulled_"), "Models"),
    (("media_", "max_", "video_"), "Media and limits"),
    (("keep_alive", "runner_", "threads", "memory_", "max_queue", "queue_", "max_swap", "scheduler_"), "Scheduler"),
    (("data_dir", "database_", "batch_"), "Batches and storage"),
    (("api_keys", "allow_", "rate_limit_", "redis_", "key_"), "Security"),
)

Command = TypeVar("Command", bound=Callable[..., Any])


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _panel(name: str) -> str:
    return next((title for prefixes, title in _PANELS if name.startswith(prefixes)), "Other settings")


def _metavar(annotation: Any) -> str:
    """A short hint of what a field takes: INT, BOOL, A,B (lists), one|two (choices)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _metavar(args[0])
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _metavar(args[0])
    if origin is list:
        return "A,B"
    return {bool: "BOOL", int: "INT", float: "NUMBER"}.get(annotation, "TEXT")


def _help(name: str, field: FieldInfo) -> str:
    default = "" if field.default_factory is not None or field.default is None else f"default {field.default}; "
    return escape(f"{field.description or name.replace('_', ' ')} ({default}env VLMSERVE_{name.upper()})")


def _setting_parameters() -> list[inspect.Parameter]:
    params = [
        inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
            default=typer.Option(None, "--config", help="YAML config file (also VLMSERVE_CONFIG)", metavar="FILE"),
        )
    ]  # fmt: skip
    for name, field in Settings.model_fields.items():
        if name in NOT_FLAGS:
            continue
        option = typer.Option(
            None, flag_name(name), metavar=_metavar(field.annotation), help=_help(name, field),
            rich_help_panel=_panel(name), show_default=False,
        )  # fmt: skip
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=str | None))
    return params


def with_setting_flags(command: Command) -> Command:
    """Give `command` every setting as an option; it receives `config` and `flags` (the settings given)."""
    hints = typing.get_type_hints(command, include_extras=True)  # real types, not `from __future__` strings
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(command).parameters.values()
        if p.name not in ("config", "flags")
    ]
    settings_params = _setting_parameters()

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        flags = {n: kwargs.pop(n) for n in list(kwargs) if n in Settings.model_fields and kwargs[n] is not None}
        for name in Settings.model_fields:
            kwargs.pop(name, None)
        return command(flags=flags, **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *settings_params])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {}  # typer reads the signature above, not the wrapped function's hints
    return typing.cast(Command, wrapper)


def validation_summary(exc: ValidationError) -> str:
    """pydantic's errors on one line: `port: Input should be a valid integer (got 'abc'); ...`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        parts.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(parts)


def settings_or_exit(config: str | None, flags: dict[str, Any]) -> Settings:
    """Settings from flags > env > YAML > defaults, or a one-line error and exit code 2."""
    try:
        return load_settings(config, **flags)
    except ValidationError as exc:
        fail(f"invalid configuration: {validation_summary(exc)}", code=2)
    except (FileNotFoundError, yaml.YAMLError, ValueError) as exc:
        fail(f"invalid configuration: {' '.join(str(exc).split())}", code=2)
