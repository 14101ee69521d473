"""`vlmserve config show`: the effective settings, each with where it came from (flag, env var, YAML file or
default), secrets masked. Takes the same flags as `serve`, so it shows what `serve` with them would run."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from vlmserve.cli.common import err, out
from vlmserve.cli.settings_flags import settings_or_exit, with_setting_flags
from vlmserve.config_sources import setting_sources

# said under every table: the settings shown are this shell's; a server started elsewhere may run with others
SCOPE_NOTE = (
    "(what `vlmserve serve` would run with from this shell: these flags, this shell's VLMSERVE_* variables and "
    "config file; a server already running was started with its own)"
)

app = typer.Typer(help="The effective configuration.", no_args_is_help=True)


def _shown(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        names = [str(v.get("name") or v.get("id") or "?") for v in value]
        return f"{len(value)}: {', '.join(names)}"
    return value if isinstance(value, str) else json.dumps(value)


@with_setting_flags
def show(
    config: str | None,
    flags: dict[str, Any],
    json_: Annotated[bool, typer.Option("--json", help="print JSON: {name: {value, source}}")] = False,
    changed: Annotated[bool, typer.Option("--changed", help="only the settings that are not defaults")] = False,
) -> None:
    """Show the effective settings and the source of each (flag > env VLMSERVE_X > YAML file > default)."""
    settings = settings_or_exit(config, flags)
    rows = [s for s in setting_sources(settings, config, flags) if not changed or s.source != "default"]
    if json_:
        print(json.dumps({"settings": {s.name: {"value": s.value, "source": s.source} for s in rows}}, indent=2))
        return
    if rows:
        table = Table("setting", "value", "source", box=None, pad_edge=False)
        for row in rows:
            cells = (Text(row.name), Text(_shown(row.value)), Text(row.source))  # Text: values are never rich markup
            table.add_row(*cells, style=None if row.source == "default" else "bold")
        out.print(table)
    else:
        out.print("nothing differs from the defaults")
    err.print(SCOPE_NOTE)


app.command("show", context_settings={"max_content_width": 120})(show)
