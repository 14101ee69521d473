"""Where each effective setting came from, for `vlmserve config show`.

The sources are asked in the order `load_settings` gives them priority: the flags given, then the environment
(pydantic-settings' own env source, so `VLMSERVE_X` and nested `VLMSERVE_X__Y` are read exactly as the server
reads them), then the YAML file, else the field's default. Secrets are masked before anything is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic_settings import EnvSettingsSource, YamlConfigSettingsSource

from vlmserve.config import Settings, config_path

MASK = "****"
_SECRET_NAME = re.compile(r"(^|_)(api_?keys?|keys?|secrets?|password|token)$", re.IGNORECASE)


@dataclass(frozen=True)
class SourcedSetting:
    name: str
    value: Any  # JSON-ready, secrets masked
    source: str  # "flag --port", "env VLMSERVE_PORT", "yaml config.yaml", "default"


def _url_without_password(value: str) -> str:
    parts = urlsplit(value)
    if not parts.password:
        return value
    netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def masked(value: Any, name: str = "") -> Any:
    """`value` with secrets hidden: values of *_key(s), *secret, *password, *token fields; URL passwords. Upstream
    keys (`openai_api_key`, a model's `api_key`) are SecretStr: their JSON dump never holds the key at all."""
    secret = _SECRET_NAME.search(name) is not None
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(item, name) for item in value]
    if isinstance(value, str):
        return MASK if secret and value else _url_without_password(value)
    return value


def _file_keys(path: str | Path | None) -> set[str]:
    if not path:
        return set()
    return set(YamlConfigSettingsSource(Settings, yaml_file=path)())


def setting_sources(
    settings: Settings, config_file: str | Path | None = None, flags: dict[str, Any] | None = None
) -> list[SourcedSetting]:
    """Every field of `settings` (built from these same `config_file` and `flags`) with its source."""
    given = {name for name, value in (flags or {}).items() if value is not None}
    from_env = set(EnvSettingsSource(Settings)())
    path = config_path(config_file)
    in_file = _file_keys(path)
    values = settings.model_dump(mode="json")
    prefix = Settings.model_config.get("env_prefix", "")
    sourced = []
    for name in Settings.model_fields:
        if name in given:
            source = "flag --" + name.replace("_", "-")
        elif name in from_env:
            source = f"env {prefix}{name.upper()}"
        elif name in in_file:
            source = f"yaml {path}"
        else:
            source = "default"
        sourced.append(SourcedSetting(name, masked(values[name], name), source))
    return sourced
