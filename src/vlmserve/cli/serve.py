"""`vlmserve serve`: start the server. Every setting is a flag of the same name as its env var and YAML key."""

from __future__ import annotations

from typing import Any

from vlmserve.cli.common import fail
from vlmserve.cli.settings_flags import settings_or_exit, with_setting_flags


@with_setting_flags
def serve(config: str | None, flags: dict[str, Any]) -> None:
    """Start the server (flags > VLMSERVE_* env vars > YAML config > defaults)."""
    import uvicorn

    from vlmserve.api.app import create_app
    from vlmserve.config import load_settings
    from vlmserve.logs import configure_logging
    from vlmserve.service.catalog import Catalog
    from vlmserve.serving import uvicorn_options

    settings = settings_or_exit(config, flags)
    configure_logging(settings)
    try:
        Catalog.from_settings(settings)  # checked here for a one-line error; the app builds its own at startup
        app = create_app(settings, reload_settings=lambda: load_settings(config, **flags))
    except ValueError as exc:  # unknown pipeline or fallback models, a broken pulled.yaml, ...
        fail(f"invalid configuration: {' '.join(str(exc).split())}", code=2)
    uvicorn.run(app, **uvicorn_options(settings))
