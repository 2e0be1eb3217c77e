"""The ``stemsplit`` application: its commands, and ``stemsplit FILE...`` as ``separate``.

Exit codes: 0 success, 1 an input or model failed, 2 usage, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .. import __version__
from .eval import eval_command
from .models import models_app
from .separate import batch_command, separate_command
from .terminal import complete_for_implicit_separate, install_log_handler

COMMANDS = ("separate", "batch", "models", "eval")

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Split songs into stems (drums, bass, other, vocals, ...).\n\n"
    "stemsplit FILE... separates files (the 'separate' command is implied);\n"
    "stemsplit batch DIR separates every audio file in a folder;\n"
    "stemsplit models lists the models;\n"
    "stemsplit eval REFERENCE_DIR ESTIMATES_DIR scores stems against references.",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"stemsplit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version_callback,
                                 is_eager=True, help="Print the version and exit."),
) -> None:
    """Split songs into stems."""


app.command("separate")(separate_command)
app.command("batch")(batch_command)
app.add_typer(models_app, name="models")
app.command("eval")(eval_command)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: ``stemsplit FILE...`` means ``stemsplit separate FILE...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and args[0] not in ("-h", "--help", "--version") \
            and not args[0].startswith("--show-completion") \
            and not args[0].startswith("--install-completion"):
        args.insert(0, "separate")
    install_log_handler("-q" in args or "--quiet" in args)  # cache notices -> stderr lines
    complete_for_implicit_separate(COMMANDS)  # `stemsplit song.mp3 -n <TAB>` completes
    app(args=args, prog_name="stemsplit")


if __name__ == "__main__":  # pragma: no cover
    main()
