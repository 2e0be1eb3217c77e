"""The ``stemsplit`` application: its commands, and ``stemsplit FILE...`` as ``separate``.

Exit codes: 0 success, 1 an input or model failed, 2 usage, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer
from typer.core import TyperCommand

from .. import __version__
from .eval import eval_command
from .models import models_app
from .separate import _DEFAULT_MODEL, _STEMS_MODELS, batch_command, separate_command
from .terminal import complete_for_implicit_separate, install_log_handler

COMMANDS = ("separate", "batch", "models", "eval")

_STEM_COUNTS = ", ".join(str(count) for count in sorted({2, *_STEMS_MODELS}))

HELP = f"""Split songs into stems (drums, bass, other, vocals, ...).

\b
Ways to run it:
  stemsplit FILE... [OPTIONS]      separate files ('separate' is implied)
  stemsplit batch DIR [OPTIONS]    separate every audio file in a folder
  stemsplit models                 list the models (also info, download, ...)
  stemsplit eval REF_DIR EST_DIR   score stems against reference stems

\b
Common options (all of them: stemsplit separate --help):
  -n, --name NAME     model or preset, default {_DEFAULT_MODEL} (see stemsplit models)
  -o, --out DIR       output folder (default ./separated)
  --stems N           number of stems: {_STEM_COUNTS} (2: vocals + accompaniment)
  --two-stems STEM    STEM and the rest, e.g. --two-stems vocals
  --flac, --mp3       output format (default wav)
  -d, --device DEVICE auto, cpu, cuda or mps
  -q, --quiet         no messages, errors only

\b
Examples:
  stemsplit song.mp3                  4 stems in ./separated/{_DEFAULT_MODEL}/song/
  stemsplit song.mp3 --stems 2        vocals and accompaniment
  stemsplit song.mp3 -n vocals_best -o stems --mp3
  stemsplit batch ./album --flac
"""


class PlainHelpCommand(TyperCommand):
    """A command whose help names its arguments plainly, as click does: ``FILE...`` or
    ``[NAME]...`` in the usage line and ``FILE...`` in the list of arguments, where typer
    writes ``{inputs}...`` and ``inputs... <list[Path]>``."""

    @staticmethod
    def _label(argument) -> str:  # noqa: ANN001 (typer's vendored click.Argument)
        label = argument.metavar or (argument.name or "").upper()
        return label + ("..." if argument.nargs != 1 and not label.endswith("...") else "")

    def collect_usage_pieces(self, ctx) -> list[str]:  # noqa: ANN001
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                label = self._label(param)
                if not param.required:
                    dots = "..." if label.endswith("...") else ""
                    label = f"[{label[:len(label) - len(dots)]}]{dots}"
                pieces.append(label)
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx, formatter) -> None:  # noqa: ANN001
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((self._label(param), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=HELP,
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


app.command("separate", cls=PlainHelpCommand)(separate_command)
app.command("batch", cls=PlainHelpCommand)(batch_command)
app.add_typer(models_app, name="models")
app.command("eval", cls=PlainHelpCommand)(eval_command)
for _command in models_app.registered_commands:  # `models info NAME`, `models download [NAME]...`
    if _command.cls in (None, TyperCommand):
        _command.cls = PlainHelpCommand


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
