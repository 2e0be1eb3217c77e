"""The ``stemsplit`` command (and ``python -m stemsplit``).

The model list (``stemsplit models``, ``models list``, each with ``--json``) is answered
here from the registry and the caches alone (``listing``), without importing the command
line (typer, rich, every command's options): it is what a new user runs first, and it should
answer at once. Everything else (other words, ``--help``, shell completion, or a registry
that cannot be read, reported there as ever) goes to ``stemsplit.cli.main``.
"""

from __future__ import annotations

import os
import sys

_LISTING = (["models"], ["models", "list"])


def _listing(args: list[str]) -> bool | None:
    """``as_json`` when ``args`` only ask for the model list, else None."""
    if any(key.startswith("_STEMSPLIT") and key.endswith("_COMPLETE") for key in os.environ):
        return None
    as_json = args[-1:] == ["--json"]
    return as_json if (args[:-1] if as_json else args) in _LISTING else None


def main(argv: list[str] | None = None) -> None:
    from . import stopping

    stopping.install(process_wide=True)  # Ctrl-C, SIGTERM, SIGHUP from the first moment
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _listing(args)
    if as_json is not None:
        from .cli.listing import print_listing

        try:
            if print_listing(as_json):
                return
        except BrokenPipeError:  # `stemsplit models | head`: as the full command line does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE; a number, so Windows (no SIGPIPE) exits alike
    from .cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
