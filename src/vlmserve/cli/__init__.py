"""The `vlmserve` command line (Typer + rich): serve, ask, models, pull, batch, keys, config.

`main(argv)` returns the exit code (0 done, 1 the work failed, 2 bad usage or configuration); it is the console
script's entry point and what `python -m vlmserve` runs.
"""

from __future__ import annotations

import sys

import typer

from vlmserve.cli import ask, batch, config_show, keys, models, pull, serve

app = typer.Typer(
    name="vlmserve",
    help="Self-hosted multimodal model server: OpenAI- and Ollama-compatible APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold API keys
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("serve", context_settings={"max_content_width": 120})(serve.serve)
app.command("ask")(ask.ask)
app.command("models")(models.models)
app.command("pull")(pull.pull)
app.add_typer(batch.app, name="batch")
app.add_typer(keys.app, name="keys")
app.add_typer(config_show.app, name="config")


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name="vlmserve")
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
